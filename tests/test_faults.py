"""Real faults: workers killed by real signals, a lossy stream, a dead sink, Ctrl-C, -x."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runs import WAIT_UNTIL_STREAMED, RunMemstream

from pytest_memstream.faults import ENV

MiB = 1 << 20

# test_crash is collected after every test_before, so whichever worker it lands on has
# finished some of them first (xdist's first batch gives each worker two or more). It waits
# until its climb has been streamed (a condition, polled with a deadline) and then dies.
# --dist=load: loadscope/loadfile/loadgroup hang in xdist 3.8 when a crashed worker is
# replaced (pytest-dev/pytest-xdist#1323, #1327, #1378).
CRASH_TESTS = (
    """
import ctypes, os, signal, time
import pytest

MiB = 1 << 20
KEPT = []

"""
    + WAIT_UNTIL_STREAMED
    + """

@pytest.mark.parametrize("n", range(10))
def test_before(n):
    KEPT.append(b"b" * (10 * MiB))


def test_crash(request):
    for _ in range(4):
        KEPT.append(b"c" * (40 * MiB))
        wait_until_streamed(request, 2)
    {kill}
"""
)

AFTER_TESTS = """
import pytest

@pytest.mark.parametrize("n", range(4))
def test_after(n):
    pass
"""

KILLS = {
    "sigkill": "os.kill(os.getpid(), signal.SIGKILL)",
    "os_exit": "os._exit(3)",
    "segfault": "ctypes.string_at(0)",
    "sigterm": "os.kill(os.getpid(), signal.SIGTERM)",
}
#: What the report says ended the worker (its exit status), and in the crash line.
KILLED_BY = {"sigkill": "SIGKILL", "os_exit": None, "segfault": "SIGSEGV", "sigterm": "SIGTERM"}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KILLS))
def test_crashed_worker_is_a_finding(
    pytester: pytest.Pytester, run_memstream: RunMemstream, kind: str
) -> None:
    pytester.makepyfile(
        test_crashy=CRASH_TESTS.replace("{kill}", KILLS[kind]), test_zafter=AFTER_TESTS
    )
    run = run_memstream("-n", "2", "--dist=load", "--memstream-interval=0.05", "-v")
    assert run.result.ret == pytest.ExitCode.TESTS_FAILED

    crashed = run.test("test_crash")
    assert crashed["outcome"] == "crashed"
    assert crashed["peak_phase"] == "call"
    assert crashed["rss_end"] - crashed["rss_start"] >= 150 * MiB
    assert crashed["peak_rss"] >= crashed["rss_end"]
    assert len(crashed["samples"]) >= 4
    assert crashed["climb_rate"] > 0
    assert crashed["kept"] is None  # it never got to its teardown

    workers = {w["id"]: w for w in run.report["workers"]}
    victim = workers[crashed["worker"]]
    assert victim["status"] == "crashed"
    assert victim["crashed_test"] == crashed["nodeid"]
    assert victim["killed_by"] == KILLED_BY[kind]
    assert victim["unrecoverable"] == 0
    # Every test that finished on the dead worker before the crash keeps its figures.
    finished_there = [t for t in run.report["tests"] if t["worker"] == victim["id"]]
    finished_there.remove(crashed)
    assert finished_there
    assert all(t["outcome"] == "passed" and t["growth"] >= 9 * MiB for t in finished_there)
    # xdist replaced the dead worker; the replacement is measured like the rest.
    assert len(workers) == 3
    replacement = next(w for w in workers.values() if w["id"] not in ("gw0", "gw1"))
    assert replacement["status"] == "complete"
    assert replacement["pid"] > 0
    ended = f" \\({KILLED_BY[kind]}\\)" if KILLED_BY[kind] else ""
    names = sorted(t["nodeid"].split("::")[1].split("[")[0] for t in run.report["tests"])
    assert names == ["test_after"] * 4 + ["test_before"] * 10 + ["test_crash"]
    assert all(t["outcome"] == "passed" for t in run.report["tests"] if t is not crashed)
    run.result.stdout.re_match_lines(
        [
            # Its growth and peak, and a blank for what it kept.
            rf"\s*\+[\d.]+M\s+[\d.]+M\s+{victim['id']}\s+call\s+test_crashy.py::test_crash  "
            r"\[crashed\]$",
            rf"memstream: worker {victim['id']} crashed{ended} while running "
            r"test_crashy.py::test_crash "
            r"\(phase call, last RSS \d+\.\dM, peak \d+\.\dM, climbing [\d.]+[KMG]/s; "
            r"last samples .*\)",
            rf"memstream: 15 tests on 3 workers, .*crashed: {victim['id']}$",
        ]
    )


@pytest.mark.slow
def test_a_worker_that_dies_before_sending_anything_recovers_nothing(
    pytester: pytest.Pytester, run_memstream: RunMemstream
) -> None:
    pytester.makepyfile(
        test_die="""
        import os
        import pytest

        def test_dies():
            os._exit(3)

        @pytest.mark.parametrize("n", range(4))
        def test_lives(n):
            pass
        """
    )
    # A worker sends its queue at most once an interval (or for a hungry or failed test):
    # with an hour's interval, the worker that dies has sent nothing at all.
    run = run_memstream("-n", "2", "--memstream-interval=3600", "--memstream-top=0")
    assert run.result.ret == pytest.ExitCode.TESTS_FAILED
    dies = run.test("test_dies")
    assert dies["outcome"] == "crashed"
    assert dies["source"] == "xdist"  # known from xdist's crash report alone
    assert dies["phases"] == {}
    assert dies["kept"] is None
    victim = next(w for w in run.report["workers"] if w["id"] == dies["worker"])
    assert (victim["status"], victim["messages"], victim["recovered"]) == ("crashed", 0, 0)
    assert len([t for t in run.report["tests"] if t["outcome"] == "passed"]) == 4
    assert (run.report["run"]["complete"], run.report["run"]["not_run"]) == (True, 0)
    run.result.stdout.re_match_lines(
        [
            rf"\s+{victim['id']}\s+\?\s+test_die.py::test_dies  "
            r"\[crashed, no figures reached the controller\]$",
            rf"memstream: worker {victim['id']} crashed while running test_die.py::test_dies "
            r"\(phase \?, no figures reached the controller\)$",
        ]
    )
    assert "recovered]" not in run.output


# xdist gives each worker a first chunk of two consecutive tests: one worker runs both
# crashing tests' first, and so does the other: two crashes at once.
STOPPED_TESTS = """
import os, signal
import pytest

