"""A pytest plugin for the latency benchmark: ``-p benchmarks.latency_plugin``.

In the controller only, it observes the product's own ``RunState`` (the one the real
``Sink`` thread feeds) and notes, as each message is applied, how long ago the worker
stamped it: ``time.time() - message["t"]``.  Workers and controller share one clock.
Nothing of the product is replaced: the observer wraps the bound handlers of that one
``RunState`` instance, calls them unchanged, and costs one clock read and one append.
The figures go to the JSON file named by ``MEMSTREAM_BENCH_LATENCY``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import pytest

ENV = "MEMSTREAM_BENCH_LATENCY"
KINDS = ("sample", "start", "phase", "end")

Handler = Callable[[Any, dict[str, Any]], None]


class LatencyObserver:
    def __init__(self, state: Any) -> None:
        self.delays: dict[str, list[float]] = {kind: [] for kind in KINDS}
        #: ``[worker, stamped, applied, rss]`` of each sample, to match what a viewer saw.
        self.samples: list[list[Any]] = []
        for kind in KINDS:
            name = f"_on_{kind}"
            setattr(state, name, self._observe(kind, getattr(state, name)))

    def _observe(self, kind: str, handler: Handler) -> Handler:
        delays, samples = self.delays[kind], self.samples

        def observed(worker: Any, message: dict[str, Any]) -> None:
            now = time.time()
            delays.append(now - message["t"])
            if kind == "sample":
                samples.append([worker.id, message["t"], now, message["s"][-1][1]])
            handler(worker, message)

        return observed


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput") or ENV not in os.environ:
        return
    controller = config.pluginmanager.get_plugin("memstream-controller")
    if controller is None:
        raise pytest.UsageError("the latency benchmark needs --memstream")
    config.stash[_KEY] = LatencyObserver(controller.state)


def pytest_unconfigure(config: pytest.Config) -> None:
    observer = config.stash.get(_KEY, None)
    if observer is not None:
        with open(os.environ[ENV], "w", encoding="utf-8") as file:
            json.dump({"delays": observer.delays, "samples": observer.samples}, file)


_KEY = pytest.StashKey[LatencyObserver]()
