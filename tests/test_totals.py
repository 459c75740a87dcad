"""The run as the machine sees it: every worker's memory together, at its highest."""

from __future__ import annotations

import pytest
from runs import RunMemstream

MiB = 1 << 20

# Two tests on two workers hold 200 MiB at once, until the controller's own state has
# seen both (a plugin there opens the gate): the peak is a fact, not a hope.
CONTROLLER = """
import pathlib, threading, time
import pytest


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session):
    config = session.config
    if hasattr(config, "workerinput"):
        return
    controller = config.pluginmanager.get_plugin("memstream-controller")

    def watch():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if controller.state.totals.peak >= 400 << 20:
                break
            time.sleep(0.01)
        (config.rootpath / "seen").touch()

    threading.Thread(target=watch, daemon=True).start()
"""

# xdist's load scheduling gives each worker two tests at first: one of each pair.
TESTS = """
import time


def hold(request):
    data = b"x" * (210 << 20)
    gate = request.config.rootpath / "seen"
    deadline = time.monotonic() + 60
    while not gate.exists():
        assert time.monotonic() < deadline, "the controller never saw both"
        time.sleep(0.01)
    del data


def test_1_hold(request):
    hold(request)


def test_2_small():
    pass


def test_3_hold(request):
    hold(request)


def test_4_small():
    pass
"""


def test_the_runs_peak_names_the_tests_that_held_it(
    pytester: pytest.Pytester, run_memstream: RunMemstream
) -> None:
    pytester.makeconftest(CONTROLLER)
    pytester.makepyfile(test_peak=TESTS)
    run = run_memstream("-n", "2", "--dist=load")
    assert run.result.ret == pytest.ExitCode.OK, run.output
    facts = run.report["run"]
    assert facts["peak_total"] >= 420 * MiB
    held = facts["peak_total_tests"]
    assert sorted(h["nodeid"] for h in held) == [
        "test_peak.py::test_1_hold",
        "test_peak.py::test_3_hold",
    ]
    assert all(h["rss"] >= 210 * MiB for h in held)
    assert sum(h["rss"] for h in held) == facts["peak_total"]
    assert facts["started"] <= facts["peak_total_at"] <= facts["started"] + facts["duration"]
    assert facts["limit"] > 0 and facts["limit_source"]
    assert 0 < facts["available_min"] <= facts["limit"]
    timeline = facts["total_timeline"]
    assert max(sum(memory.values()) for _, memory in timeline) >= 400 * MiB
    run.result.stdout.fnmatch_lines(
        [
            "memstream: run peak 4??.?M total (2 workers) at 0:0? while test_?_hold "
            "(2??.?M, gw?), test_?_hold (2??.?M, gw?) ran; limit *, least headroom seen *",
        ]
    )