@pytest.mark.parametrize("n", range(4))
def test_crash(n):
    if n % 2:
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(3)

@pytest.mark.parametrize("n", range(8))
def test_after(n):
    pass
"""


@pytest.mark.slow
def test_a_run_that_xdist_stopped_is_incomplete_and_saves_no_baseline(
    pytester: pytest.Pytester, run_memstream: RunMemstream
) -> None:
    pytester.makepyfile(test_stopped=STOPPED_TESTS)
    saved = pytester.path / "base.json"
    run = run_memstream("-n", "2", "--max-worker-restart=1", f"--memstream-save={saved}")
    run.result.stdout.fnmatch_lines(["*maximum crashed workers reached: 1*"])
    outcomes = run.result.parseoutcomes()
    not_run = 12 - outcomes.get("passed", 0) - outcomes.get("failed", 0)
    assert not_run > 0
    facts = run.report["run"]
    assert (facts["complete"], facts["stopped"], facts["not_run"]) == (
        False,
        "stopped early",
        not_run,
    )
    assert not saved.exists()
    why = f"stopped early; {not_run} tests never ran"
    run.result.stdout.fnmatch_lines(
        [
            f"memstream: * crashed: *, INCOMPLETE run ({why})",
            f"memstream: warning: baseline {saved} not saved: the run is not complete ({why})",
        ]
    )


@pytest.mark.slow
def test_a_crash_that_xdist_recovers_from_did_not_stop_the_run(
    pytester: pytest.Pytester, run_memstream: RunMemstream
) -> None:
    # test_passes and test_dies run on one worker, which has sent nothing when it dies
    # (an hour's interval): test_passes has no record, yet it ran, and so did the rest.
    pytester.makepyfile(
        test_recovered="""
        import os
        import pytest

        def test_passes():
            pass

        def test_dies():
            os._exit(3)

        @pytest.mark.parametrize("n", range(3))
        def test_after(n):
            pass
        """
    )
    run = run_memstream("-n", "2", "--memstream-interval=3600")
    run.result.assert_outcomes(passed=4, failed=1)
    assert (run.report["run"]["stopped"], run.report["run"]["not_run"]) == (None, 0)
    assert "never ran" not in run.output


def test_a_run_cut_short_without_a_reason_is_incomplete(
    pytester: pytest.Pytester, run_memstream: RunMemstream
) -> None:
    pytester.makepyfile(
        test_cut="""
        import pytest

        def test_a():
            pass

        def test_b():
            pytest.exit("enough for today", returncode=0)

        def test_c():
            pass

        def test_d():
            pass
        """
    )
    run = run_memstream("-p", "no:xdist")
    assert run.result.ret == pytest.ExitCode.OK
    facts = run.report["run"]
    assert (facts["complete"], facts["not_run"]) == (False, 2)
    assert [t["nodeid"] for t in run.report["tests"]] == [
        "test_cut.py::test_a",
        "test_cut.py::test_b",
    ]
    run.result.stdout.fnmatch_lines(
        ["memstream: 2 tests on 1 worker, *INCOMPLETE run (stopped early; 2 tests never ran)"]
    )


LOSSY_TESTS = """
import pytest

