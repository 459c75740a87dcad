"""Workers on other hosts: real gateways (execnet's socket server, sshd) in network
namespaces, streaming live over a veth pair (tests/hosts.py); they need root, as CI has.

The remote tests write what they know (their pid, their host's name) to a directory both
sides see, and wait on gate files there: the namespaces share this machine's files, only
not its network.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hosts import (
    SOCKETSERVER,
    Capture,
    Host,
    Network,
    need_root_and_ip,
    start_socketserver,
    start_sshd,
)
from runs import WAIT_UNTIL_STREAMED, RunMemstream
from watching import Lines, Watch

from pytest_memstream.collector.report import summary_lines
from pytest_memstream.faults import ENV
from pytest_memstream.plugin import remote
from pytest_memstream.plugin.options import Settings
from pytest_memstream.plugin.remote import FarSide, RemoteHosts
from pytest_memstream.plugin.sinkstart import SinkStarter
from pytest_memstream.security import RunKeys

MiB = 1 << 20
#: Long enough for any run here; a hang fails the test instead of CI's whole run.
RUN_TIMEOUT = 240


@pytest.fixture
def network() -> Iterator[Network]:
    need_root_and_ip()
    network = Network()
    try:
        yield network
    finally:
        network.close()


@pytest.fixture
def shared(pytester: pytest.Pytester) -> Path:
    """A directory outside the project that the remote tests and this one both see."""
    path = pytester.path.parent / f"{pytester.path.name}-shared"
    path.mkdir()
    return path


def remote_args(pytester: pytest.Pytester, *tx: str, dist: str = "load") -> list[str]:
    """Run the project on the gateways ``tx`` only (xdist rsyncs it there, #1081)."""
    args = [f"--dist={dist}", f"--rsyncdir={pytester.path}", "-W", "ignore::DeprecationWarning"]
    for spec in tx:
        args += ["--tx", spec]
    return [*args, str(pytester.path)]


def socket_gateway(host: Host, pytester: pytest.Pytester, **env: str) -> str:
    """A ``socket=`` spec for execnet's socket server, started inside ``host``."""
    port = start_socketserver(host, pytester.path.parent / f"{host.name}-home", _env(env))
    return f"socket={host.address}:{port}"


def ssh_gateway(host: Host, pytester: pytest.Pytester, options: str = "") -> str:
    """An ``ssh=`` spec for an sshd inside ``host``, reached by an alias of an ssh config
    (and ``options`` for ssh before it)."""
    home = pytester.path.parent / f"{host.name}-ssh"
    config = start_sshd(host, home, alias="build2")
    ssh = f"{options} build2".strip()
    return f"ssh_config={config}//ssh={ssh}//python={sys.executable}//chdir={home / 'work'}"


def _env(extra: dict[str, str]) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k != ENV}, **extra}


