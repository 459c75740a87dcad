"""The sink's aggregate: sequence numbers, recovery from the fallback, crashed tests."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from pytest_memstream.collector import report
from pytest_memstream.collector.records import TestRecord as Record
from pytest_memstream.collector.records import walk_phases
from pytest_memstream.collector.report import (
    Snapshot,
    summary_lines,
    summary_title,
    write_report,
)
from pytest_memstream.collector.state import RunState
from pytest_memstream.plugin.probe import SampledPeak
from pytest_memstream.protocol import PHASES
from pytest_memstream.protocol import stream as wire

MiB = 1 << 20


class Worker:
    """Builds one worker's messages, and frames them with consecutive sequence numbers."""

    def __init__(self, worker: str = "gw0") -> None:
        self.worker = worker
        self.seq = 0
        self.clock = 1000.0
        self.ends: list[list[Any]] = []

    def msg(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.clock += 1
        return {"k": kind, "t": self.clock, **fields}

    def test(self, index: int, growth: int = 0) -> list[Any]:
        start = 100 * MiB
        begin = self.msg("start", i=index, id=f"t.py::test_{index}", rss=start)
        phases = {"setup": (start, start, start, 0.0), "call": (start, start, start + growth, 0.1)}
        self.clock += 1
        end = wire.end_message(
            self.clock, index, f"t.py::test_{index}", "passed", "hwm", 1000.0, phases
        )
        self.ends.append(end)
        return [begin, end]

    def frame(self, batch: list[Any], dropped: int = 0) -> tuple[wire.Header, list[Any]]:
        """``batch`` as a frame of this worker, numbered after the last one."""
        header = wire.Header(self.worker, self.seq, len(batch), dropped)
        self.seq += len(batch)
        return header, batch

    def fallback(self) -> dict[str, Any]:
        return {
            "records": b"".join(wire.pack_message(e) for e in self.ends),
            "sent": self.seq,
            "dropped": 0,
            "last_seq": self.seq - 1,
            "tests": len(self.ends),
        }


def test_gaps_are_counted_and_recovered_from_the_fallback() -> None:
    state, w = RunState(), Worker()
    state.expect("gw0")
    batches = [w.test(i, growth=i * MiB) for i in range(5)]
    for i, batch in enumerate(batches):
        frame = w.frame(batch)
        if i != 2:  # the frame with test 2 is lost on the way
            state.accept(*frame)
    assert state.workers["gw0"].lost == 2
    assert ("gw0", 2) not in state.tests
    state.finish_worker("gw0", w.fallback(), None)
    worker = state.workers["gw0"]
    assert worker.status == "recovered"
    assert worker.recovered == 1
    assert worker.unrecoverable == 0
    assert state.tests[("gw0", 2)].source == "fallback"
    assert state.tests[("gw0", 2)].growth == 2 * MiB
    assert state.tests[("gw0", 3)].source == "stream"


def test_a_lost_tail_counts_as_lost() -> None:
    state, w = RunState(), Worker()
    state.expect("gw0")
    state.accept(*w.frame(w.test(0)))
    w.frame(w.test(1))  # never arrives
    state.finish_worker("gw0", w.fallback(), None)
    assert state.workers["gw0"].lost == 2
    assert state.workers["gw0"].recovered == 1


def test_replays_and_strangers_are_rejected() -> None:
    state, w = RunState(), Worker()
    state.expect("gw0")
    frame = w.frame(w.test(0))
    state.accept(*frame)
    state.accept(*frame)  # replayed
    stranger = Worker("gw7")
    state.accept(*stranger.frame(stranger.test(0)))  # a worker the controller never started
    assert state.rejects == {"replay": 1, "unknown-worker": 1}
    assert len(state.tests) == 1
    assert state.workers["gw0"].received == 2


def test_bad_messages_in_a_good_frame_are_counted_alone() -> None:
    state, w = RunState(), Worker()
    state.expect("gw0")
    good = w.test(0)
    state.accept(*w.frame([good[0], {"k": "later"}, "junk", good[1]]))
    assert state.rejects == {"schema": 2}
    assert ("gw0", 0) in state.tests


def test_a_crashed_worker_keeps_its_finished_tests_and_names_the_running_one() -> None:
    state, w = RunState(), Worker()
    state.expect("gw0")
    state.accept(*w.frame(w.test(0, growth=5 * MiB)))
    state.accept(*w.frame([w.msg("start", i=1, id="t.py::test_hungry", rss=100 * MiB)]))
    samples = [[2000.0 + s, (100 + 50 * s) * MiB] for s in range(5)]
    state.accept(*w.frame([w.msg("sample", i=1, ph="call", s=samples)]))
    state.finish_worker("gw0", None, "Not properly terminated")
    worker = state.workers["gw0"]
    assert worker.status == "crashed"
    assert worker.crashed == "t.py::test_hungry"
    hungry = state.tests[("gw0", 1)]
    assert hungry.outcome == "crashed"
    assert hungry.rss_end == 300 * MiB
    assert hungry.growth == 200 * MiB
    assert hungry.peak_phase == "call"
    assert hungry.climb_rate == 50 * MiB
    assert hungry.kept is None  # it never got to its teardown
    assert state.tests[("gw0", 0)].growth == 5 * MiB


def test_xdist_crash_report_fills_in_when_the_stream_never_said() -> None:
    state = RunState()
    state.expect("gw1")
    state.finish_worker("gw1", None, "crashed")
    state.note_crashed_test("gw1", "t.py::test_x")
    state.note_crashed_test("gw1", "t.py::test_x")  # said once only
    crashed = [t for t in state.tests.values() if t.outcome == "crashed"]
    assert [t.nodeid for t in crashed] == ["t.py::test_x"]
    # Known from xdist alone: nothing was recovered, and there are no figures.
    assert (crashed[0].source, crashed[0].kept, crashed[0].phases) == ("xdist", None, {})
    assert state.workers["gw1"].recovered == 0


def test_sampled_peak_probe_reports_the_largest_sample() -> None:
    probe = SampledPeak()
    before = probe.start()
    probe.observe(before + 500 * MiB)
    after, peak = probe.boundary()
    assert peak == before + 500 * MiB
    assert probe.method == "sampled"
    assert after > 0


@pytest.mark.parametrize("sort", ["growth", "peak", "kept"])
@pytest.mark.parametrize("top", [1, 5, 0])
def test_a_summary_only_report_prints_what_the_whole_one_does(sort: str, top: int) -> None:
    # Without --memstream-json/-html/baselines the controller builds only the tests the
    # summary shows; ties, a crashed test and the counts must come out the same.
    state = RunState()
    for worker in ("gw0", "gw1"):
        w = Worker(worker)
        state.expect(worker)
        for i in range(40):
            state.accept(*w.frame(w.test(i, growth=(i % 7) * MiB)))  # many ties
        state.accept(*w.frame([w.msg("start", i=40, id="t.py::test_dies", rss=100 * MiB)]))
        state.finish_worker(worker, None, "crashed")
    run = {"started": 1000.0, "duration": 1.0, "complete": True}
    whole = Snapshot(state, run).document()
    summary = Snapshot(state, run).document((sort, top))
    assert whole["run"]["tests"] == summary["run"]["tests"] == 82
    if top:
        assert len(summary["tests"]) < len(whole["tests"])
    for verbosity in (-1, 0, 1):
        assert summary_lines(summary, sort, top, verbosity) == summary_lines(
            whole, sort, top, verbosity
        )
    assert summary_title(summary, sort, top) == summary_title(whole, sort, top)


def test_the_json_file_is_the_whole_document_byte_for_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Snapshot.write_json writes each test without building its entry: it must write
    # exactly what json.dumps makes of the whole document, whatever the tests hold, and
    # in however many pieces.
    monkeypatch.setattr(report, "_CHUNK", 4)
    state = RunState()
    nodeids = [
        "t.py::test_plain",
        't.py::test_quoted["a\\b"]',
        "t.py::test_unicode[\u00e9t\u00e9-\u2603-\U0001f600]",
        "t.py::test_control[\x01\t\n]",
        "t.py::Test::test_" + "long" * 300,
    ]
    workers = {name: Worker(name) for name in ("gw0", "gw1", "gw10")}
    for worker in workers:
        state.expect(worker)
    for i, nodeid in enumerate(nodeids):
        for n, w in enumerate(workers.values()):
            start = (100 + i) * MiB + n * 4096
            phases: dict[str, tuple[int, int, int, float]] = {
                "setup": (start, start + 8192, start + 12288, 0.000123),
                "call": (start + 8192, start - 4096, start + 300 * MiB, 1.5e-06),
                "teardown": (start - 4096, start, start, 12.25),
            }
            if i == 1:
                del phases["call"]  # a skipped test
            outcome = ("passed", "skipped", "failed", "error", "passed")[i]
            end = wire.end_message(1000.5 + i, i, nodeid, outcome, "hwm", 1000.0 + i / 3, phases)
            state.accept(*w.frame([w.msg("start", i=i, id=nodeid, rss=start), end]))
            w.ends.append(end)
    lost = Worker("gw2")
    state.expect("gw2")
    lost.test(0, growth=3 * MiB)  # never streamed: filled in from the fallback
    state.finish_worker("gw2", lost.fallback() | {"tests": 1}, None)
    dying = workers["gw1"]
    begin = dying.msg("start", i=9, id="t.py::test_dies", rss=100 * MiB, lim=[1, "peak"])
    state.accept(*dying.frame([begin]))
    samples = [[2000.0 + s / 7, (100 + 50 * s) * MiB] for s in range(5)]
    state.accept(*dying.frame([dying.msg("sample", i=9, ph="call", s=samples)]))
    state.finish_worker("gw1", None, "Not properly terminated")
    state.finish_worker("gw10", None, "crashed")
    state.note_crashed_test("gw10", "t.py::test_named_by_xdist")
    run = {"started": 1000.0, "duration": 1.0 / 3, "complete": False, "stopped": "\u2603"}

    snapshot = Snapshot(state, run)
    streamed, dumped = tmp_path / "streamed.json", tmp_path / "dumped.json"
    snapshot.write_json(streamed)
    write_report(snapshot.document(), dumped)
    assert streamed.read_bytes() == dumped.read_bytes()
    document = json.loads(streamed.read_text())
    assert len(document["tests"]) == 3 * len(nodeids) + 1 + 2
    assert {t["source"] for t in document["tests"]} == {"stream", "fallback", "xdist"}
    # Written the long way: a test without a teardown, and a crashed one, keep nothing known.
    assert [t["kept"] for t in document["tests"] if t["source"] == "fallback"] == [None]
    assert {t["kept"] for t in document["tests"] if t["outcome"] == "crashed"} == {None}
    assert {t["outcome"] for t in document["tests"]} >= {"crashed", "skipped", "error"}
    # No stray file beside it: the file was written to a temporary name and renamed.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dumped.json", "streamed.json"]


def test_a_worker_not_down_when_the_run_ends_is_incomplete_even_if_never_heard() -> None:
    # A worker says hello only once it has sent its collection: one stopped while
    # collecting has sent nothing, and must not stay "expected" in the report.
    state, w = RunState(), Worker("gw0")
    state.expect("gw0")
    state.expect("gw1")
    state.accept(*w.frame([w.msg("hello", pid=1, method="hwm", interval=0.1, rss=MiB,
                                  platform="linux")]))  # fmt: skip
    state.settle_unfinished()
    assert {w.id: (w.status, w.error) for w in state.workers.values()} == {
        "gw0": ("incomplete", "no workeroutput"),
        "gw1": ("incomplete", "no workeroutput"),
    }


@pytest.mark.parametrize(
    ("peaks", "phase"),
    [
        ((100, 100, 100), "setup"),  # nothing happened: the first phase
        ((100, 300, 120), "call"),
        ((100, 120, 300), "teardown"),
        ((300, 300, 100), "setup"),  # a fixture's plateau, alive during the call
        ((100, 300, 300), "call"),
        ((250, 300, 100), "call"),  # more than a plateau's width apart
        ((90, 90, 90), ""),  # below the start (never sent by a worker): no phase
    ],
)
def test_a_tests_figures_are_the_same_with_three_phases_or_fewer(
    peaks: tuple[int, int, int], phase: str
) -> None:
    # The sink takes a shortcut for the usual three phases: it must agree with the
    # general path, which a test that lost its teardown (or its call) takes.
    start = 100 * MiB
    figures: dict[str, Sequence[Any]] = {
        name: [start, start + 2 * MiB * n, peak * MiB, 0.1]
        for n, (name, peak) in enumerate(zip(PHASES, peaks, strict=True), start=1)
    }
    three = Record("t::x", "gw0", 0, "passed", "hwm", "stream", figures, 1.0, 2.0)
    # The general path, on the same test without its teardown.
    two = Record(
        "t::x", "gw0", 0, "passed", "hwm", "stream", dict(list(figures.items())[:2]), 1.0, 2.0
    )
    assert three.peak_phase == phase
    figures_walked = (three.rss_start, three.rss_end, three.peak_rss, three.peak_phase)
    assert figures_walked == walk_phases(figures)
    assert three.rss_start == start
    assert three.peak_rss == max(start, *(p * MiB for p in peaks))
    assert three.growth == three.peak_rss - start
    assert (three.rss_end, three.kept) == (start + 6 * MiB, 6 * MiB)
    assert two.peak_rss == max(start, peaks[0] * MiB, peaks[1] * MiB)
    assert two.rss_end == start + 4 * MiB
    assert two.kept is None  # what a test kept is known once its teardown is over
    if phase in ("setup", "call") and peaks[2] * MiB <= two.peak_rss:
        assert two.peak_phase == phase
