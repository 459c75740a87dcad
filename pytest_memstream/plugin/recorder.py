"""The measuring side: every phase of every test that runs in this process.

Measured through the phase hooks, so that unittest and doctest items are measured too and
a fixture's cost lands in the phase where it is spent.  The wrappers are ``tryfirst`` so
that they enclose every other plugin's part of the phase.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Generator
from typing import TYPE_CHECKING

import pytest

from pytest_memstream.plugin.limits import DefaultLimit, Limit, LimitCheck, limits_of
from pytest_memstream.plugin.probe import MemoryProbe
from pytest_memstream.plugin.stream import CurrentTest, Stream
from pytest_memstream.plugin.tree import ProcessTree, TestTree
from pytest_memstream.protocol import stream as wire

if TYPE_CHECKING:
    from pytest_memstream.handover import WorkerTotals

#: How long closing may take to flush the stream (a worker's, or the local recorder's).
CLOSE_TIMEOUT = 3.0
#: A test that grew by this much is sent at once rather than with the next batch.
URGENT_GROWTH = 16 << 20


class Recorder:
    """Measures each phase of each test in this process and streams the figures.

    It also keeps every test's final record, packed, as the fallback that the controller
    uses to fill whatever the stream lost.
    """

    def __init__(
        self,
        stream: Stream,
        probe: MemoryProbe,
        limit: DefaultLimit | None = None,
        tree: ProcessTree | None = None,
    ) -> None:
        self._stream = stream
        #: The worker's descendants (None: the worker alone is measured).
        self._tree = tree
        #: Whether the test's thread had children at the last check (plugin/tree.py).
        self._children = False
        #: ``--memstream-limit``; the limits per test are known after collection.
        self._default_limit = limit
        self._limits: dict[str, Limit] = {}
        self._probe = probe
        #: The RSS at the last boundary.
        self._rss = 0
        #: Whether that boundary was the end of a test, which the next test starts from.
        self._chained = False
        self._index = -1
        self._test: CurrentTest | None = None
        #: Every ``end`` this process sent, packed: the fallback the controller fills from.
        self._fallback: list[bytes] = []
        self._pack = wire.packer()  # the test thread's own
        self.tests = 0
        hello = {
            "k": "hello",
            "t": time.time(),
            "pid": os.getpid(),
            "method": probe.method,
            "interval": stream.interval,
            "rss": probe.rss(),
            "platform": sys.platform,
        }
        # A name the sink would refuse is left out: the controller's word for it stands.
        with contextlib.suppress(ValueError):
            hello["host"] = wire.host_name(os.uname().nodename)
        stream.emit(stream.pack(hello))
        stream.start()

    @property
    def stream(self) -> Stream:
        return self._stream

    def samples(self) -> list[tuple[str, float, int]]:
        """The sampler's recent ``(phase, time, rss)`` of the current test, oldest first."""
        index = self._index
        return [(phase, t, rss) for i, phase, t, rss in list(self._stream.recent) if i == index]

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # Once the collection is final (every plugin's modifyitems done), as an xdist
        # worker's recorder, started at this point, is told its items: the same limits
        # with and without xdist.
        self.note_items(session.config, session.items)

    def note_items(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """Find the tests' memory limits.  A worker's recorder, registered during
        pytest_collection_finish, is told by its role: pluggy does not call a plugin
        registered during a hook in that same call."""
        # Once per run, so that a test without a limit pays nothing for limits.
        self._limits, bad = limits_of(items, self._default_limit)
        if self._limits or bad:
            config.pluginmanager.register(LimitCheck(self, self._limits, bad), "memstream-limits")

    # Everything below runs for every test: three boundaries a test, the rest left to the
    # stream.  A phase runs from one boundary to the next; the teardown's is taken once
    # pytest let go of the fixtures, and the next test starts from it (why there:
    # docs/design-notes.md, "Phase boundaries").

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, object, object]:
        self._index += 1
        nodeid = item.nodeid
        limit = self._limits.get(nodeid) if self._limits else None
        if self._chained:
            rss = self._rss
        else:
            rss = self._rss = self._probe.start()
        test = CurrentTest(
            self._index, nodeid, time.time(), rss, None if limit is None else limit.as_wire()
        )
        tree = self._tree
        if tree is not None and (self._children or (not self._chained and tree.any_children())):
            # Processes from before (a server a fixture started) stand in its start.
            with tree.lock:
                test.tree = TestTree(rss, tree.read())
        self._test = self._stream.test = test
        try:
            return (yield)
        finally:
            self._stream.test = None
            self._chained = self._end_teardown(test)
            if tree is not None:
                self._end_tree(test, tree)
            self._end(test)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_setup(self) -> Generator[None, object, object]:
        test = self._test
        if test is not None:
            if test.teardown is not None:
                # A rerun (pytest-rerunfailures runs the protocol again inside this
                # one): the last run's teardown ends here, and the test's figures are
                # this run's alone, even if it never gets as far as the last one did.
                self._end_teardown(test)
                test.phases = {}
            test.phase = "setup"
        started = time.perf_counter()
        try:
            return (yield)
        finally:
            self._boundary("setup", time.perf_counter() - started)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_call(self) -> Generator[None, object, object]:
        started = time.perf_counter()
        if self._test is not None:
            self._test.phase = "call"
        try:
            return (yield)
        finally:
            self._boundary("call", time.perf_counter() - started)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_teardown(self) -> Generator[None, object, object]:
        started = time.perf_counter()
        test = self._test
        if test is not None:
            test.phase = "teardown"
        try:
            return (yield)
        finally:
            if test is not None:
                # Measured when the protocol ends (see above), or a rerun starts.
                test.teardown = time.perf_counter() - started

    def _boundary(self, phase: str, duration: float) -> None:
        test = self._test
        if test is None:
            return  # a phase run outside a test's protocol: nothing to measure it from
        before = self._rss
        after, peak = self._probe.boundary()
        self._rss = after
        if test.sampled_peak:  # a long phase: never below what the sampler saw
            peak = max(peak, test.sampled_peak)
            test.sampled_peak = 0
        # A tuple of numbers: untracked by the garbage collector, it cannot lengthen full
        # collections while it waits in the queue.
        test.phases[phase] = (before, after, max(peak, before, after), duration)

    def _end_teardown(self, test: CurrentTest, final: bool = True) -> bool:
        """Take the boundary that ends ``test``'s teardown; False if none is due.

        Not ``final``, the teardown is measured so far and stays open: a limit checked
        as pytest reports the teardown (see LimitCheck) sees it, and the final boundary
        takes it on from there.
        """
        duration = test.teardown
        if duration is None:
            return False  # no teardown ran since the last one ended
        if final:
            test.teardown = None
        # Figures of this teardown already there were measured so far, for a limit.
        so_far = test.phases.get("teardown")
        self._boundary("teardown", duration)
        if so_far is not None:
            _, after, peak, _ = test.phases["teardown"]
            test.phases["teardown"] = (so_far[0], after, max(peak, so_far[2]), duration)
        return True

    def _end_tree(self, test: CurrentTest, tree: ProcessTree) -> None:
        """The one cheap check of a test without processes; the figures of one with."""
        self._children = tree.any_children()
        self._update_tree(test, tree, read=self._children)

    def tree_so_far(self) -> tuple[int, int] | None:
        """``(growth, peak)`` of the current test's process tree up to now, None if it
        started no process (for a limit on it; a reading: a few syscalls a process)."""
        test, tree = self._test, self._tree
        if test is None or tree is None or (test.tree is None and not tree.any_children()):
            return None
        if not self._update_tree(test, tree, read=True):
            return None
        assert test.tree is not None
        return test.tree.peak - test.tree.start, test.tree.peak

    def _update_tree(self, test: CurrentTest, tree: ProcessTree, read: bool) -> bool:
        """Bring ``test``'s tree figures up to now: a reading of the tree if ``read``, and
        the children reaped since the last; False if it has no tree to speak of."""
        reaped = tree.take_reaped()
        if (test.tree is None and not read and not reaped) or not test.phases:
            return False
        worker_peak = max(figures[2] for figures in test.phases.values())
        with tree.lock:
            if test.tree is None:
                test.tree = TestTree(test.rss, None)
            if read:
                test.tree.observe(self._rss, tree.read())
            test.tree.reaped(reaped, worker_peak)
            test.tree.finish(worker_peak)
        return True

    def measure_so_far(self) -> dict[str, tuple[int, int, int, float]]:
        """Measure a teardown that has run up to now (a boundary: two syscalls or three);
        return ``phase -> (rss_before, rss_after, peak_rss, duration)`` of the current
        test so far."""
        test = self._test
        if test is None:
            return {}
        self._end_teardown(test, final=False)
        return test.phases

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        test = self._test
        if test is not None and report.nodeid == test.nodeid:
            test.outcomes[report.when] = report.outcome
            if hasattr(report, "wasxfail"):
                # pytest's mark of an xfail (reported skipped) or an xpass (passed), kept
                # under a key of its own: a phase's outcome goes to the sink as it is.
                test.outcomes["xfail"] = "xfailed" if report.skipped else "xpassed"
            test.stops[report.when] = report.stop

    def _end(self, test: CurrentTest) -> None:
        self._test = None
        phases = test.phases
        if not phases:
            return
        outcome = _test_outcome(test.outcomes)
        end = wire.end_message(
            time.time(),
            test.index,
            wire.cut_nodeid(test.nodeid),
            outcome,
            self._probe.method,
            test.started,
            phases,
            None if test.tree is None else test.tree.figures(),
        )
        packed = self._pack(end)  # numbered by the stream; the fallback keeps q = 0
        self._fallback.append(packed)
        peak = 0
        for figures in phases.values():
            if figures[2] > peak:
                peak = figures[2]
        urgent = peak - test.rss >= URGENT_GROWTH or outcome in ("failed", "error")
        test.ended = True
        self._stream.emit(packed, urgent=urgent)
        self.tests += 1

    def close(self, timeout: float = CLOSE_TIMEOUT) -> WorkerTotals:
        """Stop streaming; return what the controller needs to check and fill the stream."""
        self._stream.stop(self.tests, timeout)
        if self._tree is not None:
            self._tree.close()
        return {
            "version": wire.VERSION,
            "pid": os.getpid(),
            "sent": self._stream.sent,
            "dropped": self._stream.dropped,
            "last_seq": self._stream.last_seq,
            "tests": self.tests,
            "records": b"".join(self._fallback),
        }


def _test_outcome(outcomes: dict[str, str]) -> str:
    """The test's outcome as pytest's summary counts it."""
    if outcomes.get("call") == "failed":
        return "failed"
    if "failed" in outcomes.values():
        return "error"
    if "xfail" in outcomes:
        return outcomes["xfail"]  # a strict xpass is a failure above, as pytest counts it
    if "skipped" in outcomes.values():
        return "skipped"
    return "passed"
