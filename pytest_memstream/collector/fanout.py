"""Viewer fan-out: the run's state, republished to any number of viewers as it changes.

This is the ZeroMQ guide's "clone" pattern (chapter 5).  The state is a key-value map
(``run``, ``w/<worker>``, ``t/<worker>/<index>``, see ``protocol``).  Two sockets:

- an XPUB on the ``updates`` endpoint publishes every change as an ``update`` that sets
  keys to their new values, numbered ``seq`` 1, 2, 3, ... without gaps, and a ``beat``
  every second with the last ``seq``;
- a ROUTER on the ``snapshot`` endpoint answers a ``snapshot`` request with the
  whole state, tagged with the ``seq`` of the last update it includes.

A viewer subscribes first, then asks for a snapshot and applies the updates numbered
after it.  Values are complete, so an update that the snapshot already includes changes
nothing when applied again; what matters is that nothing is missed, and any gap in
``seq`` tells the viewer that it missed something: it says so and asks again.

Nothing here ever waits for a viewer.  The XPUB drops a slow viewer's updates once its
queue holds ``UPDATE_HWM`` of them (the viewer sees the gap), the ROUTER drops replies to
a viewer that is gone, and updates are coalesced to at most one per ``PUBLISH_EVERY`` so
that the sink's cost does not grow with the rate of frames.  With no viewer subscribed,
the fan-out does no work at all besides noting that its mirror is out of date; when the
first viewer subscribes it rebuilds the mirror and skips one ``seq``, so that anyone
holding an older snapshot sees a gap rather than silently missing changes.

Every method runs on the sink thread, which owns both sockets.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import zmq

from pytest_memstream import security
from pytest_memstream.collector.listen import Listener, viewer_binds
from pytest_memstream.collector.records import TestRecord, WorkerState
from pytest_memstream.collector.state import RunState
from pytest_memstream.protocol import ProtocolError
from pytest_memstream.protocol import viewer as wire

#: Shortest time between two updates: viewers redraw a few times a second.
PUBLISH_EVERY = 0.05
#: Changes the sink thread did not make itself (a worker went down) show within this.
RESCAN_EVERY = 0.25
#: A beat tells viewers that the run is alive and the last ``seq``, so that a lost last
#: update is noticed too.
BEAT_EVERY = 1.0
#: Updates queued for one viewer before ZeroMQ drops that viewer's updates.
UPDATE_HWM = 1000
#: Snapshot parts queued for one viewer before ZeroMQ drops the rest (it asks again).
SNAPSHOT_HWM = 2000
#: How long closing may wait to hand the final update to viewers.
FINAL_LINGER_MS = 200
#: Requests and subscriptions read per wake-up, so that a flood cannot starve the stream.
READ_PER_WAKE = 64
#: Rough bytes per update or snapshot part, far below ``wire.MAX_FRAME``.
PART_BYTES = 256 << 10

TestKey = tuple[str, int]


def test_key(worker: str, index: int) -> str:
    return f"t/{worker}/{index}"


def worker_view(worker: WorkerState) -> dict[str, Any]:
    running = worker.running
    view: dict[str, Any] = {
        "status": worker.status,
        "host": worker.host,
        "pid": worker.pid,
        "peak_method": worker.method,
        "messages": worker.received,
        "lost": worker.lost,
        "dropped": worker.dropped,
        "recovered": worker.recovered,
        "unrecoverable": worker.unrecoverable,
        "max_rss": worker.max_rss,
        "crashed_test": worker.crashed,
        "error": worker.error[:4096],
        "running": None,
    }
    if running is not None:
        recent = itertools.islice(
            running.samples, max(0, len(running.samples) - wire.RECENT_SAMPLES), None
        )
        view["running"] = {
            "index": running.index,
            "nodeid": running.nodeid,
            "phase": running.phase,
            "started": running.started,
            "rss_start": running.rss_start,
            "rss": running.rss,
            "peak_rss": running.peak,
            "climb_rate": running.climb_rate(),
            "recent_rss": [rss for _, rss in recent],
            "tree": running.tree if running.tree_start is not None else None,
            "tree_start": running.tree_start,
        }
    return view


def test_view(record: TestRecord) -> dict[str, Any]:
    return {
        "nodeid": record.nodeid,
        "worker": record.worker,
        "index": record.index,
        "outcome": record.outcome,
        "rss_start": record.rss_start,
        "peak_rss": record.peak_rss,
        "rss_end": record.rss_end,
        "growth": record.growth,
        "kept": record.kept,
        "peak_phase": record.peak_phase,
        "peak_method": record.method,
        "source": record.source,
        "started": record.started,
        "finished": record.finished,
        "tree_growth": record.tree_growth,
        "children": record.tree["count"] if record.tree else 0,
    }


def _size_hint(key: str, value: dict[str, Any]) -> int:
    """Roughly how many bytes ``key -> value`` packs to (names may be 4 bytes a character)."""
    if key[0] == "t":
        return 256 + 4 * len(value["nodeid"])
    if key[0] == "w":
        running = value["running"]
        return (
            1024
            + 4 * len(value["crashed_test"])
            + len(value["error"])
            + (0 if running is None else 4 * len(running["nodeid"]))
        )
    return 256


def split_sets(sets: Iterable[tuple[str, dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    """``sets`` in parts that each fit comfortably into one frame."""
    part: dict[str, Any] = {}
    size = 0
    for key, value in sets:
        hint = _size_hint(key, value)
        if part and (size + hint > PART_BYTES or len(part) >= wire.MAX_SETS):
            yield part
            part, size = {}, 0
        part[key] = value
        size += hint
    if part:
        yield part


class Fanout:
    """The sink's viewer sockets and the mirror of what it last published."""

    def __init__(
        self,
        context: zmq.Context[Any],
        state: RunState,
        keys: security.RunKeys,
        sink_endpoint: str,
        listeners: tuple[Listener, Listener] | None = None,
    ) -> None:
        """Bind next to ``sink_endpoint``, or adopt ``listeners`` (see listen.py)."""
        self._state = state
        snapshot_bind, updates_bind = viewer_binds(sink_endpoint)
        self._router = context.socket(zmq.ROUTER)
        self._xpub = context.socket(zmq.XPUB)
        # Only a viewer with the run's key gets through the handshake: no byte of the
        # run reaches anyone else, on either socket.
        security.serve(self._router, keys, security.VIEWER)
        security.serve(self._xpub, keys, security.VIEWER)
        if listeners is not None:
            snapshot_bind, updates_bind = (listener.endpoint for listener in listeners)
            self._router.setsockopt(zmq.USE_FD, listeners[0].fd)
            self._xpub.setsockopt(zmq.USE_FD, listeners[1].fd)
        try:
            self._router.setsockopt(zmq.LINGER, 0)
            self._router.setsockopt(zmq.SNDHWM, SNAPSHOT_HWM)
            self._router.setsockopt(zmq.RCVHWM, 100)
            self._router.setsockopt(zmq.MAXMSGSIZE, 4096)  # requests are tiny
            self._router.bind(snapshot_bind)
            if listeners is not None:
                listeners[0].adopted()  # ZeroMQ closes it with the socket from now on
            # Every subscription and unsubscription, also from viewers that die, so that
            # the fan-out knows whether anyone listens.
            self._xpub.setsockopt(zmq.XPUB_VERBOSER, 1)
            self._xpub.setsockopt(zmq.SNDHWM, UPDATE_HWM)
            self._xpub.setsockopt(zmq.LINGER, FINAL_LINGER_MS)
            self._xpub.setsockopt(zmq.MAXMSGSIZE, 4096)  # subscriptions are tiny
            self._xpub.bind(updates_bind)
            if listeners is not None:
                listeners[1].adopted()
        except zmq.ZMQError:
            self._router.close(linger=0)
            self._xpub.close(linger=0)
            for listener in listeners or ():
                listener.close()  # only those ZeroMQ did not adopt
            raise
        self.endpoints = {
            "snapshot": self._router.getsockopt_string(zmq.LAST_ENDPOINT),
            "updates": self._xpub.getsockopt_string(zmq.LAST_ENDPOINT),
        }
        self.sockets = (self._router, self._xpub)
        #: The ``seq`` of the last update published (or skipped, see the module doc).
        self.seq = 0
        self.subscribers = 0
        self.finished = False
        #: Viewer requests refused, by reason; frames a full queue or a gone viewer refused.
        self.rejects: Counter[str] = Counter()
        self.dropped = 0
        self.snapshots = 0
        # The mirror: what viewers were last told, to publish only what changed.
        self._views: dict[str, dict[str, Any]] = {}
        self._tests: dict[TestKey, TestRecord] = {}
        self._stale = True
        self._pending = False
        self._last_publish = 0.0
        self._last_beat = 0.0
        self._snapshot_cache: tuple[int, list[dict[str, Any]]] | None = None
        self._pid = os.getpid()

    # --- the sink thread's loop ---------------------------------------------------------

    def timeout(self, now: float) -> int | None:
        """Milliseconds until the fan-out has something to do, None if only input wakes it."""
        if not self.subscribers:
            return None
        wait = PUBLISH_EVERY if self._pending else RESCAN_EVERY
        due = min(self._last_publish + wait, self._last_beat + BEAT_EVERY)
        return max(0, math.ceil((due - now) * 1000))

    def handle(self, events: dict[Any, int]) -> None:
        """Read subscriptions and requests that ``events`` say are waiting."""
        if self._xpub in events:
            self._read_subscriptions()
        if self._router in events:
            self._read_requests()

    def changed(self) -> None:
        """The sink applied new messages: publish them, at most every PUBLISH_EVERY."""
        if not self.subscribers:
            self._stale = True
        elif time.monotonic() - self._last_publish >= PUBLISH_EVERY:
            self.publish()
        else:
            self._pending = True

    def tick(self, now: float) -> None:
        if not self.subscribers:
            return
        if now - self._last_publish >= (PUBLISH_EVERY if self._pending else RESCAN_EVERY):
            self.publish()
        if now - self._last_beat >= BEAT_EVERY:
            self._beat()

    def close(self) -> None:
        """The run is over: publish the final state, then let go of the sockets."""
        self.finished = True
        try:
            if self.subscribers:
                self.publish()
                self._beat()
        finally:
            self._router.close(linger=0)
            self._xpub.close()
            # Its copies of the records go with the run's (RunState.forget).
            self._tests, self._views, self._snapshot_cache = {}, {}, None

    # --- updates ------------------------------------------------------------------------

    def publish(self) -> None:
        """Send every change since the last update (nothing if there is none)."""
        self._pending = False
        self._last_publish = time.monotonic()
        if not self.subscribers:
            self._stale = True
            return
        with self._state.cond:
            if self._stale:
                self._rebase()
                return
            sets = self._changes()
        for part in split_sets(sets.items()):
            self.seq += 1
            self._send(self._xpub, [], "update", {"seq": self.seq, "t": time.time(), "sets": part})

    def _rebase(self) -> None:
        """Rebuild the mirror from the state without publishing; skip one ``seq``."""
        self._views = {"run": self._run_view()}
        for worker in self._state.workers.values():
            self._views["w/" + worker.id] = worker_view(worker)
        self._tests = dict(self._state.tests)
        self._stale = False
        self._snapshot_cache = None
        self.seq += 1

    def _changes(self) -> dict[str, dict[str, Any]]:
        """What changed since the mirror was last brought up to date (under the lock)."""
        sets: dict[str, dict[str, Any]] = {}
        rescan = False
        for worker in self._state.workers.values():
            key = "w/" + worker.id
            view = worker_view(worker)
            old = self._views.get(key)
            if old != view:
                sets[key] = self._views[key] = view
                # A worker that went down may have had tests filled in or replaced.
                rescan |= old is None or old["status"] != view["status"]
        tests = self._state.tests
        new = len(tests) - len(self._tests)
        items: Iterable[tuple[TestKey, TestRecord]]
        if rescan or new < 0:
            items = tests.items()
        else:
            # Tests are only ever added, and a dict iterates in insertion order.
            items = reversed(list(itertools.islice(reversed(tests.items()), new)))
        for tkey, record in items:
            if self._tests.get(tkey) is not record:
                self._tests[tkey] = record
                sets[test_key(*tkey)] = test_view(record)
        run = self._run_view()
        if run != self._views.get("run"):
            sets["run"] = self._views["run"] = run
        return sets

    def _run_view(self) -> dict[str, Any]:
        state = self._state
        return {
            "status": "finished" if self.finished else "running",
            "pid": self._pid,
            "started": state.started,
            "messages": state.messages,
            "frames": state.frames,
            "rejected": sum(state.rejects.values()),
            "tests": len(state.tests),
            "total": state.totals.total,
            "peak_total": state.totals.peak,
            "limit": state.totals.limit,
            "headroom": state.totals.available,
        }

    def _beat(self) -> None:
        self._last_beat = time.monotonic()
        self._send(self._xpub, [], "beat", {"seq": self.seq, "t": time.time()})

    def _read_subscriptions(self) -> None:
        joined = False
        for _ in range(READ_PER_WAKE):
            try:
                message = self._xpub.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if message[:1] == b"\x01":
                self.subscribers += 1
                joined = True
            elif message[:1] == b"\x00":
                self.subscribers = max(0, self.subscribers - 1)
        if joined and self.subscribers:
            # Bring the mirror up to date, and tell the newcomer the current seq at once:
            # once it hears anything, it knows its subscription is in place.
            self.publish()
            self._beat()

    # --- snapshots ----------------------------------------------------------------------

    def _read_requests(self) -> None:
        for _ in range(READ_PER_WAKE):
            try:
                frames = self._router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            peer = frames[:1]
            try:
                if len(frames) != 2:
                    raise ProtocolError("request", f"{len(frames) - 1} parts, expected 1")
                request = wire.decode(frames[1], wire.REQUEST_KINDS)
            except ProtocolError as exc:
                reason = exc.reason if exc.reason in wire.ERROR_REASONS else "request"
                self.rejects[reason] += 1
                self._send(self._router, peer, "error", {"nonce": b"", "reason": reason})
                continue
            nonce = request["nonce"]
            if request["k"] == "hello":
                self._send(
                    self._router,
                    peer,
                    "welcome",
                    {
                        "nonce": nonce,
                        "seq": self.seq,
                        "updates": self.endpoints["updates"],
                        "beat": BEAT_EVERY,
                        "pid": self._pid,
                        "started": self._state.started,
                    },
                )
            else:
                self._serve_snapshot(peer, nonce)

    def _serve_snapshot(self, peer: list[bytes], nonce: bytes) -> None:
        self.snapshots += 1
        if self.subscribers:
            self.publish()  # so that the snapshot's seq covers everything applied so far
        cache = self._snapshot_cache
        if cache is not None and cache[0] == self.seq and not self._stale:
            parts = cache[1]
        else:
            with self._state.cond:
                views = [("run", self._run_view())]
                views += [("w/" + w.id, worker_view(w)) for w in self._state.workers.values()]
                records = list(self._state.tests.items())
            # Records do not change once added: the views can be built without the lock.
            everything = itertools.chain(
                views, ((test_key(*key), test_view(record)) for key, record in records)
            )
            parts = list(split_sets(everything))
            if not self._stale:
                self._snapshot_cache = (self.seq, parts)
        for number, part in enumerate(parts):
            fields = {"nonce": nonce, "seq": self.seq, "part": number, "parts": len(parts)}
            self._send(self._router, peer, "snap", dict(fields, sets=part))

    def _send(self, socket: zmq.Socket[Any], head: list[bytes], kind: str, fields: Any) -> None:
        try:
            socket.send_multipart([*head, wire.encode(kind, fields)], flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            # A full queue or a viewer that is gone: it is the viewer's problem, not ours.
            self.dropped += 1