@pytest.mark.parametrize("n", range(60))
def test_many(n):
    data = b"x" * ((n % 7) << 20)
"""


@pytest.mark.parametrize("xdist", [["-n", "2"], ["-p", "no:xdist"]], ids=["xdist", "single"])
def test_injected_loss_is_repaired_from_the_fallback(
    pytester: pytest.Pytester,
    run_memstream: RunMemstream,
    monkeypatch: pytest.MonkeyPatch,
    xdist: list[str],
) -> None:
    pytester.makepyfile(test_lossy=LOSSY_TESTS)
    clean = run_memstream(*xdist)
    monkeypatch.setenv(ENV, "drop=0.5,seed=7")
    lossy = run_memstream(*xdist, "-v")
    assert lossy.result.ret == clean.result.ret == pytest.ExitCode.OK

    def outcomes(run: object) -> list[tuple[str, str]]:
        return sorted((t["nodeid"], t["outcome"]) for t in run.report["tests"])  # type: ignore[attr-defined]

    assert outcomes(lossy) == outcomes(clean)
    assert len(lossy.report["tests"]) == 60
    workers = lossy.report["workers"]
    assert sum(w["lost"] for w in workers) > 0
    assert sum(w["recovered"] for w in workers) > 0
    assert all(w["unrecoverable"] == 0 for w in workers)
    assert {w["status"] for w in workers} == {"recovered"}
    recovered = [t for t in lossy.report["tests"] if t["source"] == "fallback"]
    assert len(recovered) == sum(w["recovered"] for w in workers)
    # A recovered test has the same figures as a streamed one: the fallback is the record.
    big = [t for t in lossy.report["tests"] if t["nodeid"].endswith("[6]")]
    assert big[0]["growth"] >= 5 * MiB
    lossy.result.stdout.fnmatch_lines(["*memstream: 60 tests on *, * lost, * recovered, *"])


@pytest.mark.parametrize("mode", ["gone", "stall"])
def test_dead_sink_costs_a_warning_not_the_run(
    pytester: pytest.Pytester,
    run_memstream: RunMemstream,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    # Each test grows by 20 MiB, which makes its worker send at once: many frames.
    pytester.makepyfile(
        test_hungry="""
        import pytest

        @pytest.mark.parametrize("n", range(30))
        def test_hungry(n):
            data = b"h" * (20 << 20)
        """
    )
    monkeypatch.setenv(ENV, f"sink={mode},hwm=1")
    run = run_memstream("-n", "2", "-v")
    assert run.result.ret == pytest.ExitCode.OK
    assert len(run.report["tests"]) == 30
    assert {t["source"] for t in run.report["tests"]} == {"fallback"}
    workers = run.report["workers"]
    assert all(w["messages"] == 0 for w in workers)
    assert all(w["lost"] > 0 for w in workers)
    if mode == "gone":
        # Nothing to connect to: the queue held one frame (the first), and the worker
        # dropped and counted the rest, its bye at least. (A stalled sink's kernel
        # buffers take many small frames before anything is refused.)
        assert all(w["dropped"] > 0 for w in workers)
    run.result.stdout.fnmatch_lines(["*memstream: warning: the stream of gw? stopped short*"])


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["alone", "xdist"])
def test_a_recorder_that_cannot_start_costs_a_warning_not_the_run(
    pytester: pytest.Pytester,
    run_memstream: RunMemstream,
    monkeypatch: pytest.MonkeyPatch,
    workers: list[str],
) -> None:
    # As when a process has no file descriptor left for ZeroMQ: its tests must still run.
    pytester.makepyfile(
        test_plain="""
        import pytest

        @pytest.mark.parametrize("n", range(6))
        def test_plain(n):
            pass

        def test_failing():
            assert False
        """
    )
    monkeypatch.setenv(ENV, "worker=fail")
    run = run_memstream(*workers)
    run.result.assert_outcomes(passed=6, failed=1)
    assert run.report["tests"] == []
    ids = ["gw0", "gw1"] if workers else ["main"]
    for worker in run.report["workers"]:
        assert worker["id"] in ids
        assert worker["status"] == "incomplete"
        assert worker["error"].startswith("could not start measuring: OSError: [Errno 24]")
    assert sorted(w["id"] for w in run.report["workers"]) == ids
    # Not the whole run: a baseline is not saved from it.
    assert run.report["run"]["complete"] is False
    assert run.report["run"]["stopped"].startswith("tests ran unmeasured on ")
    run.result.stdout.fnmatch_lines(
        [
            f"memstream: warning: {'gw?' if workers else ''}*could not start measuring: "
            "OSError: [[]Errno 24[]] Too many open files*; *tests ran unmeasured"
        ]
    )


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["alone", "xdist"])
def test_a_limit_that_cannot_be_checked_fails_and_no_baseline_is_saved(
    pytester: pytest.Pytester,
    run_memstream: RunMemstream,
    monkeypatch: pytest.MonkeyPatch,
    workers: list[str],
) -> None:
    pytester.makepyfile(
        test_gated="""
        import pytest

        @pytest.mark.memstream_limit("100M")
        def test_marked():
            pass

        @pytest.mark.memstream_limit(size=[])
        def test_bad_marker():
            pass

        def test_plain():
            pass
        """
    )
    monkeypatch.setenv(ENV, "worker=fail")
    saved = pytester.path / "base.json"
    run = run_memstream(*workers, f"--memstream-save={saved}")
    run.result.assert_outcomes(passed=1, errors=2)
    run.result.stdout.fnmatch_lines(
        [
            "*test_marked has a memory limit (@pytest.mark.memstream_limit) that could not be "
            "checked: this process could not start measuring*"
        ]
    )
    assert not saved.exists()
    run.result.stdout.fnmatch_lines(["*baseline * not saved*"])

    # A limit given for every test, and an increase that cannot be checked, fail too.
    run = run_memstream(*workers, "--memstream-limit=1G", "-k", "plain")
    run.result.assert_outcomes(errors=1)
    run = run_memstream(*workers, "--memstream-fail-on-increase=10%", "-k", "plain")
    assert run.result.ret == pytest.ExitCode.TESTS_FAILED
    run.result.stdout.fnmatch_lines(["*--memstream-fail-on-increase could not check*"])


def strangers(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import json, os, time, pytest, zmq
        from pytest_memstream import security
        from pytest_memstream.protocol import stream as wire

        @pytest.hookimpl(wrapper=True)
        def pytest_sessionfinish(session):
            # Around the controller's own, which takes the report.
            if not hasattr(session.config, "workerinput"):
                meet_strangers(session)
            return (yield)

        def meet_strangers(session):
            directory = session.config.rootpath / ".pytest_cache" / "d" / "memstream"
            (path,) = directory.glob("session-*.json")
            info = json.loads(path.read_text())
            keys = security.RunKeys(bytes.fromhex(info["secret"]))
            start = {"k": "start", "t": 1.0, "i": 0, "id": "x::forged", "rss": 1}
            context = zmq.Context()
            sockets = []

            def peer(client_key, worker):
                push = context.socket(zmq.PUSH)
                if client_key is not None:
                    security.connect_as(push, keys.server.public, client_key)
                push.connect(info["endpoint"])
                packed = [wire.pack_message(start)]
                for first in range(3):  # a peer tries more than once
                    push.send_multipart(wire.frame(worker, 10**6 + first, 0, packed))
                sockets.append(push)

            peer(None, "gw0")  # no CURVE at all
            peer(os.urandom(32), "gw0")  # a key of no run
            peer(keys.worker("gw99"), "gw99")  # a worker this run never started
            peer(keys.worker("gw0"), "gw1")  # gw0's key, speaking for gw1
            controller = session.config.pluginmanager.get_plugin("memstream-controller")
            state, deadline = controller.state, time.monotonic() + 30
            expected = {"refused": 2, "identity": 3, "handshake": 1}
            while any(state.rejects[k] < n for k, n in expected.items()):
                assert time.monotonic() < deadline, dict(state.rejects)
                time.sleep(0.01)
            for push in sockets:
                push.close(linger=0)
            context.term()
        """
    )


