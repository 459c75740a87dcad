"""Attaching a real viewer (``pytest_memstream.cli.client.Viewer``) when the fan-out exists.

The viewer side of the product is younger than these benchmarks: everything here asks
first whether it is there and says "viewer not yet available" when it is not, so that
the same script runs against either.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

UNAVAILABLE = "viewer not yet available"


def available() -> bool:
    """Whether this pytest-memstream has a viewer fan-out and a client to attach with."""
    try:
        client = importlib.import_module("pytest_memstream.cli.client")
        session = importlib.import_module("pytest_memstream.session")
    except ImportError:
        return False
    return hasattr(client, "Viewer") and hasattr(session, "live_sessions")


def _viewer(endpoint: str, secret: bytes) -> Any:
    client = importlib.import_module("pytest_memstream.cli.client")
    return client.Viewer(endpoint, secret)


def count_updates(endpoint: str, secret: bytes, stop: Event, out: Any) -> None:
    """A viewer process for the throughput benchmark: follow the run, count what arrives."""
    viewer = _viewer(endpoint, secret)
    counts: dict[str, float] = {}
    first = last = 0.0
    try:
        while not stop.is_set():
            events, _ = viewer.poll(0.1)
            for event in events:
                counts[event.kind] = counts.get(event.kind, 0) + 1
                if event.kind == "update":
                    last = time.monotonic()
                    first = first or last
    finally:
        viewer.close()
        counts["span"] = last - first
        out.put(counts)


@dataclass
class Delays:
    """What a viewer saw of a run: how long after the worker stamped it, by kind."""

    start: list[float] = field(default_factory=list)
    end: list[float] = field(default_factory=list)
    #: ``(worker, received, latest rss)`` of every update of a worker with a running test.
    views: list[tuple[str, float, int]] = field(default_factory=list)
    behind: int = 0
    finished: bool = False
    error: str = ""


def follow_run(root: Path, alive: Any, deadline: float) -> Delays:
    """Attach to the run whose session file appears under ``root``; follow it to its end.

    ``alive()`` says whether the run's process still runs.  A test's ``end`` reaches the
    viewer as a new ``t/<worker>/<index>`` key (its ``t1`` is the worker's stamp), its
    ``start`` as a worker's ``running`` test with a new index (stamped ``started``).
    """
    session_module = importlib.import_module("pytest_memstream.session")
    delays = Delays()
    session = None
    # A condition polled with a deadline: the session file appears in pytest_configure.
    while session is None:
        sessions = session_module.live_sessions(root, root / ".pytest_cache")
        session = sessions[0] if sessions else None
        if session is None:
            if not alive() or time.monotonic() > deadline:
                delays.error = "the run left no session file to attach to"
                return delays
            time.sleep(0.005)
    viewer = _viewer(session.snapshot, session.secret)
    seen_tests: set[str] = set()
    running: dict[str, int] = {}
    try:
        while not delays.finished and time.monotonic() < deadline:
            events, _ = viewer.poll(0.05)
            now = time.time()
            for event in events:
                if event.kind == "behind":
                    delays.behind += 1
                elif event.kind == "finished":
                    delays.finished = True
                elif event.kind == "update":
                    _take(event.sets, now, seen_tests, running, delays)
            if not events and not alive():
                break
    except Exception as exc:  # the viewer is young: report, do not hide, its failures
        delays.error = f"{type(exc).__name__}: {exc}"
    finally:
        viewer.close()
    return delays


def _take(
    sets: dict[str, Any], now: float, seen: set[str], running: dict[str, int], delays: Delays
) -> None:
    for key, value in sets.items():
        if key.startswith("t/") and key not in seen:
            seen.add(key)
            delays.end.append(now - float(value["finished"]))
        elif key.startswith("w/"):
            test = value.get("running")
            if test and running.get(key) != test["index"]:
                running[key] = test["index"]
                delays.start.append(now - float(test["started"]))
            if test:
                delays.views.append((key[2:], now, int(test["rss"])))


def sample_delays(samples: list[list[Any]], views: list[tuple[str, float, int]]) -> list[float]:
    """For each sample the sink applied, how long after its stamp a viewer first showed it.

    A sample is shown by the first update of its worker, received after the sink applied
    the sample, whose running test's RSS is the sample's; samples that a later one
    superseded before any update (the fan-out coalesces) are not shown and not counted.
    """
    by_worker: dict[str, list[tuple[float, int]]] = {}
    for worker, received, rss in views:
        by_worker.setdefault(worker, []).append((received, rss))
    out = []
    for worker, stamped, applied, rss in samples:
        for received, shown in by_worker.get(worker, []):
            if received >= applied and shown == rss:
                out.append(received - stamped)
                break
    return out
