"""The run as the machine sees it: the total memory of every worker's process tree.

The sink applies each worker's latest figure (its RSS, or its process tree's total where
its test started processes) from samples, heartbeats and test boundaries; the total is
their sum at each change.  Kept: the peak and the tests running at that moment, a
timeline for the HTML report (bounded: it thins itself), and the lowest headroom the
machine or the run's cgroup had (read at most once a second, and at each new peak at
most once every 50 ms).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: Timeline points kept; past it, every other one is dropped and the spacing doubles.
TIMELINE_POINTS = 4000
#: Shortest time between two timeline points (seconds of the workers' clocks).
TIMELINE_EVERY = 0.1
#: Shortest time between two readings of the headroom.
HEADROOM_EVERY = 1.0
#: ... and while the total climbs to new peaks.
HEADROOM_AT_PEAK_EVERY = 0.05


@dataclass
class Running:
    """A worker's part of the total at one moment: the test it ran, and its figure."""

    worker: str
    index: int
    nodeid: str
    memory: int


@dataclass
class RunTotals:
    """What the workers held together, over the run."""

    #: Reads the headroom (the machine's or the cgroup's), None where it cannot.
    headroom: Callable[[], int | None] | None = None
    peak: int = 0
    peak_at: float = 0.0
    #: Who held what at the peak (node ids of tests known only by index are filled in
    #: when the report is made).
    peak_running: list[Running] = field(default_factory=list)
    #: ``(time, {worker: memory})``, oldest first.
    timeline: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    available_min: int | None = None
    #: The latest headroom read, and the memory the run may have (the controller sets it).
    available: int | None = None
    limit: int | None = None
    #: The total now.
    total: int = 0
    _every: float = TIMELINE_EVERY
    _headroom_at: float = -HEADROOM_EVERY

    def note(self, when: float, memory: dict[str, int], running: list[Running]) -> None:
        """The workers' figures after a change (``when``: the workers' clock)."""
        total = self.total = sum(memory.values())
        peak = total > self.peak
        if peak:
            self.peak, self.peak_at, self.peak_running = total, when, running
        timeline = self.timeline
        # A new peak is always a point: the timeline must show what the report says.
        if not timeline or peak or when - timeline[-1][0] >= self._every:
            timeline.append((when, memory))
            if len(timeline) > TIMELINE_POINTS:
                del timeline[1::2]
                self._every *= 2
        self._read_headroom(HEADROOM_AT_PEAK_EVERY if peak else HEADROOM_EVERY)

    def _read_headroom(self, every: float) -> None:
        now = time.monotonic()
        if self.headroom is None or now - self._headroom_at < every:
            return
        self._headroom_at = now
        headroom = self.available = self.headroom()
        if headroom is not None and (self.available_min is None or headroom < self.available_min):
            self.available_min = headroom
