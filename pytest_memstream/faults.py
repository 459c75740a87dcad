"""Fault injection for tests: ``PYTEST_MEMSTREAM_FAULTS``, read once per process.

Only the test suite sets it.  A comma-separated list of ``key=value``:

    drop=P      a worker silently loses this fraction of its frames on the way (0..1)
    delay=S     a worker waits S seconds before sending each frame (a slow network)
    hwm=N       a worker queues at most N frames for the sink (default 1000)
    sink=MODE   ``gone``: the controller's sink closes its socket as soon as it is
                bound; ``stall``: it never reads a frame
    seed=N      the random seed for ``drop``
    worker=fail a worker cannot start measuring (as when it has no file descriptor left)

An unknown key or a bad value is an error that names it: a test that misspells a fault
must fail, not pass without the fault.
"""

from __future__ import annotations

import os
from typing import NamedTuple

ENV = "PYTEST_MEMSTREAM_FAULTS"


class Faults(NamedTuple):
    drop: float = 0.0
    delay: float = 0.0
    hwm: int = 0
    sink: str = ""
    seed: int = 0
    worker: str = ""

    @classmethod
    def from_env(cls) -> Faults:
        text = os.environ.get(ENV, "").strip()
        if not text:
            return NO_FAULTS
        values: dict[str, float | int | str] = {}
        for item in text.split(","):
            key, _, value = item.strip().partition("=")
            try:
                if key in ("drop", "delay"):
                    values[key] = float(value)
                elif key in ("hwm", "seed"):
                    values[key] = int(value)
                elif value in _CHOICES.get(key, ()):
                    values[key] = value
                else:
                    raise ValueError
            except ValueError:
                raise ValueError(f"{ENV}: cannot use {item.strip()!r}") from None
        return cls(**values)  # type: ignore[arg-type]


NO_FAULTS = Faults()
#: The keys whose value is one of a few words.
_CHOICES = {"sink": ("gone", "stall"), "worker": ("fail",)}