def test_strangers_are_refused_and_counted_once(
    pytester: pytest.Pytester, run_memstream: RunMemstream
) -> None:
    pytester.makepyfile(test_a="def test_a():\n    pass\n")
    strangers(pytester)
    run = run_memstream("-n", "2", "-v")
    assert run.result.ret == pytest.ExitCode.OK
    assert [t["nodeid"] for t in run.report["tests"]] == ["test_a.py::test_a"]
    # Each refused key once, whatever its retries; gw0's frames as gw1, three.
    rejected = run.report["run"]["rejected"]
    assert rejected["refused"] == 2
    assert rejected["identity"] == 3
    assert rejected["handshake"] >= 1
    assert "replay" not in rejected and "schema" not in rejected
    assert {w["id"]: w["lost"] for w in run.report["workers"]} == {"gw0": 0, "gw1": 0}


def start_blocked_run(pytester: pytest.Pytester, *args: str) -> tuple[subprocess.Popen[str], Path]:
    """A -n 2 run whose test ``test_blocks`` is running (and blocked) when this returns."""
    marker = pytester.path / "started"
    pytester.makepyfile(
        test_block=f"""
        import pathlib, time
        import pytest

        @pytest.mark.parametrize("n", range(3))
        def test_quick(n):
            data = b"q" * (40 << 20)  # above glibc's largest mmap threshold: always fresh pages

        def test_blocks():
            pathlib.Path({str(marker)!r}).write_text("running")
            time.sleep(120)  # stands in for a test that hangs; the run is interrupted
        """
    )
    report = pytester.path / "report.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "--memstream",
         f"--memstream-json={report}", *args],
        cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "test_blocks never started"
        time.sleep(0.01)
    return proc, report


