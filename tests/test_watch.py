"""`memstream watch` and the viewer protocol: real `-n 2` runs with viewers coming and going.

The test projects block on gate files that the test opens once it has seen what it waits
for, so that "while the test is still running" is a fact, not a hope; every wait has a
deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from rich.console import Console

from pytest_memstream import protocol
from pytest_memstream.cli.client import Mirror, Viewer, ViewerError
from pytest_memstream.cli.screen import Status, render
from pytest_memstream.collector.sink import Sink
from pytest_memstream.collector.state import RunState
from pytest_memstream.sender import Sender

DEADLINE = 60.0

PROJECT = """
import os, pathlib, time
import pytest

GATE = pathlib.Path(os.environ["MEMSTREAM_GATE"])
MiB = 1 << 20


def wait_for(name):
    deadline = time.monotonic() + 60
    while not (GATE / name).exists():
        assert time.monotonic() < deadline, f"gate {name} never opened"
        time.sleep(0.01)


def test_hungry():
    data = b"x" * (48 * MiB)
    wait_for("go")
    del data


@pytest.mark.parametrize("n", range(6))
def test_quick(n):
    wait_for("quick")
    data = b"q" * ((n + 1) * MiB)
    del data


def test_zz_hold():
    wait_for("go")  # keeps the other worker up too (xdist stops an idle one)
"""

# Holds the controller after its report is written, while the sink still serves viewers.
HOLD_AT_END = """
import os, pathlib, time

