"""What the sink keeps of one test and of one worker: plain records, no locking (the
run's state, collector/state.py, holds them under its lock)."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_memstream.collector.numbers import Received
from pytest_memstream.protocol import PHASES
from pytest_memstream.protocol.stream import Message

#: Recent samples kept per running test: what a crash report and a viewer show.
SAMPLES_KEPT = 120
#: Peaks this close to a test's peak count as the same plateau.
PLATEAU = 1 << 20


def walk_phases(phases: dict[str, Sequence[Any]]) -> tuple[int, int, int, str]:
    """``(rss_start, rss_end, peak_rss, peak_phase)`` of a test's phases (at least one),
    in their order: the one place a test's figures are made from its phases'."""
    order = [name for name in PHASES if name in phases]
    start = phases[order[0]][0]
    peak = start
    for name in order:
        if phases[name][2] > peak:
            peak = phases[name][2]
    # A plateau that spans phases (a fixture's memory, alive during the call) belongs to
    # the phase that reached it first.
    plateau = peak - PLATEAU
    peak_phase = next((name for name in order if phases[name][2] >= plateau), "")
    return start, phases[order[-1]][1], peak, peak_phase


@dataclass(slots=True)
class TestRecord:
    """One test's figures as the report shows them; sizes in bytes."""

    nodeid: str
    worker: str
    index: int
    outcome: str
    method: str
    #: ``stream``, ``fallback`` (the worker's own copy), or ``xdist`` (a crashed test
    #: known only from xdist's crash report: without figures).
    source: str
    #: ``phase -> [rss_before, rss_after, peak_rss, duration]``
    phases: dict[str, Sequence[Any]]
    started: float
    finished: float
    rss_start: int = 0
    rss_end: int = 0
    peak_rss: int = 0
    peak_phase: str = ""
    growth: int = 0
    #: None for a test that never finished its teardown (it crashed, or the run was
    #: interrupted): what a test kept is only known once its fixtures are gone.
    kept: int | None = None
    #: Only for a crashed test: its last samples and how fast RSS was climbing (bytes/s).
    samples: Sequence[list[Any]] = ()
    climb_rate: float = 0.0
    #: ``[size, on]`` if the test had a memory limit and crashed (known from ``start``).
    limit: list[Any] | None = None
    #: What its child processes came to (protocol.stream.TREE_FIELDS), None if it had none.
    tree: dict[str, Any] | None = None
    #: The worker's and its descendants' memory at its highest, and over the start of setup.
    tree_peak: int = 0
    tree_growth: int = 0

    def __post_init__(self) -> None:
        phases = self.phases
        if phases:
            start, end, peak, self.peak_phase = walk_phases(phases)
            self.rss_start, self.rss_end, self.peak_rss = start, end, peak
            self.growth = peak - start
            if "teardown" in phases:
                self.kept = end - start
        self.set_tree(self.tree)

    def set_tree(self, tree: dict[str, Any] | None) -> None:
        """Its tree's figures; without child processes the tree is the worker alone."""
        self.tree = tree
        if tree is None:
            self.tree_peak, self.tree_growth = self.peak_rss, self.growth
        else:
            self.tree_peak = max(tree["peak"], self.peak_rss)
            self.tree_growth = self.tree_peak - tree["start"]

    @classmethod
    def from_end(cls, worker: str, message: Message, source: str) -> TestRecord:
        m = message
        record = cls(m["id"], worker, m["i"], m["o"], m["m"], source, m["p"], m["t0"], m["t"])
        tree = m.get("tree")
        if tree is not None:
            record.set_tree(tree)
        return record


@dataclass(slots=True)
class RunningTest:
    """A test that has started on a worker and not yet ended, as far as the stream says."""

    index: int
    nodeid: str
    started: float
    rss_start: int
    phase: str = "setup"
    rss: int = 0
    peak: int = 0
    phases: dict[str, Sequence[Any]] = field(default_factory=dict)
    samples: deque[list[Any]] = field(default_factory=lambda: deque(maxlen=SAMPLES_KEPT))
    limit: list[Any] | None = None
    #: The worker's and its descendants' total at the start and now, where it has any.
    tree_start: int | None = None
    tree: int = 0
    tree_peak: int = 0
    #: The most descendants a sample counted.
    processes: int = 0

    def climb_rate(self, window: float = 2.0) -> float:
        """Bytes per second over the last ``window`` seconds of samples (0 if unknown)."""
        if len(self.samples) < 2:
            return 0.0
        last_t, last_rss = self.samples[-1]
        for t, rss in self.samples:
            if last_t - t <= window:
                return (last_rss - rss) / (last_t - t) if last_t > t else 0.0
        return 0.0


@dataclass(slots=True)
class WorkerState:
    id: str
    pid: int = 0
    method: str = ""
    platform: str = ""
    #: The host it runs on: the controller's word, then the worker's own (its hello).
    host: str = ""
    #: expected → running → complete | recovered | crashed | incomplete
    status: str = "expected"
    error: str = ""
    #: What ended it, where known (``oom-killer``, a signal's name); see WorkerEnd.
    killed_by: str | None = None
    received: int = 0
    #: The sequence numbers received (see collector/numbers.py).
    numbers: Received = field(default_factory=Received)
    #: Messages the worker sent that the sink never accepted; ``dropped`` are those the
    #: worker's own queue refused (frame headers say so, and ``workeroutput`` at the end).
    lost: int = 0
    dropped: int = 0
    sent: int = 0
    recovered: int = 0
    unrecoverable: int = 0
    max_rss: int = 0
    bye: bool = False
    #: When the sink last applied a message from it (or admitted it), monotonic seconds.
    heard: float = 0.0
    #: Tests whose end arrived over the stream.
    ended: int = 0
    running: RunningTest | None = None
    #: Its latest RSS, its process tree's total (None while its test has no process),
    #: and the test it was running then (-1: none known); its last ended test's peak.
    last_peak: int = 0
    rss: int = 0
    tree: int | None = None
    current: int = -1
    #: The id of the test that was running when the worker died.
    crashed: str = ""
    #: It could not measure (its recorder never started): its tests ran unmeasured.
    unmeasured: bool = False
    #: Highest test index seen, so that a test known only from xdist gets a fresh one.
    last_index: int = -1
    #: Tests that started but whose end never arrived (index -> nodeid).
    unfinished: dict[int, str] = field(default_factory=dict)

    @property
    def held(self) -> int:
        """Its latest figure: its process tree's total while it has processes, else its RSS."""
        return self.tree if self.tree is not None else self.rss