@pytest.mark.slow
@pytest.mark.parametrize("xdist", [["-n", "2"], []], ids=["xdist", "single"])
def test_ctrl_c_still_reports(pytester: pytest.Pytester, xdist: list[str]) -> None:
    proc, report_path = start_blocked_run(pytester, *xdist)
    os.kill(proc.pid, signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, output
    assert "memstream: top" in output
    # Under xdist, the controller may not have heard yet that test_blocks started.
    assert re.search(r"INCOMPLETE run \(interrupted(; 1 test never ran)?\)", output), output
    report = json.loads(report_path.read_text())
    assert report["run"]["complete"] is False
    assert report["run"]["stopped"] == "interrupted"
    quick = [t for t in report["tests"] if "test_quick" in t["nodeid"]]
    assert len(quick) == 3
    assert all(t["growth"] >= 39 * MiB for t in quick)
    if not xdist:
        # Its own process reports the test it interrupted, which never got to its teardown.
        (blocked,) = [t for t in report["tests"] if t["nodeid"].endswith("test_blocks")]
        assert blocked["phases"].keys() == {"setup", "call"}
        assert blocked["kept"] is None


def test_exitfirst_reports_what_ran(pytester: pytest.Pytester, run_memstream: RunMemstream) -> None:
    pytester.makepyfile(
        test_x="""
        def test_a():
            pass

        def test_b():
            assert False

        def test_c():
            pass
        """
    )
    run = run_memstream("-x", "-p", "no:xdist")
    assert run.result.ret == pytest.ExitCode.TESTS_FAILED
    assert [t["nodeid"] for t in run.report["tests"]] == ["test_x.py::test_a", "test_x.py::test_b"]
    assert run.report["run"]["complete"] is False
    assert "stopping after 1 failures" in run.report["run"]["stopped"]
    assert run.report["run"]["not_run"] == 1
    why = "stopping after 1 failures; 1 test never ran"
    run.result.stdout.fnmatch_lines([f"memstream: 2 tests on 1 worker, *INCOMPLETE run ({why})"])


FORGER = """
import pytest, zmq
from pytest_memstream import security
from pytest_memstream.protocol import stream as wire

SOCKETS = []


@pytest.hookimpl(trylast=True)
def pytest_configure_node(node):
    # Before gw0 has even started: frames with its key and numbers of its stream's
    # future (or none it ever reaches), holding nothing a check lets through.
    if node.gateway.id != "gw0":
        return
    controller = node.config.pluginmanager.get_plugin("memstream-controller")
    keys = controller.keys
    push = zmq.Context.instance().socket(zmq.PUSH)
    security.connect_as(push, keys.server.public, keys.worker("gw0"))
    push.connect(controller.starter.endpoint)
    junk = [wire.pack_message({"k": "start", "t": 1.0})]
    for first in (2**52, 10**5, 3):
        push.send_multipart(wire.frame("gw0", first, 0, junk))
    SOCKETS.append(push)
"""


def test_forged_sequence_numbers_neither_lock_a_worker_out_nor_inflate_its_loss(
    pytester: pytest.Pytester, run_memstream: RunMemstream
) -> None:
    pytester.makeconftest(FORGER)
    pytester.makepyfile(LOSSY_TESTS)
    run = run_memstream("-n", "2", "--dist=loadgroup", "-v")
    assert run.result.ret == pytest.ExitCode.OK
    rejected = run.report["run"]["rejected"]
    # 2**52 is a jump no worker makes; the frame at 3 took only its own number, and
    # gw0's real message 3 was refused as a replay of it.
    assert rejected["sequence"] == 1
    assert rejected["schema"] == 2
    assert rejected["replay"] == 1
    gw0 = next(w for w in run.report["workers"] if w["id"] == "gw0")
    assert gw0["pid"] > 0  # its hello, message 0, came through
    assert gw0["lost"] == 0  # the gap up to 10**5 is not its loss: it never sent those
    assert gw0["status"] in ("complete", "recovered")
    assert len(run.report["tests"]) == 60
    streamed = [t for t in run.report["tests"] if t["worker"] == "gw0"]
    assert streamed and sum(t["source"] == "stream" for t in streamed) >= len(streamed) - 1


LONG_ID_TESTS = """
import pytest

@pytest.mark.parametrize("n", range(30))
def test_many(n):
    pass

@pytest.mark.parametrize("size", [1 << 20], ids=["L" * 9000])
def test_long(size):
    data = b"x" * (8 * size)
"""


@pytest.mark.parametrize("xdist", [["-n", "2"], ["-p", "no:xdist"]], ids=["xdist", "single"])
def test_a_test_id_too_long_for_the_protocol_is_cut_and_costs_nothing_else(
    pytester: pytest.Pytester,
    run_memstream: RunMemstream,
    monkeypatch: pytest.MonkeyPatch,
    xdist: list[str],
) -> None:
    # Before: the long test vanished and, the fallback being read all or nothing, the
    # whole fallback of its worker with it.
    pytester.makepyfile(test_long_ids=LONG_ID_TESTS)
    monkeypatch.setenv(ENV, "drop=1")  # every frame lost: the fallback brings them all
    run = run_memstream(*xdist, "-v")
    assert run.result.ret == pytest.ExitCode.OK
    assert len(run.report["tests"]) == 31
    assert all(w["unrecoverable"] == 0 for w in run.report["workers"])
    assert sum(w["recovered"] for w in run.report["workers"]) == 31
    (long,) = [t for t in run.report["tests"] if "::test_long[" in t["nodeid"]]
    assert len(long["nodeid"]) == 8192
    assert long["nodeid"].startswith("test_long_ids.py::test_long[LLLL")
    assert "cut from 9029 characters" in long["nodeid"]
    assert long["growth"] >= 7 << 20