def pytest_sessionfinish(session):
    if hasattr(session.config, "workerinput") or not os.environ.get("MEMSTREAM_HOLD"):
        return
    gate = pathlib.Path(os.environ["MEMSTREAM_GATE"]) / "end"
    deadline = time.monotonic() + 60
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
"""

Event = dict[str, Any]


class Lines:
    """Everything a subprocess writes to one pipe, line by line, as it comes."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self.closed = False
        self._cond = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def wait(self, predicate: Callable[[str], bool], timeout: float = DEADLINE) -> str:
        """The first line for which ``predicate`` holds; fail after ``timeout`` seconds."""
        found: list[str] = []

        def seen(lines: list[str]) -> bool:
            found[:] = [line for line in lines if predicate(line)][:1]
            return bool(found)

        self.wait_all(seen, timeout)
        return found[0]

    def wait_all(self, predicate: Callable[[list[str]], bool], timeout: float = DEADLINE) -> None:
        """Wait until ``predicate`` holds for all the lines so far."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.lines) or self.closed, timeout):
                pytest.fail("not seen in time; output so far:\n" + "\n".join(self.lines))
            if not predicate(self.lines):
                pytest.fail("the output ended first:\n" + "\n".join(self.lines))

    def wait_closed(self, timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self.closed, timeout)


class Watch:
    """A `memstream watch --json` process and the events it printed."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pytest_memstream.cli", "watch", "--json", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out = Lines(self.process.stdout)
        self.err = Lines(self.process.stderr)

    @property
    def events(self) -> list[Event]:
        return [json.loads(line) for line in self.out.lines]  # every line must parse

    def wait_event(self, predicate: Callable[[Event], bool]) -> Event:
        line = self.out.wait(lambda line: predicate(json.loads(line)))
        event: Event = json.loads(line)
        return event

    def wait_state(self, predicate: Callable[[dict[str, Any]], bool]) -> None:
        """Wait until the state replayed from the events so far satisfies ``predicate``."""
        self.out.wait_all(lambda lines: predicate(replay([json.loads(x) for x in lines])))

    def finish(self, timeout: float = 30) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"memstream watch did not exit; stderr: {self.err.lines}")
        self.out.wait_closed(5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class Project:
    """A tiny test project, its gate directory, and the pytest run over it."""

    def __init__(self, pytester: pytest.Pytester) -> None:
        self.path = pytester.path
        pytester.makepyfile(test_gated=PROJECT)
        pytester.makeconftest(HOLD_AT_END)
        self.gate = self.path / "gates"
        self.gate.mkdir()
        self.report_path = self.path / "report.json"
        self.run: subprocess.Popen[str] | None = None
        self.output: Lines | None = None
        self.watches: list[Watch] = []

    def pytest(self, *args: str, hold: bool = False, start_new_session: bool = False) -> None:
        env = dict(os.environ, MEMSTREAM_GATE=str(self.gate))
        if hold:
            env["MEMSTREAM_HOLD"] = "1"
        self.run = subprocess.Popen(
            [
                *(sys.executable, "-m", "pytest", "-n", "2", "--memstream", "-p", "no:randomly"),
                f"--memstream-json={self.report_path}",
                *args,
            ],
            cwd=self.path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=start_new_session,
        )
        self.output = Lines(self.run.stdout)

    def watch(self, *args: str) -> Watch:
        watch = Watch(self.path, *args)
        self.watches.append(watch)
        return watch

    def open(self, name: str) -> None:
        (self.gate / name).touch()

    def session_file(self) -> Path:
        directory = self.path / ".pytest_cache" / "d" / "memstream"
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            found = sorted(directory.glob("session-*.json"))
            if found:
                return found[0]
            assert self.run is not None and self.run.poll() is None, "pytest ended early"
            time.sleep(0.01)
        pytest.fail("no session file appeared")

    def finish(self) -> tuple[int, str, dict[str, Any]]:
        assert self.run is not None and self.output is not None
        try:
            code = self.run.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.run.kill()
            pytest.fail("pytest did not finish:\n" + "\n".join(self.output.lines))
        self.output.wait_closed(5)
        report: dict[str, Any] = json.loads(self.report_path.read_text())
        return code, "\n".join(self.output.lines), report

    def cleanup(self) -> None:
        self.open("quick")
        self.open("go")
        self.open("end")
        for watch in self.watches:
            watch.kill()
        if self.run is not None and self.run.poll() is None:
            self.run.kill()
            self.run.wait(10)


@pytest.fixture
def project(pytester: pytest.Pytester) -> Iterator[Project]:
    project = Project(pytester)
    yield project
    project.cleanup()


def running(event: Event, name: str) -> bool:
    """Whether ``event`` shows a worker running the test ``name``."""
    values = event.get("state") or event.get("sets") or {}
    return any(
        key.startswith("w/") and (value["running"] or {}).get("id", "").endswith(name)
        for key, value in values.items()
    )


def replay(events: list[Event]) -> dict[str, Any]:
    """The state a viewer ends with, rebuilt from its JSON events alone."""
    state: dict[str, Any] = {}
    for event in events:
        if event["event"] == "snapshot":
            state = dict(event["state"])
        elif event["event"] == "update":
            state.update(event["sets"])
    return state


def quick_done(state: dict[str, Any]) -> int:
    return sum(1 for k, v in state.items() if k.startswith("t/") and "test_quick" in v["id"])


def report_totals(report: dict[str, Any]) -> dict[str, Any]:
    """What `memstream watch` should call the totals of the run in ``report``."""
    workers = report["workers"]
    return {
        "status": "finished",
        "tests": len(report["tests"]),
        "messages": report["run"]["messages"],
        "frames": report["run"]["frames"],
        "rejected": sum(report["run"]["rejected"].values()),
        "workers": len(workers),
        "lost": sum(w["lost"] for w in workers),
        "dropped": sum(w["dropped"] for w in workers),
        "recovered": sum(w["recovered"] for w in workers),
        "unrecoverable": sum(w["unrecoverable"] for w in workers),
        "crashed": sorted(w["id"] for w in workers if w["status"] == "crashed"),
    }


def assert_same_tests(state: dict[str, Any], report: dict[str, Any]) -> None:
    seen = {
        (v["w"], v["i"]): (v["id"], v["o"], v["growth"], v["peak"], v["kept"])
        for k, v in state.items()
        if k.startswith("t/")
    }
    expected = {
        (t["worker"], t["index"]): (
            t["nodeid"],
            t["outcome"],
            t["growth"],
            t["peak_rss"],
            t["kept"],
        )
        for t in report["tests"]
    }
    assert seen == expected


def assert_same_workers(state: dict[str, Any], report: dict[str, Any]) -> None:
    seen = {
        k[2:]: (v["status"], v["messages"], v["lost"], v["recovered"], v["max_rss"])
        for k, v in state.items()
        if k.startswith("w/")
    }
    expected = {
        w["id"]: (w["status"], w["messages"], w["lost"], w["recovered"], w["max_rss"])
        for w in report["workers"]
    }
    assert seen == expected


# --- real runs ------------------------------------------------------------------------


def test_viewers_before_during_and_after_start(project: Project) -> None:
    before = project.watch("--wait")  # started before the run: waits for its session
    before.err.wait(lambda line: "waiting for a session" in line)
    project.pytest()
    project.session_file()
    at_start = project.watch()
    before.wait_event(lambda e: running(e, "test_hungry"))
    during = project.watch()
    snapshot = during.wait_event(lambda e: e["event"] == "snapshot")
    assert running(snapshot, "test_hungry")  # joined while the hungry test still runs
    assert quick_done(snapshot["state"]) == 0
    at_start.wait_event(lambda e: e["event"] == "snapshot")
    project.open("quick")
    # Tests that end while the viewers watch reach them as updates, at once, not only
    # when their worker is done: test_hungry and test_zz_hold keep both workers busy.
    for watch in (before, at_start, during):
        watch.wait_state(
            lambda state: (
                quick_done(state) >= 4
                and running({"state": state}, "test_hungry")
                and running({"state": state}, "test_zz_hold")
            )
        )
    project.open("go")

    code, output, report = project.finish()
    assert code == 0, output
    assert len(report["tests"]) == 8
    for watch in (before, at_start, during):
        assert watch.finish() == 0, watch.err.lines
        events = watch.events
        assert events[0]["event"] == "snapshot"
        assert events[-1]["event"] == "finished"
        assert events[-1]["totals"] == report_totals(report)
        seqs = [e["seq"] for e in events if e["event"] == "update"]
        assert seqs == sorted(set(seqs))  # in order, none twice
        state = replay(events)
        assert_same_tests(state, report)
        assert_same_workers(state, report)
        assert state["run"]["status"] == "finished"


def test_late_joiner_snapshot_equals_the_sink_state(project: Project) -> None:
    project.open("quick")
    project.open("go")
    project.pytest(hold=True)  # the controller waits after writing its report
    deadline = time.monotonic() + DEADLINE
    while not project.report_path.exists():
        assert time.monotonic() < deadline, "no report"
        time.sleep(0.01)
    report = json.loads(project.report_path.read_text())
    late = project.watch()
    snapshot = late.wait_event(lambda e: e["event"] == "snapshot")
    state = snapshot["state"]
    # Nothing changes any more: the snapshot alone must be the sink's whole state.
    assert_same_tests(state, report)
    assert_same_workers(state, report)
    assert snapshot["totals"] == dict(report_totals(report), status="running")
    project.open("end")
    assert late.finish() == 0
    assert late.events[-1]["event"] == "finished"
    code, output, _ = project.finish()
    assert code == 0, output


def test_a_run_that_dies_is_reported_lost(project: Project) -> None:
    project.pytest(start_new_session=True)
    project.session_file()
    watch = project.watch()
    watch.wait_event(lambda e: running(e, "test_hungry"))
    assert project.run is not None
    os.killpg(project.run.pid, signal.SIGKILL)  # the controller and its workers, at once
    assert watch.finish() == 3  # told, after a few silent seconds, not left hanging
    last = watch.events[-1]
    assert last["event"] == "lost"
    assert last["reason"] == "the run went silent"
    assert last["totals"]["status"] == "running"  # never passed off as a finished run


def test_killed_and_frozen_viewers_change_nothing(project: Project) -> None:
    project.pytest()
    project.session_file()
    killed, frozen, witness = project.watch(), project.watch(), project.watch()
    for watch in (killed, frozen, witness):
        watch.wait_event(lambda e: running(e, "test_hungry"))
    os.kill(killed.process.pid, signal.SIGKILL)
    os.kill(frozen.process.pid, signal.SIGSTOP)
    started = time.monotonic()
    project.open("quick")
    project.open("go")
    try:
        code, output, report = project.finish()
    finally:
        os.kill(frozen.process.pid, signal.SIGCONT)
    assert code == 0, output
    assert time.monotonic() - started < 15  # nobody waited for the frozen viewer
    assert "memstream: warning" not in output
    assert report["run"]["complete"]
    assert len(report["tests"]) == 8
    assert all(w["status"] == "complete" and w["lost"] == 0 for w in report["workers"])
    assert witness.finish() == 0
    assert witness.events[-1]["totals"] == report_totals(report)
    # The frozen one wakes up to a finished run: it ends, one way or the other.
    assert frozen.finish() in (0, 3)
    last = frozen.events[-1]
    assert last["event"] in ("finished", "lost")
    if last["event"] == "finished":
        assert last["totals"] == report_totals(report)


# --- the terminal view ----------------------------------------------------------------


class Tmux:
    """A private tmux server (its own socket) with a detached session of a fixed size."""

    def __init__(self, name: str) -> None:
        self.socket = f"memstream-test-{os.getpid()}-{name}"

    def __call__(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=20
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start(self, window: str, command: str) -> None:
        self("new-session", "-d", "-s", window, "-x", "80", "-y", "30", command)

    def screen(self, window: str) -> str:
        return self("capture-pane", "-p", "-S", "-200", "-t", window)

    def wait(self, window: str, predicate: Callable[[str], bool]) -> str:
        deadline = time.monotonic() + DEADLINE
        while True:
            screen = self.screen(window)
            if predicate(screen):
                return screen
            if time.monotonic() > deadline:
                pytest.fail(f"the screen never showed it:\n{screen}")
            time.sleep(0.05)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_screen_at_80_columns_shows_running_test_and_top(project: Project) -> None:
    tmux = Tmux("screen")
    watch = f"{sys.executable} -m pytest_memstream.cli watch"
    after = "echo EXIT=$?; stty -a; echo STTY-DONE; sleep 60"  # wait for the last line
    try:
        project.pytest()
        project.session_file()
        tmux.start("stay", f"cd {project.path} && {watch} --top 4 --stay; {after}")
        tmux.start("interrupt", f"cd {project.path} && {watch}; {after}")
        tmux.wait("stay", lambda s: "test_gated.py::test_hungry" in s)
        project.open("quick")
        screen = tmux.wait(
            "stay",
            lambda s: (
                "test_gated.py::test_hungry" in s and s.count("test_gated.py::test_quick") >= 4
            ),
        )
        lines = screen.splitlines()
        assert lines[0].startswith("memstream running")  # the header fits on one line
        hungry = next(line for line in lines if "test_hungry" in line)
        assert hungry.split()[1] == "call"  # worker, phase, RSS, growth, sparkline, test
        assert hungry.split()[3].startswith("+4")  # it grew by some 48 MiB
        assert "top 4 tests by growth" in screen
        top = lines[lines.index(next(x for x in lines if "top 4 tests" in x)) + 2 :][:4]
        assert all("test_quick[" in row for row in top), top
        assert "test_quick[5]" in top[0]  # the biggest first

        tmux.wait("interrupt", lambda s: "test_hungry" in s)
        tmux("send-keys", "-t", "interrupt", "C-c")
        screen = tmux.wait("interrupt", lambda s: "STTY-DONE" in s)
        assert "EXIT=130" in screen
        assert " icanon " in screen and " echo " in screen  # the terminal is restored

        project.open("go")
        code, output, report = project.finish()
        assert code == 0, output
        screen = tmux.wait("stay", lambda s: "memstream finished" in s)
        assert "EXIT=" not in screen  # --stay: still showing the final state
        assert f"{len(report['tests'])} tests done" in screen
        tmux("send-keys", "-t", "stay", "q")
        screen = tmux.wait("stay", lambda s: "STTY-DONE" in s)
        assert "EXIT=0" in screen
        assert " icanon " in screen and " echo " in screen
    finally:
        tmux.kill()


# --- attaching ------------------------------------------------------------------------


def test_nothing_running_says_so(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest_memstream.cli", "watch"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "no running pytest --memstream session found" in done.stderr
    # A session file left by a run that was killed is not a running session.
    stale = tmp_path / ".pytest_cache" / "d" / "memstream"
    stale.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (stale / f"session-{dead.pid}.json").write_text(
        json.dumps(
            {
                "pid": dead.pid,
                "started": time.time(),
                "secret": "00" * 32,
                "viewers": {"snapshot": "tcp://127.0.0.1:9", "updates": "tcp://127.0.0.1:9"},
            }
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest_memstream.cli", "watch", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "no running pytest --memstream session found" in done.stderr


@pytest.fixture
def sink() -> Iterator[Sink]:
    sink = Sink(RunState(), b"s" * 32, "tcp://127.0.0.1")
    sink.start()
    yield sink
    sink.stop()


def test_wrong_secret_is_refused(sink: Sink) -> None:
    endpoint = sink.viewer_endpoints["snapshot"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest_memstream.cli", "watch", endpoint, "--secret", "ab" * 32],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "wrong secret" in done.stderr
    assert sink.fanout is not None and sink.fanout.rejects["auth"] >= 1
    done = subprocess.run(
        [sys.executable, "-m", "pytest_memstream.cli", "watch", endpoint],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if k != "MEMSTREAM_SECRET"},
    )
    assert done.returncode == 1
    assert "--secret" in done.stderr


def test_secret_from_the_environment(sink: Sink) -> None:
    endpoint = sink.viewer_endpoints["snapshot"]
    watch = subprocess.Popen(
        [sys.executable, "-m", "pytest_memstream.cli", "watch", "--json", endpoint],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, MEMSTREAM_SECRET=(b"s" * 32).hex()),
    )
    try:
        out = Lines(watch.stdout)
        line = out.wait(lambda line: '"snapshot"' in line)
        assert json.loads(line)["state"]["run"]["status"] == "running"
        sink.stop()  # the run ends: the viewer hears it and exits
        assert watch.wait(30) == 0
        out.wait_closed(5)
        assert json.loads(out.lines[-1])["event"] == "finished"
    finally:
        watch.kill()
        watch.wait(10)


# --- the protocol, against a scripted server ------------------------------------------


class ScriptedRun:
    """Plays the sink's side of the viewer protocol by hand, as docs/protocol.md says."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.context = zmq.Context()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.bind("tcp://127.0.0.1:*")
        self.xpub = self.context.socket(zmq.XPUB)
        self.xpub.bind("tcp://127.0.0.1:*")
        self.snapshot_endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.state: dict[str, Any] = {"run": run_value("running", tests=0)}
        self.seq = 5
        self.snapshots = 0
        self.subscribed = False

    def serve(self) -> None:
        """Answer whatever has arrived."""
        while self.xpub.poll(0):
            if self.xpub.recv()[:1] == b"\x01":
                self.subscribed = True
                self.publish("beat", {"seq": self.seq, "t": time.time()})
        while self.router.poll(0):
            peer, *frames = self.router.recv_multipart()
            request = protocol.decode_viewer(self.secret, frames, protocol.REQUEST_KINDS)
            nonce = request["nonce"]
            if request["k"] == "hello":
                reply = {"nonce": nonce, "seq": self.seq, "beat": 1.0, "pid": 1, "started": 1.0}
                reply["updates"] = self.xpub.getsockopt_string(zmq.LAST_ENDPOINT)
                self.send(peer, "welcome", reply)
            else:
                self.snapshots += 1
                part = {"nonce": nonce, "seq": self.seq, "parts": 1, "part": 0}
                self.send(peer, "snap", dict(part, sets=self.state))

    def send(self, peer: bytes, kind: str, fields: dict[str, Any]) -> None:
        self.router.send_multipart([peer, *protocol.encode_viewer(self.secret, kind, fields)])

    def publish(self, kind: str, fields: dict[str, Any]) -> None:
        self.xpub.send_multipart(protocol.encode_viewer(self.secret, kind, fields))

    def update(self, sets: dict[str, Any], seq: int | None = None) -> None:
        """Change the state; publish it as ``seq`` (the next one unless told)."""
        self.state.update(sets)
        self.seq = self.seq + 1 if seq is None else seq
        self.publish("update", {"seq": self.seq, "t": time.time(), "sets": sets})

    def close(self) -> None:
        self.context.destroy(linger=0)


def run_value(status: str, tests: int) -> dict[str, Any]:
    return {
        "status": status,
        "pid": 1,
        "started": 1.0,
        "messages": tests,
        "frames": tests,
        "rejected": 0,
        "tests": tests,
    }


def record_value(n: int) -> dict[str, Any]:
    return {
        "id": f"test_x.py::test_{n}",
        "w": "gw0",
        "i": n,
        "o": "passed",
        "rss_start": 100,
        "peak": 100 + n,
        "rss_end": 100,
        "growth": n,
        "kept": 0,
        "phase": "call",
        "m": "hwm",
        "src": "stream",
        "t0": 1.0,
        "t1": 2.0,
    }


def pump(viewer: Viewer, server: ScriptedRun, until: Callable[[list[str]], bool]) -> list[str]:
    kinds: list[str] = []
    deadline = time.monotonic() + 20
    while not until(kinds):
        assert time.monotonic() < deadline, kinds
        server.serve()
        events, _ = viewer.poll(0.01)
        kinds += [e.kind for e in events]
    return kinds


def test_a_gap_in_updates_means_behind_then_a_fresh_snapshot() -> None:
    secret = os.urandom(32)
    server = ScriptedRun(secret)
    viewer = Viewer(server.snapshot_endpoint, secret)
    try:
        assert pump(viewer, server, lambda k: "snapshot" in k) == ["snapshot"]
        assert viewer.mirror.seq == 5
        server.update({"t/gw0/1": record_value(1)})
        assert pump(viewer, server, lambda k: "update" in k) == ["update"]
        # A frame that is not signed with the run's secret is never shown.
        forged = protocol.encode_viewer(b"x" * 32, "update", {"seq": 7, "t": 1.0, "sets": {}})
        server.xpub.send_multipart(forged)
        server.update({"t/gw0/2": record_value(2)}, seq=8)  # 7 went missing
        kinds = pump(viewer, server, lambda k: "snapshot" in k)
        assert kinds == ["behind", "snapshot"]
        assert server.snapshots == 2
        assert viewer.mirror.seq == 8
        assert set(viewer.mirror.tests()[i]["id"] for i in range(2)) == {
            "test_x.py::test_1",
            "test_x.py::test_2",
        }
        server.update({"run": run_value("finished", tests=2)})
        assert pump(viewer, server, lambda k: "finished" in k) == ["update", "finished"]
        assert viewer.mirror.totals()["tests"] == 2
    finally:
        viewer.close()
        server.close()


def test_nothing_answering_is_an_error() -> None:
    context = zmq.Context()
    port = context.socket(zmq.ROUTER)
    endpoint = f"tcp://127.0.0.1:{port.bind_to_random_port('tcp://127.0.0.1')}"
    port.close(linger=0)  # a port that nothing listens on any more
    viewer = Viewer(endpoint, os.urandom(32))
    try:
        with pytest.raises(ViewerError, match="nothing answers"):
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                viewer.poll(0.1)
    finally:
        viewer.close()
        context.term()


def test_a_snapshot_taken_while_nobody_listened_is_followed_by_a_gap(sink: Sink) -> None:
    """The sink publishes nothing while nobody subscribes; the first subscriber must not
    mistake a snapshot from that time for an up-to-date one."""
    secret = b"s" * 32
    context = zmq.Context()
    try:
        dealer = context.socket(zmq.DEALER)
        dealer.connect(sink.viewer_endpoints["snapshot"])
        dealer.send_multipart(protocol.encode_viewer(secret, "snapshot", {"nonce": b"n" * 16}))
        assert dealer.poll(10_000)
        snap = protocol.decode_viewer(secret, dealer.recv_multipart(), frozenset({"snap"}))
        assert snap["parts"] == 1 and snap["sets"]["run"]["messages"] == 0
        # The state changes while nobody listens...
        sink.state.expect("gw0")
        sender = Sender(sink.endpoint, secret)
        hello = {"pid": 1, "method": "hwm", "interval": 0.1, "rss": 1, "platform": "linux"}
        sender.send([dict(hello, v=protocol.VERSION, k="hello", w="gw0", q=0, t=time.time())])
        with sink.state.cond:
            assert sink.state.cond.wait_for(lambda: sink.state.messages == 1, 10)
        sender.close()
        # ...so the first beat a new subscriber hears is past the snapshot's seq.
        sub = context.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(sink.viewer_endpoints["updates"])
        assert sub.poll(10_000)
        beat = protocol.decode_viewer(secret, sub.recv_multipart(), frozenset({"beat"}))
        assert beat["seq"] > snap["seq"]
    finally:
        context.destroy(linger=0)


def test_the_example_viewer_in_the_docs_works(project: Project) -> None:
    marker = "<!-- tested by tests/test_watch.py::test_the_example_viewer_in_the_docs_works -->"
    docs = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text()
    code = docs.split(marker + "\n```python\n", 1)[1].split("```", 1)[0]
    (project.path / "tiny_viewer.py").write_text(code)
    project.pytest()
    session = project.session_file()
    viewer = subprocess.Popen(
        [sys.executable, "tiny_viewer.py", str(session)],
        cwd=project.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out = Lines(viewer.stdout)
        out.wait(lambda line: line == "attached: 0 tests done so far")
        project.open("quick")
        project.open("go")
        code_, output, report = project.finish()
        assert code_ == 0, output
        assert viewer.wait(30) == 0
        out.wait_closed(5)
        assert out.lines[-1] == "the run finished: 8 tests"
        printed = {line.split()[-1] for line in out.lines[1:-1]}
        assert printed == {t["nodeid"] for t in report["tests"]}
    finally:
        viewer.kill()
        viewer.wait(10)


def test_a_run_whose_viewer_sockets_cannot_bind_goes_on(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_one():\n    pass\n")
    # Long enough for the sink, too long for "<path>-snapshot" (sockaddr_un holds 107).
    path = pytester.path / "s"
    path = path.with_name("s" * (100 - len(str(path)) + 1))
    assert len(str(path)) == 100
    result = pytester.runpytest_subprocess("--memstream", f"--memstream-bind=ipc://{path}")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["memstream: no viewers for this run: cannot bind *", "*1 passed*"])


CRASHING = """
import os

def test_dies():
    os._exit(3)

def test_lives():
    pass
"""


def test_a_crashed_worker_reaches_the_viewer(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_crashing=CRASHING)
    report_path = pytester.path / "report.json"
    watch = Watch(pytester.path, "--wait")
    try:
        result = pytester.runpytest_subprocess(
            "-n", "2", "--memstream", f"--memstream-json={report_path}", "-p", "no:randomly"
        )
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        assert watch.finish() == 0, watch.err.lines
    finally:
        watch.kill()
    report = json.loads(report_path.read_text())
    totals = watch.events[-1]["totals"]
    assert totals == report_totals(report)
    assert len(totals["crashed"]) == 1
    state = replay(watch.events)
    crashed = state["w/" + totals["crashed"][0]]
    assert crashed["crashed"] == "test_crashing.py::test_dies"
    died = [v for k, v in state.items() if k.startswith("t/") and v["id"].endswith("test_dies")]
    assert [v["kept"] for v in died] == [None]  # it never got to its teardown


def screen_mirror() -> Mirror:
    mirror = Mirror()
    long_id = "test_deep/test_module_with_a_long_name.py::test_" + "x" * 80
    running = {
        "i": 3,
        "id": long_id,
        "phase": "call",
        "started": time.time() - 5,
        "rss_start": 100 << 20,
        "rss": 612 << 20,
        "peak": 612 << 20,
        "rate": 50e6,
        "spark": [(100 + 10 * n) << 20 for n in range(48)],
    }
    worker = {
        "status": "running",
        "pid": 4242,
        "method": "hwm",
        "messages": 10,
        "lost": 0,
        "dropped": 0,
        "recovered": 0,
        "unrecoverable": 0,
        "max_rss": 612 << 20,
        "crashed": "",
        "error": "",
        "running": running,
    }
    values: dict[str, Any] = {"run": dict(run_value("running", tests=30), started=time.time() - 42)}
    values["w/gw0"] = worker
    values["w/gw1"] = dict(worker, status="crashed", running=None, crashed="test_a.py::test_boom")
    values["w/gw10"] = dict(worker, status="complete", running=None)
    for n in range(30):
        values[f"t/gw1/{n}"] = dict(record_value(n), w="gw1", growth=n << 20)
    mirror.load(10, values)
    return mirror


@pytest.mark.parametrize("width", [80, 60, 140])
def test_the_screen_fits_the_width(width: int) -> None:
    console = Console(width=width, height=30, record=True, color_system=None)
    console.print(render(screen_mirror(), Status("tcp://x"), width, 30, 10, "growth"))
    lines = console.export_text().splitlines()
    assert all(len(line) <= width for line in lines)
    assert lines[0].startswith("memstream running 0:4")
    assert lines[1] == ""  # the header is one line, however narrow the terminal
    header = next(i for i, line in enumerate(lines) if line.startswith("worker  phase"))
    workers = lines[header + 1 : lines.index("", header)]
    assert [line.split()[0] for line in workers] == ["gw0", "gw1", "gw10"]  # natural order
    assert workers[0].split()[1:4] == ["call", "612.0M", "+512.0M"]
    assert "▁" in workers[0] and "█" in workers[0]  # the sparkline climbs
    assert "…" in workers[0] and workers[0].rstrip().endswith("xxx")  # cut at the front
    assert "crashed" in workers[1]
    assert "test_a.py::test_boom" in workers[1] or width < 80
    assert "gw1 crashed while running test_a.py::test_boom" in lines
    top = lines[lines.index("top 10 tests by growth") + 2 :][:10]
    assert [row.split()[0] for row in top[:3]] == ["+29.0M", "+28.0M", "+27.0M"]


def test_the_top_list_shortens_to_the_height() -> None:
    console = Console(width=80, height=16, record=True, color_system=None)
    console.print(render(screen_mirror(), Status("tcp://x"), 80, 16, 10, "growth"))
    lines = console.export_text().splitlines()
    assert len(lines) <= 16
    assert any(line.startswith("top ") and "tests by growth" in line for line in lines)


def test_a_test_that_never_finished_shows_no_kept_and_sorts_last_by_it() -> None:
    mirror = screen_mirror()
    crashed = dict(record_value(30), id="test_a.py::test_boom", w="gw1", o="crashed", kept=None)
    mirror.apply(11, {"t/gw1/30": crashed})
    console = Console(width=100, height=60, record=True, color_system=None)
    console.print(render(mirror, Status("tcp://x"), 100, 60, 31, "kept"))
    lines = console.export_text().splitlines()
    top = lines[lines.index("top 31 tests by kept") + 2 :][:31]
    assert top[-1].split() == ["+30B", "130B", "gw1", "test_a.py::test_boom", "[crashed]"]
