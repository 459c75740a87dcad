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
        for kind in KINDS:
            name = f"_on_{kind}"
            setattr(state, name, self._observe(self.delays[kind], getattr(state, name)))

    @staticmethod
    def _observe(delays: list[float], handler: Handler) -> Handler:
        def observed(worker: Any, message: dict[str, Any]) -> None:
            delays.append(time.time() - message["t"])
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
            json.dump(observer.delays, file)


_KEY = pytest.StashKey[LatencyObserver]()
