"""Which of a worker's sequence numbers the sink received, and how many it lost.

A worker numbers its messages 0, 1, 2, ... and sends them in frames, each headed by its
first number and by how many messages the worker's own queue had refused so far
(``dropped``): numbers skipped by a refused frame are the worker's drops, the others the
sink's losses.  A worker's frames arrive in order, over one connection, but the
bookkeeping does not rely on it: a frame with a forged or corrupt number (from a peer
that holds the run's keys) occupies its own numbers only.  It can neither lock the
worker's real stream out as "replays" nor, once the worker's own count arrives in
``workeroutput``, make the loss look larger than it was.
"""

from __future__ import annotations

from itertools import pairwise

#: Runs of numbers kept per worker; beyond, the two closest are merged (the numbers
#: between them are then lost for good).
MAX_RUNS = 32
#: The largest jump the sink believes: a worker's queue holds at most its high-water mark
#: of frames (1000) of at most a batch (4096) of messages each, so no more can vanish on
#: the way unannounced.
MAX_JUMP = 1 << 22

# A run: [first number, one past the last, dropped before its first frame, dropped
# before its last frame, messages received in it].
_START, _END, _DROPPED_FIRST, _DROPPED_LAST, _RECEIVED = range(5)


class Received:
    """The sequence numbers received from one worker, as sorted runs."""

    __slots__ = ("_merged_lost", "runs")

    def __init__(self) -> None:
        self.runs: list[list[int]] = []
        self._merged_lost = 0

    def claim(self, first: int, count: int, dropped: int) -> list[tuple[int, int]] | str:
        """Take a frame of ``count`` messages numbered from ``first``: the parts of it not
        received before, as ``(start, end)`` pairs (a number received twice is a replay),
        or why none of it is taken: ``replay`` (every number received before) or
        ``sequence`` (numbers no real worker sends: a jump too far ahead, or more drops
        than numbers before them)."""
        runs = self.runs
        end = first + count
        i = len(runs)
        while i and runs[i - 1][_START] > first:
            i -= 1
        if dropped > first or first - (runs[i - 1][_END] if i else 0) > MAX_JUMP:
            return "sequence"
        parts = []
        cursor = first
        for run in runs[max(0, i - 1) :]:
            if run[_START] >= end:
                break
            if run[_END] <= cursor:
                continue
            if run[_START] > cursor:
                parts.append((cursor, run[_START]))
            cursor = run[_END]
        if cursor < end:
            parts.append((cursor, end))
        if not parts:
            return "replay"
        for start, stop in parts:
            self._add(start, stop, dropped)
        return parts

    def _add(self, start: int, end: int, dropped: int) -> None:
        """Numbers ``start`` to ``end`` (not received before) are received now."""
        runs = self.runs
        i = len(runs)
        while i and runs[i - 1][_START] > start:
            i -= 1
        before = runs[i - 1] if i else None
        after = runs[i] if i < len(runs) else None
        if before is not None and before[_END] == start:
            before[_END], before[_DROPPED_LAST] = end, dropped
            before[_RECEIVED] += end - start
            if after is not None and after[_START] == end:
                # The numbers between two runs arrived: one run again.
                before[_END], before[_DROPPED_LAST] = after[_END], after[_DROPPED_LAST]
                before[_RECEIVED] += after[_RECEIVED]
                del runs[i]
            return
        if after is not None and after[_START] == end:
            after[_START], after[_DROPPED_FIRST] = start, dropped
            after[_RECEIVED] += end - start
            return
        # A gap: numbers the worker dropped, or that the sink lost; and a run that a
        # frame with a forged number makes stays its own, never taking the numbers
        # around it.
        runs.insert(i, [start, end, dropped, dropped, end - start])
        if len(runs) > MAX_RUNS:
            self._merge_closest()

    def _merge_closest(self) -> None:
        """Merge two neighbouring runs: those with the fewest lost numbers between them,
        and of those the closest (the gaps a worker's drops explain go first)."""
        runs = self.runs

        def cost(n: int) -> tuple[int, int]:
            before, run = runs[n - 1], runs[n]
            return max(0, _gap(before, run)), run[_START] - before[_END]

        i = min(range(1, len(runs)), key=cost)
        before, run = runs[i - 1], runs.pop(i)
        self._merged_lost += max(0, _gap(before, run))
        before[_END], before[_DROPPED_LAST] = run[_END], run[_DROPPED_LAST]
        before[_RECEIVED] += run[_RECEIVED]

    def dropped(self) -> int:
        """The worker's drops as its latest frame told them."""
        return self.runs[-1][_DROPPED_LAST] if self.runs else 0

    def lost(self) -> int:
        """Messages the worker numbered before the last one received, neither received
        nor dropped by the worker."""
        runs = self.runs
        if not runs:
            return 0
        lost = self._merged_lost + max(0, runs[0][_START] - runs[0][_DROPPED_FIRST])
        for before, run in pairwise(runs):
            lost += max(0, _gap(before, run))
        return lost

    def has(self, seq: int) -> bool:
        return any(run[_START] <= seq < run[_END] for run in self.runs)

    def received_upto(self, last: int) -> int:
        """Messages received in the runs that start at or below ``last``."""
        return sum(run[_RECEIVED] for run in self.runs if run[_START] <= last)


def _gap(before: list[int], run: list[int]) -> int:
    """Numbers between two runs that the worker did not say it dropped (negative if it
    says it dropped more: a frame with forged figures)."""
    return (run[_START] - before[_END]) - (run[_DROPPED_FIRST] - before[_DROPPED_LAST])
