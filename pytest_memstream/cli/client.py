"""A viewer's end of the clone protocol: attach, take a snapshot, follow the updates.

``Viewer`` owns two sockets: a DEALER that talks to the run's snapshot endpoint and a
SUB on its updates endpoint.  ``Viewer.poll()`` advances it and returns what happened as
``Event``s; the state it keeps is a ``Mirror`` of the sink's key-value state.  The order
of operations is the ZeroMQ guide's clone client:

1. ``hello`` -> ``welcome``: the updates endpoint, and proof that our secret is right;
2. subscribe, and wait until the first message (a beat) shows the subscription is live;
3. ``snapshot`` -> ``snap`` parts, while updates are buffered;
4. load the snapshot, apply the buffered updates numbered after it, then every update as
   it comes.  Any gap in the numbers: say "behind" and go back to 3.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import zmq

from pytest_memstream import security
from pytest_memstream.protocol import ProtocolError
from pytest_memstream.protocol import viewer as wire

#: How long to wait for the snapshot endpoint to answer before asking again.
ASK_AGAIN = 1.0
#: How long a subscription may take to show itself before we take a snapshot anyway.
SUBSCRIBE_WAIT = 2.0
#: Updates buffered while a snapshot is on its way; more means we are too slow: resync.
MAX_BUFFERED = 10_000
#: Beats missed before we check whether the run is still there.
SILENT_BEATS = 3
#: Updates queued in ZeroMQ for this viewer before further ones are dropped.
RECEIVE_HWM = 1000


class ViewerError(RuntimeError):
    """Cannot attach: nothing answers, or the run does not accept our secret."""


#: What the viewer's side of a refused CURVE handshake looks like: a wrong secret
#: gives a server key the sink cannot decrypt with, a refused key a ZAP error.
HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


@dataclass
class Event:
    """Something a viewer shows or prints: ``kind`` is one of

    ``snapshot`` (attached or resynchronised; ``seq``), ``update`` (``seq``, ``sets``),
    ``behind`` (a gap: ``seq`` we have, ``expected`` the one that came), ``finished``
    (the run ended; the mirror holds its final state), ``lost`` (the run went away
    without saying it finished; ``reason``).
    """

    kind: str
    seq: int = 0
    sets: dict[str, Any] = field(default_factory=dict)
    expected: int = 0
    reason: str = ""


class Mirror:
    """The viewer's copy of the run's state: ``key -> value`` as the sink publishes it."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, Any]] = {}
        self.seq = -1

    def load(self, seq: int, values: dict[str, dict[str, Any]]) -> None:
        self.values = dict(values)
        self.seq = seq

    def apply(self, seq: int, sets: dict[str, dict[str, Any]]) -> None:
        self.values.update(sets)
        self.seq = seq

    @property
    def run(self) -> dict[str, Any]:
        return self.values.get("run") or {}

    @property
    def finished(self) -> bool:
        return self.run.get("status") == "finished"

    def workers(self) -> dict[str, dict[str, Any]]:
        return {key[2:]: value for key, value in self.values.items() if key.startswith("w/")}

    def tests(self) -> list[dict[str, Any]]:
        return [value for key, value in self.values.items() if key.startswith("t/")]

    def totals(self) -> dict[str, Any]:
        """The run in figures, named as in the JSON report where there is a match."""
        workers = self.workers()
        run = self.run
        return {
            "status": run.get("status", "unknown"),
            "tests": len(self.tests()),
            "messages": run.get("messages", 0),
            "frames": run.get("frames", 0),
            "rejected": run.get("rejected", 0),
            "workers": len(workers),
            "lost": sum(w["lost"] for w in workers.values()),
            "dropped": sum(w["dropped"] for w in workers.values()),
            "recovered": sum(w["recovered"] for w in workers.values()),
            "unrecoverable": sum(w["unrecoverable"] for w in workers.values()),
            "crashed": sorted(i for i, w in workers.items() if w["status"] == "crashed"),
        }


def reachable(updates: str, snapshot: str) -> str:
    """``updates`` as this viewer reaches it: at ``snapshot``'s host, with its own port.

    The two sockets listen side by side, so the host the viewer reached one at (an
    address the run advertised, a tunnel's end) is where the other is too; a wildcard
    or an address of the run's own machine would lead it astray.
    """
    port = re.match(r"tcp://.+(:\d+)$", updates)
    host = re.match(r"tcp://(.+):\d+$", snapshot)
    if port is None or host is None:
        return updates
    return f"tcp://{host.group(1)}{port.group(1)}"


