"""The measuring side: every phase of every test that runs in this process.

Measured through the phase hooks, so that unittest and doctest items are measured too and
a fixture's cost lands in the phase where it is spent.  The wrappers are ``tryfirst`` so
that they enclose every other plugin's part of the phase.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Generator
from typing import Any

import msgpack
import pytest

from pytest_memstream import protocol
from pytest_memstream.plugin.limits import Limit, LimitCheck, limit_of
from pytest_memstream.plugin.probe import MemoryProbe
from pytest_memstream.plugin.stream import Stream

#: A test that grew by this much is sent at once rather than with the next batch.
URGENT_GROWTH = 16 << 20


class Recorder:
    """Measures each phase of each test in this process and streams the figures.

    It also keeps every test's final record, packed, as the fallback that the controller
    uses to fill whatever the stream lost.
    """

    def __init__(self, stream: Stream, probe: MemoryProbe, limit: int | None = None) -> None:
        self._stream = stream
        #: ``--memstream-limit``; the limits per test are known after collection.
        self._default_limit = limit
        self._limits: dict[str, Limit] = {}
        self._probe = probe
        self._last_rss: int | None = None
        self._index = -1
        self._nodeid = ""
        self._started = 0.0
        self._phases: dict[str, list[Any]] = {}
        self._outcomes: dict[str, str] = {}
        self._fallback = msgpack.Packer(autoreset=False, use_bin_type=True)
        self.tests = 0
        stream.emit(
            "hello",
            {
                "pid": os.getpid(),
                "method": probe.method,
                "interval": stream.interval,
                "rss": probe.rss(),
                "platform": sys.platform,
            },
        )
        stream.start()

    @property
    def stream(self) -> Stream:
        return self._stream

    @property
    def phases(self) -> dict[str, list[Any]]:
        """``phase -> [rss_before, rss_after, peak_rss, duration]`` of the current test."""
        return self._phases

    def samples(self) -> list[tuple[str, float, int]]:
        """The sampler's recent ``(phase, time, rss)`` of the current test, oldest first."""
        index = self._index
        return [(phase, t, rss) for i, phase, t, rss in list(self._stream.recent) if i == index]

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        # Once per run, so that a test without a limit pays nothing for limits.
        bad: dict[str, str] = {}
        for item in items:
            try:
                limit = limit_of(item, self._default_limit)
            except ValueError as exc:
                bad[item.nodeid] = str(exc)
                continue
            if limit is not None:
                self._limits[item.nodeid] = limit
        if self._limits or bad:
            config.pluginmanager.register(LimitCheck(self, self._limits, bad), "memstream-limits")

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, object, object]:
        self._index += 1
        self._nodeid = item.nodeid
        self._phases = {}
        self._outcomes = {}
        self._started = time.time()
        # Each /proc read lets another thread take the GIL: read only what is not known.
        # The RSS now is the RSS at the end of the previous test, microseconds ago.
        rss = self._last_rss if self._last_rss is not None else self._probe.rss()
        start = {"i": self._index, "id": item.nodeid, "rss": rss}
        if self._limits:
            limit = self._limits.get(item.nodeid)
            if limit is not None:
                start["lim"] = limit.as_wire()
        self._stream.emit("start", start)
        try:
            return (yield)
        finally:
            self._stream.running = None
            self._end()

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_setup(self) -> Generator[None, object, object]:
        return (yield from self._measure("setup"))

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_call(self) -> Generator[None, object, object]:
        return (yield from self._measure("call"))

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_teardown(self) -> Generator[None, object, object]:
        return (yield from self._measure("teardown"))

    def _measure(self, phase: str) -> Generator[None, object, object]:
        probe = self._probe
        self._stream.running = (self._index, phase)
        # Setup reads the RSS afresh (growth is measured from it); call and teardown start
        # where the previous phase ended.
        before = probe.begin_phase(None if phase == "setup" else self._last_rss)
        start = time.perf_counter()
        try:
            return (yield)
        finally:
            duration = time.perf_counter() - start
            after, peak = probe.end_phase()
            self._last_rss = after
            self._phases[phase] = [before, after, max(peak, before, after), duration]

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        figures = self._phases.get(report.when) if report.nodeid == self._nodeid else None
        if figures is None:
            return
        self._outcomes[report.when] = report.outcome
        self._stream.emit(
            "phase", {"i": self._index, "ph": report.when, "f": figures, "o": report.outcome}
        )

    def _end(self) -> None:
        if not self._phases:
            return
        outcome = _test_outcome(self._outcomes)
        end = {
            "i": self._index,
            "id": self._nodeid,
            "o": outcome,
            "m": self._probe.method,
            "p": self._phases,
            "t0": self._started,
        }
        start = min(figures[0] for figures in self._phases.values())
        peak = max(figures[2] for figures in self._phases.values())
        urgent = peak - start >= URGENT_GROWTH or outcome in ("failed", "error")
        self._stream.emit("end", end, urgent=urgent)
        self._fallback.pack(
            dict(end, v=protocol.VERSION, k="end", w=self._stream.worker, q=0, t=time.time())
        )
        self.tests += 1

    def close(self, timeout: float) -> dict[str, Any]:
        """Stop streaming; return what the controller needs to check and fill the stream."""
        self._stream.stop(self.tests, timeout)
        return {
            "version": protocol.VERSION,
            "sent": self._stream.sent,
            "dropped": self._stream.dropped,
            "last_seq": self._stream.last_seq,
            "tests": self.tests,
            "records": self._fallback.bytes(),
        }


def _test_outcome(outcomes: dict[str, str]) -> str:
    """The test's outcome as pytest's summary counts it."""
    if outcomes.get("call") == "failed":
        return "failed"
    if "failed" in outcomes.values():
        return "error"
    if "skipped" in outcomes.values():
        return "skipped"
    return "passed"
