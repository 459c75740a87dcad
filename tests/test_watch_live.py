"""Viewers of real `-n 2` runs, coming and going: what they show is what the run reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from watching import (
    DEADLINE,
    Lines,
    Project,
    Watch,
    assert_same_tests,
    assert_same_workers,
    quick_done,
    replay,
    report_totals,
    running,
)


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
    viewers = report["run"]["viewers"]  # three viewers, one snapshot each at least
    assert viewers["snapshots"] >= 3 and viewers["rejected"] == {}
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


def test_the_example_viewer_in_the_docs_works(project: Project) -> None:
    name = "tests/test_watch_live.py::test_the_example_viewer_in_the_docs_works"
    marker = f"<!-- tested by {name} -->"
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
    assert crashed["crashed_test"] == "test_crashing.py::test_dies"
    died = [v for k, v in state.items() if k.startswith("t/") and v["nodeid"].endswith("test_dies")]
    assert [v["kept"] for v in died] == [None]  # it never got to its teardown