class Background:
    """``pytest --memstream`` running in a subprocess while the test acts."""

    def __init__(self, pytester: pytest.Pytester, *args: str) -> None:
        self.report_path = pytester.path / "memstream.json"
        command = [sys.executable, "-m", "pytest", "--memstream", "-p", "no:randomly"]
        self.process = subprocess.Popen(
            [*command, f"--memstream-json={self.report_path}", *args],
            cwd=pytester.path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its gateways' ssh clients are killed with it
        )
        self.output = Lines(self.process.stdout)

    def finish(self) -> tuple[int, str, dict[str, Any]]:
        try:
            code = self.process.wait(RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail("pytest hung:\n" + "\n".join(self.output.lines))
        self.output.wait_closed(5)
        output = "\n".join(self.output.lines)
        assert self.report_path.exists(), output
        return code, output, json.loads(self.report_path.read_text())

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


def wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


def climbing(event: dict[str, Any], worker: str) -> dict[str, Any] | None:
    """The worker's view in ``event`` if it shows test_climbs climbing by 20 MiB or more."""
    values = event.get("state") or event.get("sets") or {}
    view = values.get(f"w/{worker}")
    running = (view or {}).get("running") or {}
    recent = running.get("recent_rss") or []
    if not running.get("nodeid", "").endswith("::test_climbs") or len(recent) < 3:
        return None
    rising = all(a <= b for a, b in itertools.pairwise(recent))
    return view if rising and recent[-1] - recent[0] >= 20 * MiB else None


# Each worker says which process and host it is, then, once a viewer watches, climbs until
# the viewer has seen it climb.
LIVE_TESTS = """
import os, pathlib, socket, time
import pytest

SHARED = pathlib.Path({shared!r})
MiB = 1 << 20


def test_where(request):
    worker = request.config.workerinput["workerid"]
    (SHARED / worker).write_text(f"{{os.getpid()}} {{socket.gethostname()}}")


@pytest.mark.parametrize("n", range(30))
def test_quick(n):
    data = b"q" * (n * MiB)
    del data


def test_climbs(request):
    worker = request.config.workerinput["workerid"]
    held, deadline = [], time.monotonic() + 60
    while not (SHARED / "watching").exists():  # a viewer has its snapshot
        assert time.monotonic() < deadline, "no viewer came"
        time.sleep(0.01)
    while not (SHARED / f"seen-{{worker}}").exists():
        assert time.monotonic() < deadline, "no viewer saw it climb"
        if len(held) < 40:
            held.append(b"c" * (4 * MiB))
        time.sleep(0.05)
"""


def test_workers_on_a_socket_and_an_ssh_gateway_stream_live(
    pytester: pytest.Pytester, network: Network, shared: Path
) -> None:
    pytester.makepyfile(test_live=LIVE_TESTS.format(shared=str(shared)))
    socket_host, ssh_host = network.add(), network.add()
    tx = [socket_gateway(socket_host, pytester), ssh_gateway(ssh_host, pytester)]
    session = shared / "session.json"
    run = Background(
        pytester, "-v", f"--memstream-session={session}", *remote_args(pytester, *tx, dist="each")
    )
    watch: Watch | None = None
    try:
        wait_for(session)
        watch = Watch(pytester.path, "--session", str(session))
        watch.wait_event(lambda e: e["event"] == "snapshot")
        (shared / "watching").touch()
        seen: dict[str, dict[str, Any]] = {}
        for worker in ("gw0", "gw1"):
            event = watch.wait_event(lambda e, w=worker: climbing(e, w) is not None)  # type: ignore[misc]
            seen[worker] = climbing(event, worker) or {}
            (shared / f"seen-{worker}").touch()
        code, output, report = run.finish()
        assert watch.finish() == 0
    finally:
        run.kill()
        if watch is not None:
            watch.kill()
    assert code == pytest.ExitCode.OK, output
    hosts = {"gw0": socket_host, "gw1": ssh_host}
    workers = {w["id"]: w for w in report["workers"]}
    assert set(workers) == {"gw0", "gw1"}
    for worker, host in hosts.items():
        entry = workers[worker]
        pid, name = (shared / worker).read_text().split()
        assert (entry["pid"], entry["host"], name) == (int(pid), host.hostname, host.hostname)
        assert entry["status"] == "complete"
        assert (entry["lost"], entry["dropped"], entry["recovered"]) == (0, 0, 0)
        assert entry["messages"] > 32  # every test's end, and more: it streamed live
        assert seen[worker]["host"] == host.hostname
        assert entry["max_rss"] >= seen[worker]["running"]["rss"] >= 60 * MiB
        tests = [t for t in report["tests"] if t["worker"] == worker]
        assert len(tests) == 32 and {t["source"] for t in tests} == {"stream"}
    assert report["run"]["rejected"] == {}
    # The sink listened where each worker reaches this machine: the veth's own address.
    for worker, host in hosts.items():
        assert (
            f"memstream: the sink also listens on tcp://{host.peer}:"
            in output.split(f", where {worker} on {host.hostname} reaches this machine")[0]
        ), output
    # -v lists the workers by host.
    lines = output.splitlines()
    for worker, host in hosts.items():
        at = lines.index(f"  on {host.hostname}: 1 worker")
        assert lines[at + 1].startswith(f"    {worker}    pid {workers[worker]['pid']} ")


CRASH_TESTS = (
    """
import os, pathlib, signal, time
import pytest

SHARED = pathlib.Path({shared!r})
MiB = 1 << 20
KEPT = []

"""
    + WAIT_UNTIL_STREAMED
    + """

@pytest.mark.parametrize("n", range(5))
def test_before(n):
    KEPT.append(b"b" * (10 * MiB))


def test_crash(request):
    (SHARED / "victim").write_text(str(os.getpid()))
    for _ in range(4):
        KEPT.append(b"c" * (40 * MiB))
        wait_until_streamed(request, 2)
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("n", range(4))
def test_after(n):
    pass
"""
)


@pytest.mark.slow
def test_a_remote_worker_killed_mid_test_is_reported_crashed(
    pytester: pytest.Pytester, run_memstream: RunMemstream, network: Network, shared: Path
) -> None:
    pytester.makepyfile(test_crashy=CRASH_TESTS.replace("{shared!r}", repr(str(shared))))
    host = network.add()
    run = run_memstream(
        "--memstream-interval=0.05", "-v", *remote_args(pytester, ssh_gateway(host, pytester))
    )
    assert run.result.ret == pytest.ExitCode.TESTS_FAILED, run.output
    crashed = run.test("test_crash")
    assert (crashed["outcome"], crashed["source"], crashed["worker"]) == (
        "crashed",
        "stream",
        "gw0",
    )
    assert crashed["rss_end"] - crashed["rss_start"] >= 150 * MiB
    assert len(crashed["samples"]) >= 4 and crashed["climb_rate"] > 0
    workers = {w["id"]: w for w in run.report["workers"]}
    victim, replacement = workers["gw0"], workers["gw1"]
    assert victim["status"] == "crashed" and victim["crashed_test"] == crashed["nodeid"]
    assert victim["pid"] == int((shared / "victim").read_text())
    assert victim["host"] == replacement["host"] == host.hostname
    assert victim["max_rss"] >= crashed["peak_rss"] >= 200 * MiB
    # The replacement was handed the same address, and streamed live too.
    assert replacement["status"] == "complete" and replacement["messages"] > 4
    assert {t["source"] for t in run.report["tests"]} == {"stream"}
    assert len(run.report["tests"]) == 10
    run.result.stdout.re_match_lines(
        [
            r"memstream: worker gw0 crashed while running \S+/test_crashy.py::test_crash \(phase "
            r"call, last RSS \d+\.\dM, peak \d+\.\dM, climbing [\d.]+[KMG]/s; last samples .*\)"
        ]
    )


# One test runs through the cut, sampled every interval; the others are quick.
CUT_TESTS = """
import pathlib, time
import pytest

SHARED = pathlib.Path({shared!r})
MiB = 1 << 20


@pytest.mark.parametrize("n", range(20))
def test_before(n):
    time.sleep(0.01)


def test_through_the_cut():
    held, deadline = [], time.monotonic() + 120
    (SHARED / "cut").touch()
    while not (SHARED / "mended").exists():
        assert time.monotonic() < deadline
        if len(held) < 50:
            held.append(b"x" * MiB)
        time.sleep(0.01)
    time.sleep(0.5)


@pytest.mark.parametrize("n", range(20))
def test_after(n):
    time.sleep(0.01)
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("seconds", "faults", "interval"),
    [(5.0, "", "0.1"), (8.0, "hwm=2", "0.01")],
    ids=["5s", "longer-than-the-queue"],
)
def test_a_link_cut_mid_run_hangs_nothing_and_says_what_it_lost(
    pytester: pytest.Pytester,
    network: Network,
    shared: Path,
    seconds: float,
    faults: str,
    interval: str,
) -> None:
    # The second cut outlasts what the worker's queue holds: its queue is shrunk to two
    # frames (as a slower sink would fill a larger one), and it samples 100 times a second.
    pytester.makepyfile(test_cut=CUT_TESTS.format(shared=str(shared)))
    host = network.add()
    tx = socket_gateway(host, pytester, **({ENV: faults} if faults else {}))

    def cut_and_mend() -> None:
        try:
            wait_for(shared / "cut", RUN_TIMEOUT)
        except AssertionError:
            return  # the run failed first; it says why
        time.sleep(0.5)  # the test's first samples are through
        host.cut()
        time.sleep(seconds)
        host.mend()
        (shared / "mended").touch()

    cutter = threading.Thread(target=cut_and_mend, daemon=True)
    cutter.start()
    started = time.monotonic()
    run = Background(pytester, f"--memstream-interval={interval}", "-v", *remote_args(pytester, tx))
    try:
        code, output, report = run.finish()
    finally:
        run.kill()
        (shared / "mended").touch()
        cutter.join(30)
    assert code == pytest.ExitCode.OK, output
    assert time.monotonic() - started < seconds + 90  # it ended, in its own time
    assert sorted(t["nodeid"].split("::")[1] for t in report["tests"]) == sorted(
        [*(f"test_after[{n}]" for n in range(20)), *(f"test_before[{n}]" for n in range(20)),
         "test_through_the_cut"]
    )  # fmt: skip
    (worker,) = report["workers"]
    assert worker["host"] == host.hostname and worker["unrecoverable"] == 0
    # Whatever the stream missed is said, per worker and in the footer, and was filled.
    recovered = [t for t in report["tests"] if t["source"] == "fallback"]
    assert worker["recovered"] == len(recovered)
    assert worker["status"] == ("recovered" if recovered else "complete")
    assert (
        f"  gw0    pid {worker['pid']:<7} {worker['status']:<10} 41 tests, "
        f"{worker['messages']} messages, {worker['lost']} lost, {worker['dropped']} dropped, "
        f"{worker['recovered']} recovered, 0 unrecoverable" in output
    )
    footer = next(line for line in output.splitlines() if line.startswith("memstream: 41 tests"))
    assert f"{worker['lost']} lost, {worker['recovered']} recovered" in footer
    if faults:
        assert worker["dropped"] > 0  # samples its full queue refused while the link was down


STRANGER = """
import sys, time, zmq
from pytest_memstream.protocol import stream

endpoint, server_key, how = sys.argv[1], bytes.fromhex(sys.argv[2]), sys.argv[3]
context = zmq.Context()
push = context.socket(zmq.PUSH)
push.setsockopt(zmq.LINGER, 0)
if how == "own-key":  # knows the sink's public key (sniffed), but not a key of the run
    public, secret = zmq.curve_keypair()
    push.setsockopt(zmq.CURVE_SERVERKEY, server_key)
    push.setsockopt(zmq.CURVE_PUBLICKEY, public)
    push.setsockopt(zmq.CURVE_SECRETKEY, secret)
push.connect(endpoint)
hello = {"k": "hello", "t": time.time(), "pid": 1, "method": "hwm", "interval": 0.1,
         "rss": 1, "platform": "linux"}
for n in range(20):
    try:
        push.send_multipart(stream.frame("gw0", 10_000 + n, 0, [stream.pack_message(hello)]),
                            zmq.NOBLOCK)
    except zmq.Again:
        pass
    time.sleep(0.05)
"""

STRANGER_TESTS = """
import subprocess, sys
import pytest

STRANGER = {stranger!r}


def test_stranger(request):
    spec = request.config.workerinput["memstream"]
    for how in ("no-curve", "own-key"):
        subprocess.run(
            [sys.executable, "-c", STRANGER, spec["endpoint"], spec["server_key"], how],
            check=True, timeout=60,
        )


@pytest.mark.parametrize("n", range(10))
def test_plain(n):
    pass
"""


def test_a_stranger_in_the_namespace_is_refused_and_counted(
    pytester: pytest.Pytester, run_memstream: RunMemstream, network: Network
) -> None:
    # The stranger runs on the worker's host, from a test: it knows the sink's address
    # and public key (a socket= gateway's workerinput is there for anyone on the path),
    # not a key of the run.
    pytester.makepyfile(test_stranger=STRANGER_TESTS.format(stranger=STRANGER))
    host = network.add()
    run = run_memstream("-v", *remote_args(pytester, socket_gateway(host, pytester)))
    assert run.result.ret == pytest.ExitCode.OK, run.output
    rejected = run.report["run"]["rejected"]
    assert rejected.get("refused", 0) >= 1  # the key ZAP does not know, once
    assert rejected.get("handshake", 0) >= 1  # no CURVE at all
    assert set(rejected) == {"refused", "handshake"}  # nothing of theirs was read
    (worker,) = run.report["workers"]
    assert (worker["status"], worker["lost"], worker["recovered"]) == ("complete", 0, 0)
    assert len(run.report["tests"]) == 11
    run.result.stdout.fnmatch_lines(["memstream: rejected input: * handshake, * refused"])


CANARY_TESTS = """
import pytest

@pytest.mark.parametrize("n", range(40))
def test_plaintext_canary_q7z(n):
    data = b"x" * (n << 18)
    del data
"""


def test_the_sink_port_carries_no_test_id_in_plaintext(
    pytester: pytest.Pytester, run_memstream: RunMemstream, network: Network
) -> None:
    pytester.makepyfile(test_canary=CANARY_TESTS)
    host = network.add()
    tx = socket_gateway(host, pytester)
    capture = Capture(host.link)
    try:
        run = run_memstream("--memstream-interval=0.01", *remote_args(pytester, tx))
    finally:
        capture.stop()
    assert run.result.ret == pytest.ExitCode.OK, run.output
    (worker,) = run.report["workers"]
    assert worker["messages"] >= 40 and worker["recovered"] == 0
    # The worker opened one connection to this side: to the sink.
    (sink_port,) = capture.ports_connected_to(host.peer)
    stream = capture.payload(host.peer, sink_port)
    assert len(stream) > 2000  # every test's figures went this way, encrypted
    assert b"plaintext_canary" not in stream and b"test_canary" not in stream
    # What execnet's own socket= connection carries is readable, as the README says.
    gateway_port = int(tx.rpartition(":")[2])
    assert b"test_plaintext_canary_q7z" in capture.payload(host.address, gateway_port)


def test_a_worker_that_cannot_reach_the_sink_is_one_line(
    pytester: pytest.Pytester, run_memstream: RunMemstream, network: Network
) -> None:
    # The run advertises an address the worker's host has no route to (as behind a NAT
    # or a firewall): the worker streams into the void, its figures come at the end.
    pytester.makepyfile(test_lossy="def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    host, elsewhere = network.add(), network.add()
    run = run_memstream(
        f"--memstream-advertise={elsewhere.peer}",
        *remote_args(pytester, socket_gateway(host, pytester)),
    )
    assert run.result.ret == pytest.ExitCode.OK, run.output
    (worker,) = run.report["workers"]
    assert (worker["messages"], worker["recovered"], worker["status"]) == (0, 2, "recovered")
    assert worker["host"] == host.hostname and worker["pid"] > 0
    warnings = [line for line in run.result.outlines if line.startswith("memstream: warning:")]
    assert warnings == [
        f"memstream: warning: gw0 on {host.hostname} never reached the sink at "
        f"tcp://{elsewhere.peer}:{run.report['run']['endpoint'].rpartition(':')[2]} (a "
        "firewall or a NAT between them?): no live figures, its tests' figures came from its "
        "own records at the end"
    ]


def test_an_ssh_tunnel_is_the_way_round_a_worker_that_cannot_reach_the_sink(
    pytester: pytest.Pytester, run_memstream: RunMemstream, network: Network
) -> None:
    # As the README shows: ssh forwards the worker's own loopback port to the sink's.
    pytester.makepyfile(test_here="def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    host = network.add()
    with socket.socket() as probe:  # a port free here; the host's loopback is its own
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tx = ssh_gateway(host, pytester, f"-R {port}:127.0.0.1:{port}")
    run = run_memstream(
        f"--memstream-bind=tcp://127.0.0.1:{port}",
        "--memstream-advertise=127.0.0.1",
        *remote_args(pytester, tx),
    )
    assert run.result.ret == pytest.ExitCode.OK, run.output
    (worker,) = run.report["workers"]
    assert (worker["host"], worker["recovered"], worker["status"]) == (host.hostname, 0, "complete")
    assert worker["messages"] >= 4  # hello, two ends, bye: live, through the tunnel
    assert "memstream: warning" not in run.output


def test_a_viewer_on_another_host_attaches_with_the_session_file(
    pytester: pytest.Pytester, network: Network, shared: Path
) -> None:
    pytester.makepyfile(test_live=LIVE_TESTS.format(shared=str(shared)))
    host = network.add()
    session = shared / "session.json"
    run = Background(
        pytester,
        f"--memstream-advertise={host.peer}",
        f"--memstream-session={session}",
        *remote_args(pytester, socket_gateway(host, pytester)),
    )
    viewer: subprocess.Popen[str] | None = None
    try:
        wait_for(session)
        content = json.loads(session.read_text())
        assert content["viewers"]["snapshot"].startswith(f"tcp://{host.peer}:")
        assert content["viewers"]["updates"].startswith(f"tcp://{host.peer}:")
        # From the other host: the file carried there, nothing on the command line.
        viewer = host.popen(
            [sys.executable, "-m", "pytest_memstream.cli", "watch", "--json", "--session",
             str(session)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        events = Lines(viewer.stdout)
        events.wait(lambda line: json.loads(line)["event"] == "snapshot")
        (shared / "watching").touch()
        line = events.wait(lambda line: climbing(json.loads(line), "gw0") is not None)
        assert climbing(json.loads(line), "gw0")["host"] == host.hostname  # type: ignore[index]
        (shared / "seen-gw0").touch()
        code, output, report = run.finish()
        assert viewer.wait(30) == 0
    finally:
        run.kill()
        if viewer is not None and viewer.poll() is None:
            viewer.kill()
    assert code == pytest.ExitCode.OK, output
    (worker,) = report["workers"]
    assert worker["messages"] > 32 and worker["recovered"] == 0
    assert (
        f"memstream: workers on other hosts, and the session file, name this machine {host.peer}"
        in output
    )


def test_a_socket_gateway_on_this_machine_streams_over_loopback(
    pytester: pytest.Pytester, run_memstream: RunMemstream
) -> None:
    # execnet's socket server on this machine: the far side says it is this very machine
    # (same boot, same network namespace), so loopback reaches the sink from there.
    pytester.makepyfile(test_here="def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    home = pytester.path.parent / f"{pytester.path.name}-home"
    home.mkdir()
    server = subprocess.Popen(
        [sys.executable, "-c", SOCKETSERVER, "127.0.0.1"],
        cwd=home,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        run = run_memstream("-v", *remote_args(pytester, f"socket=127.0.0.1:{port}"))
    finally:
        server.kill()
        server.wait(10)
    assert run.result.ret == pytest.ExitCode.OK, run.output
    (worker,) = run.report["workers"]
    assert worker["messages"] >= 2 and worker["recovered"] == 0
    assert worker["pid"] == server.pid and worker["host"] == os.uname().nodename
    assert "memstream: warning" not in run.output
    assert "also listens" not in run.output


# --- where each worker is sent, decided without a network ----------------------------------


class Spec:
    """An execnet XSpec's attributes, as the decision reads them."""

    def __init__(self, **kinds: str) -> None:
        self.popen = self.ssh = self.socket = self.installvia = self.via = None
        self.__dict__.update(kinds)


class Gateway:
    def __init__(self, spec: Spec, remoteaddress: str = "") -> None:
        self.id = "gw0"
        self.spec = spec
        self.remoteaddress = remoteaddress


@pytest.fixture
def starter() -> Iterator[SinkStarter]:
    starter = SinkStarter(RunKeys(os.urandom(32)), "tcp://127.0.0.1", lambda sink: None)
    yield starter
    starter.remove_files()


ELSEWHERE = "0123-boot/4:4026531999"  # another machine's boot id and network namespace


@pytest.mark.parametrize(
    ("spec", "far", "why"),
    [
        # ssh's SSH_CONNECTION: the address the far side sees this machine at.
        (Spec(ssh="build2"), FarSide("b2", "203.0.113.9 5 10.0.0.2 22", ELSEWHERE),
         "its SSH_CONNECTION says it sees this machine as 203.0.113.9, not an address of this "
         "machine (a NAT?)"),
        (Spec(ssh="build2"), FarSide("b2", "fd00::9 5 fd00::2 22", ELSEWHERE),
         "its SSH_CONNECTION says it sees this machine as fd00::9, and IPv6 is not served"),
        (Spec(ssh="build2"), FarSide("b2", "", ELSEWHERE),
         "which address of this machine it reaches is not known"),
        # A socket server reached through loopback, yet on another machine: a tunnel.
        (Spec(socket="127.0.0.1:8888"), FarSide("b2", "", ELSEWHERE),
         "this machine reaches it from 127.0.0.1, a loopback address"),
        (Spec(via="gw9"), FarSide("b2", "", ELSEWHERE),
         "which address of this machine it reaches is not known"),
    ],
)  # fmt: skip
def test_a_worker_on_another_machine_is_never_sent_where_it_cannot_stream(
    starter: SinkStarter, monkeypatch: pytest.MonkeyPatch, spec: Spec, far: FarSide, why: str
) -> None:
    monkeypatch.setattr(remote, "ask_far_side", lambda gateway: far)
    hosts = RemoteHosts(Settings(True, 5, "growth", None, 0.1, "tcp://127.0.0.1"), starter, print)
    reach = hosts.gateway_up(Gateway(spec, "127.0.0.1:8888"))
    assert reach == remote.Reach("", "b2", why)


def test_a_gateway_on_this_very_machine_streams_to_loopback(
    starter: SinkStarter, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = remote.this_machine()
    assert here  # Linux: a boot id and a network namespace
    monkeypatch.setattr(remote, "ask_far_side", lambda gateway: FarSide("me", "", here))
    hosts = RemoteHosts(Settings(True, 5, "growth", None, 0.1, "tcp://127.0.0.1"), starter, print)
    reach = hosts.gateway_up(Gateway(Spec(ssh="localhost"), ""))
    assert reach == remote.Reach(starter.endpoint, "me")


def test_the_advertised_host_is_sent_to_every_remote_worker(
    starter: SinkStarter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(remote, "ask_far_side", lambda gateway: FarSide("", "", ""))
    settings = Settings(True, 5, "growth", None, 0.1, "tcp://127.0.0.1", advertise="ctl.lan")
    hosts = RemoteHosts(settings, starter, print)
    port = starter.endpoint.rpartition(":")[2]
    reach = hosts.gateway_up(Gateway(Spec(socket="10.9.9.9:8888"), "10.9.9.9:8888"))
    assert reach == remote.Reach(f"tcp://ctl.lan:{port}", "10.9.9.9")  # named by its spec


def test_an_advertised_host_that_is_not_this_machine_needs_a_bind(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile("def test_a():\n    pass\n")
    result = pytester.runpytest_subprocess("--memstream", "--memstream-advertise=192.0.2.77")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: memstream: --memstream-advertise 192.0.2.77 is not an IPv4 address of this "
         "machine, so the sink cannot listen there: say where it listens with --memstream-bind*"]
    )  # fmt: skip


def test_the_advertised_host_is_in_the_session_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import json, os, pathlib

        def test_session():
            content = json.loads(pathlib.Path("session.json").read_text())
            assert content["viewers"]["snapshot"].startswith("tcp://127.0.0.7:")
            assert content["endpoint"].startswith("tcp://127.0.0.7:")
        """
    )
    pytester.makeini("[pytest]\nmemstream_advertise = 127.0.0.7\n")  # the ini key works too
    result = pytester.runpytest_subprocess(
        "--memstream", "--memstream-session=session.json", "-p", "no:xdist"
    )
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "memstream: sink tcp://127.0.0.7:*",
            "memstream: workers on other hosts, and the session file, name this machine 127.0.0.7",
        ]
    )


@pytest.mark.parametrize(
    "value", ["tcp://10.0.0.5", "10.0.0.5:5555", "-x", "10.1", "a b", "fd00::1", "[::1]"]
)
def test_a_bad_advertised_host_is_a_usage_error(pytester: pytest.Pytester, value: str) -> None:
    result = pytester.runpytest_subprocess("--memstream", f"--memstream-advertise={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    expected = f"memstream: --memstream-advertise got {value!r}; expected a host name or an IPv4 "
    assert expected in result.stderr.str()  # not fnmatch: "[::1]" would be a pattern


def _worker_entry(worker: str, host: str) -> dict[str, Any]:
    return {"id": worker, "host": host, "pid": 7, "status": "complete", "tests": 1,
            "messages": 3, "lost": 0, "dropped": 0, "recovered": 0, "unrecoverable": 0,
            "max_rss": MiB, "peak_method": "hwm", "crashed_test": None, "error": None}  # fmt: skip


def test_the_verbose_footer_lists_the_workers_by_host() -> None:
    run = {"host": "ctl", "tests": 0, "complete": True}
    workers = [_worker_entry("gw0", "ctl"), _worker_entry("gw1", "build2"),
               _worker_entry("gw2", "build2")]  # fmt: skip
    lines = summary_lines({"run": run, "workers": workers, "tests": []}, "growth", 5, 1)
    assert [line.split(" pid ")[0] for line in lines[1:-1]] == [
        "  on build2: 2 workers", "    gw1   ", "    gw2   ", "  on ctl: 1 worker", "    gw0   "
    ]  # fmt: skip
    # All on the controller's host, or a report of before that names no host: as ever.
    for host in ("ctl", ""):
        alone = [_worker_entry("gw0", host)]
        lines = summary_lines({"run": run, "workers": alone, "tests": []}, "growth", 5, 1)
        assert lines[1].startswith("  gw0    pid 7 ")