class Viewer:
    """One attachment to a running session, driven by ``poll()`` from one thread."""

    def __init__(self, endpoint: str, secret: bytes, wait: bool = False) -> None:
        self.endpoint = endpoint
        self.keys = security.RunKeys(secret)
        #: Keep asking while nothing answers, instead of giving up after ``timeout``.
        self.wait = wait
        self.mirror = Mirror()
        self.welcome: dict[str, Any] = {}
        self.resyncs = 0
        self.received = 0
        self._context = zmq.Context()
        self._dealer = self._socket(zmq.DEALER)
        self._refusals = self._dealer.get_monitor_socket(HANDSHAKE_FAILED)
        try:
            self._dealer.connect(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise ViewerError(f"cannot connect to {endpoint!r}: {exc}") from None
        self._sub: zmq.Socket[bytes] | None = None
        self._poller = zmq.Poller()
        self._poller.register(self._dealer, zmq.POLLIN)
        self._poller.register(self._refusals, zmq.POLLIN)
        # Where we are: "hello" -> "subscribe" -> "sync" -> "live" -> "done".
        self.phase = "hello"
        self._nonce = b""
        self._asked = 0.0
        self._since = time.monotonic()
        self._heard = time.monotonic()
        self._parts: dict[int, dict[str, Any]] = {}
        self._buffer: list[tuple[int, str, dict[str, Any]]] = []
        self._probe_sent = 0.0
        self._ask("hello")

    def _socket(self, kind: int) -> zmq.Socket[bytes]:
        socket = self._context.socket(kind)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.MAXMSGSIZE, wire.MAX_FRAME + 1024)
        security.connect_as(socket, self.keys.server.public, self.keys.viewer.secret)
        return socket

    def close(self) -> None:
        self._context.destroy(linger=0)

    @property
    def beat(self) -> float:
        return float(self.welcome.get("beat", 1.0))

    def register(self, fd: int) -> None:
        """Also wake ``poll()`` when ``fd`` is readable (the terminal, for key presses)."""
        self._poller.register(fd, zmq.POLLIN)

    def poll(self, timeout: float, fds: Iterable[int] = ()) -> tuple[list[Event], set[int]]:
        """Wait up to ``timeout`` seconds; return what happened and which ``fds`` are ready."""
        events: list[Event] = []
        polled = dict(self._poller.poll(max(0, int(timeout * 1000))))
        ready = {fd for fd in fds if fd in polled}
        if self.phase == "done":
            return events, ready
        if self._refusals in polled:
            raise ViewerError(
                f"the run at {self.endpoint} refused our key: wrong secret "
                "(or another run took that port)"
            )
        if self._dealer in polled:
            self._read_replies(events)
        if self._sub is not None and self._sub in polled:
            self._read_updates(events)
        self._check_time(events)
        return events, ready

    # --- requests -----------------------------------------------------------------------

    def _ask(self, kind: str) -> None:
        self._nonce = os.urandom(16)
        self._asked = time.monotonic()
        self._parts = {}
        message = wire.encode(kind, {"nonce": self._nonce})
        with contextlib.suppress(zmq.Again):  # not connected yet: asked again later
            self._dealer.send(message, flags=zmq.NOBLOCK)

    def _read_replies(self, events: list[Event]) -> None:
        while True:
            try:
                frames = self._dealer.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                if len(frames) != 1:
                    raise ProtocolError("frame", f"{len(frames)} parts, expected 1")
                reply = wire.decode(frames[0], frozenset({"welcome", "snap", "error"}))
            except ProtocolError as exc:
                raise ViewerError(f"{self.endpoint} sent something unreadable: {exc}") from None
            if reply["k"] == "error":
                raise ViewerError(f"{self.endpoint} refused our request ({reply['reason']})")
            if reply["nonce"] != self._nonce:
                continue  # the answer to a request we have given up on
            if reply["k"] == "welcome":
                self._on_welcome(reply)
            elif self.phase == "sync":
                self._on_part(reply, events)
            elif self.phase == "live":
                self._heard = time.monotonic()  # a probe's answer: the run is still there

    def _on_welcome(self, reply: dict[str, Any]) -> None:
        if self.phase != "hello":
            self._heard = time.monotonic()  # an answer to a probe
            return
        self.welcome = reply
        self._sub = self._socket(zmq.SUB)
        self._sub.setsockopt(zmq.RCVHWM, RECEIVE_HWM)
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        self._sub.connect(reachable(reply["updates"], self.endpoint))
        self._poller.register(self._sub, zmq.POLLIN)
        self.phase = "subscribe"
        self._since = time.monotonic()

    def _on_part(self, reply: dict[str, Any], events: list[Event]) -> None:
        self._parts[reply["part"]] = reply
        parts = reply["parts"]
        if len(self._parts) < parts:
            return
        if sorted(self._parts) != list(range(parts)) or any(
            p["seq"] != reply["seq"] or p["parts"] != parts for p in self._parts.values()
        ):
            self._ask("snapshot")  # a mix of two answers: ask again
            return
        values: dict[str, dict[str, Any]] = {}
        for number in range(parts):
            values.update(self._parts[number]["sets"])
        self._parts = {}
        self.mirror.load(reply["seq"], values)
        self.phase = "live"
        self._heard = time.monotonic()
        events.append(Event("snapshot", seq=reply["seq"]))
        buffered, self._buffer = self._buffer, []
        for seq, kind, message in buffered:
            if not self._take(seq, kind, message, events):
                return
        self._check_finished(events)

    # --- updates ------------------------------------------------------------------------

    def _read_updates(self, events: list[Event]) -> None:
        assert self._sub is not None
        for _ in range(1000):
            try:
                frames = self._sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                if len(frames) != 1:
                    raise ProtocolError("frame", f"{len(frames)} parts, expected 1")
                message = wire.decode(frames[0], frozenset({"update", "beat"}))
            except ProtocolError:
                continue  # damaged, or from a newer version: never shown
            self.received += 1
            self._heard = time.monotonic()
            seq, kind = message["seq"], message["k"]
            if self.phase == "subscribe":
                self.phase = "sync"
                self._ask("snapshot")
            if self.phase == "sync":
                if kind == "update":
                    self._buffer.append((seq, kind, message))
                    if len(self._buffer) > MAX_BUFFERED:
                        self._buffer = []
                        self._resync(events, seq)
            elif self.phase == "live" and self._take(seq, kind, message, events):
                self._check_finished(events)
            if self.phase == "done":
                return

    def _take(self, seq: int, kind: str, message: dict[str, Any], events: list[Event]) -> bool:
        """Apply one update or beat in order; False if it shows a gap (we resync)."""
        have = self.mirror.seq
        if kind == "beat":
            if seq > have:
                self._resync(events, seq)
                return False
            return True
        if seq <= have:
            return True  # already in the snapshot
        if seq != have + 1:
            self._resync(events, seq)
            return False
        self.mirror.apply(seq, message["sets"])
        events.append(Event("update", seq=seq, sets=message["sets"]))
        return True

    def _resync(self, events: list[Event], seq: int) -> None:
        events.append(Event("behind", seq=self.mirror.seq, expected=seq))
        self.resyncs += 1
        self.phase = "sync"
        self._ask("snapshot")

    def _check_finished(self, events: list[Event]) -> None:
        if self.mirror.finished and self.phase == "live":
            self._done()
            events.append(Event("finished", seq=self.mirror.seq))

    def _done(self) -> None:
        """Nothing more to hear: stop listening, so that ``poll()`` waits for ``fds`` only."""
        self.phase = "done"
        self._poller.unregister(self._dealer)
        self._poller.unregister(self._refusals)
        if self._sub is not None:
            self._poller.unregister(self._sub)

    def _check_time(self, events: list[Event]) -> None:
        now = time.monotonic()
        if self.phase == "hello":
            if now - self._asked >= ASK_AGAIN:
                if not self.wait and now - self._since >= 3 * ASK_AGAIN:
                    raise ViewerError(f"nothing answers at {self.endpoint}")
                self._ask("hello")
        elif self.phase == "subscribe":
            if now - self._since >= SUBSCRIBE_WAIT:
                self.phase = "sync"  # no beat yet: take a snapshot; a gap would show
                self._ask("snapshot")
        elif self.phase == "sync":
            if now - self._asked >= 5 * ASK_AGAIN:
                self._ask("snapshot")
        elif self.phase == "live":
            silent = now - self._heard
            if silent >= SILENT_BEATS * self.beat + 2 * ASK_AGAIN:
                self._done()
                events.append(Event("lost", seq=self.mirror.seq, reason="the run went silent"))
            elif silent >= SILENT_BEATS * self.beat and now - self._probe_sent >= ASK_AGAIN:
                # Quiet: ask the snapshot endpoint whether the run is still there.
                self._probe_sent = now
                nonce, self._nonce = self._nonce, os.urandom(16)
                message = wire.encode("hello", {"nonce": self._nonce})
                try:
                    self._dealer.send(message, flags=zmq.NOBLOCK)
                except zmq.Again:
                    self._nonce = nonce
