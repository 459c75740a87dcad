"""A pytest plugin for the breakdown benchmark: ``-p benchmarks.knockout_plugin``.

It notes, in every process, when the first test started and the last one ended (one JSON
line per process, appended to the file named by ``MEMSTREAM_BENCH_TIMELINE``), so that a
run's time splits into start-up, tests and exit.  With ``MEMSTREAM_BENCH_KNOCKOUT`` it
also takes one part of the product out of each worker's tests, just before they run:

- ``probe``: the recorder reads no RSS and no peak (a probe that makes no system call),
  and does everything else it does;
- ``recorder``: the recorder is unregistered, so nothing at all runs per test, while
  ZeroMQ, the sink, the threads and the stream's hello and bye cost what they cost.

These replace parts of the thing measured, on purpose: they say what each part costs.
Nothing here runs in the tests of the product.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

TIMELINE = "MEMSTREAM_BENCH_TIMELINE"
KNOCKOUT = "MEMSTREAM_BENCH_KNOCKOUT"
KNOCKOUTS = ("probe", "recorder")


class NoProbe:
    """The probe's interface, without a system call: every reading is the same 1 MiB."""

    def __init__(self, method: str) -> None:
        self.method = method

    def rss(self) -> int:
        return 1 << 20

    def start(self) -> int:
        return 1 << 20

    def boundary(self) -> tuple[int, int]:
        return 1 << 20, 1 << 20

    def observe(self, rss: int) -> None:
        pass


class Timeline:
    def __init__(self, config: pytest.Config, path: str) -> None:
        self._path = path
        self._role = config.workerinput["workerid"] if hasattr(config, "workerinput") else "main"
        self.first: float | None = None
        self.last: float | None = None

    def pytest_runtest_logstart(self) -> None:
        if self.first is None:
            self.first = time.time()

    def pytest_runtest_logfinish(self) -> None:
        self.last = time.time()

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self) -> None:
        line: dict[str, Any] = {"role": self._role, "first": self.first, "last": self.last}
        with open(self._path, "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")


def pytest_configure(config: pytest.Config) -> None:
    path = os.environ.get(TIMELINE)
    if path:
        config.pluginmanager.register(Timeline(config, path), "memstream-bench-timeline")


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    knockout = os.environ.get(KNOCKOUT, "")
    if not knockout:
        return
    if knockout not in KNOCKOUTS:
        raise pytest.UsageError(f"{KNOCKOUT}={knockout!r}: expected one of {KNOCKOUTS}")
    manager = session.config.pluginmanager
    recorder = manager.get_plugin("memstream-recorder")
    if recorder is None:
        return  # the controller of an xdist run: its workers record
    if knockout == "recorder":
        manager.unregister(recorder)
    else:
        recorder._probe = NoProbe(recorder._probe.method)
