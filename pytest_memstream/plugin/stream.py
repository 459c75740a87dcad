"""A worker's outgoing stream: a queue, and one background thread that samples and sends.

The test's own thread only appends to a deque.  The background thread wakes once per
interval: it samples RSS if a test is running, numbers the queued messages and sends
them as one frame.  Wake-ups, not bytes, are what a stream costs on a busy machine, so
the test thread wakes it early only when a message must be seen at once (a hungry test
ended) or the queue is long.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from pytest_memstream import protocol
from pytest_memstream.plugin.probe import MemoryProbe
from pytest_memstream.sender import Sender

FLUSH_AT = 256
CHUNK = 512
#: Kinds that a test's ``end`` makes redundant when both leave in the same flush.
SUPERSEDED = frozenset({"start", "phase"})
#: Samples kept for the running test's limit failure message.
RECENT = 64


class Stream:
    """Queues this worker's messages and sends them from one background thread."""

    def __init__(self, sender: Sender, probe: MemoryProbe, worker: str, interval: float) -> None:
        self.worker = worker
        self.interval = interval
        #: ``(test index, phase)`` of the running test, read by the sampler.
        self.running: tuple[int, str] | None = None
        #: The sampler's latest ``(test index, phase, time, rss)``: what a limit failure shows.
        self.recent: deque[tuple[int, str, float, int]] = deque(maxlen=RECENT)
        self._sender = sender
        self._probe = probe
        self._queue: deque[dict[str, Any]] = deque()
        self._seq = 0  # touched by the background thread only
        self._wake = threading.Event()
        self._stopping = False
        self._bye: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._run, name="memstream-stream", daemon=True)

    @property
    def sent(self) -> int:
        return self._sender.sent

    @property
    def dropped(self) -> int:
        return self._sender.dropped

    @property
    def last_seq(self) -> int:
        return self._seq - 1

    def start(self) -> None:
        self._thread.start()

    def emit(self, kind: str, fields: dict[str, Any], urgent: bool = False) -> None:
        fields["k"] = kind
        fields["t"] = time.time()
        self._queue.append(fields)
        if urgent or len(self._queue) >= FLUSH_AT:
            self._wake.set()

    def stop(self, tests: int, timeout: float) -> None:
        """Send everything still queued and a ``bye``, then close; bounded by ``timeout``."""
        self._bye = {"tests": tests}
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        probe, wake = self._probe, self._wake
        while True:
            wake.wait(self.interval)
            wake.clear()
            running = self.running
            if running is not None:
                now, rss = time.time(), probe.rss()
                probe.observe(rss)
                self.recent.append((running[0], running[1], now, rss))
                self._queue.append(
                    {"k": "sample", "t": now, "i": running[0], "ph": running[1], "s": [[now, rss]]}
                )
            self._flush()
            if self._stopping:
                break
        bye = dict(self._bye, k="bye", t=time.time(), sent=self.sent, dropped=self.dropped)
        self._queue.append(bye)
        self._flush()
        self._sender.close()

    def _flush(self) -> None:
        queue, pop = self._queue, self._queue.popleft
        messages: list[dict[str, Any]] = []
        while queue:
            messages.append(pop())
        # A test that started and ended between two flushes is told by its end alone,
        # which carries every phase: for most tests one message instead of five, and
        # the sink's work per test (it shares two cores with the workers) drops with it.
        ended = {m["i"] for m in messages if m["k"] == "end"}
        if ended:
            messages = [m for m in messages if m["k"] not in SUPERSEDED or m["i"] not in ended]
        for first in range(0, len(messages), CHUNK):
            batch = messages[first : first + CHUNK]
            for message in batch:
                message["v"] = protocol.VERSION
                message["w"] = self.worker
                message["q"] = self._seq
                self._seq += 1
            self._sender.send(batch)
