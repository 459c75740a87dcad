"""A worker's outgoing stream: a queue, and one background thread for the long tests.

The test's own thread does as little as it can: it notes the running test in a
:class:`CurrentTest` and, when the test ends, appends its ``end`` message, packed once
(the same bytes are the fallback copy), to a deque.  It sends the queue itself, as one
frame, when the last frame went out an interval ago (or at once, for a message the sink
must see now: a hungry or failed test).
The background thread wakes once per interval.  A test it finds running at two wake-ups
in a row has run for an interval at least: it samples the RSS and tells the sink about
that test (its ``start`` and the phases it has finished, each once), and it sends
whatever the test thread left queued.  Most tests start and end between two wake-ups
and cost one message and no work on the background thread: a thread that wakes to work
takes the interpreter lock from the tests (docs/design-notes.md, "The stream's wake-ups").
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from typing import Any

from pytest_memstream.plugin.probe import SAMPLED, MemoryProbe, fork_flag
from pytest_memstream.plugin.tree import ProcessTree, TestTree
from pytest_memstream.protocol import stream as wire
from pytest_memstream.sender import Sender

FLUSH_AT = 256
CHUNK = 512
#: Seconds between two heartbeats: the worker's RSS for the run's total, while no long
#: test's samples already say it.
HEARTBEAT = 1.0
#: Samples kept for the running test's limit failure message.
RECENT = 64


class CurrentTest:
    """The running test, written by the test's thread and read by the stream's."""

    __slots__ = (
        "ended",
        "index",
        "limit",
        "nodeid",
        "outcomes",
        "phase",
        "phases",
        "rss",
        "sampled_peak",
        "started",
        "stops",
        "teardown",
        "told",
        "tree",
    )

    def __init__(self, index: int, nodeid: str, started: float, rss: int, limit: Any) -> None:
        self.index = index
        self.nodeid = nodeid
        self.started = started
        self.rss = rss
        #: ``[size, on]`` if the test has a memory limit.
        self.limit = limit
        #: The phase running now (between phases, the one that ran last).
        self.phase = "setup"
        #: ``phase -> (rss_before, rss_after, peak_rss, duration)`` of finished phases.
        self.phases: dict[str, tuple[int, int, int, float]] = {}
        #: ``phase -> outcome`` and ``phase -> time it ended``, once pytest reported it.
        self.outcomes: dict[str, str] = {}
        self.stops: dict[str, float] = {}
        #: The duration of a teardown that has run and awaits its end (see Recorder).
        self.teardown: float | None = None
        #: What the stream thread already sent: "start" and phase names.
        self.told: set[str] | None = None
        #: Set before the test's ``end`` is queued: from then on the end says it all.
        self.ended = False
        #: What the processes it started came to, once any was seen (plugin/tree.py).
        self.tree: TestTree | None = None
        #: The largest RSS the sampler saw in the running phase: the kernel sums its
        #: counters lazily, and its mark can trail a sample by a few hundred KiB.
        self.sampled_peak = 0

    def progress(self) -> list[dict[str, Any]]:
        """``start`` and ``phase`` messages not sent yet (called by the stream thread)."""
        messages: list[dict[str, Any]] = []
        told = self.told
        if told is None:
            told = self.told = {"start"}
            start = {
                "k": "start",
                "t": self.started,
                "i": self.index,
                "id": wire.cut_nodeid(self.nodeid),
                "rss": self.rss,
            }
            if self.limit is not None:
                start["lim"] = self.limit
            tree = self.tree
            if tree is not None:
                start["tree"] = tree.start
            messages.append(start)
        # Copies taken in one C call each: the test's thread may be adding to them.
        # ``stops`` is written last, so a phase found in it has its outcome.
        stops = dict(self.stops)
        outcomes, phases = dict(self.outcomes), dict(self.phases)
        for phase, stop in stops.items():
            if phase not in told and phase in phases:
                messages.append(
                    {
                        "k": "phase",
                        "t": stop,
                        "i": self.index,
                        "ph": phase,
                        "f": phases[phase],
                        "o": outcomes[phase],
                    }
                )
                told.add(phase)
        return messages


class Stream:
    """Queues this worker's messages and sends them, from the test thread or the sampler."""

    def __init__(
        self,
        sender: Sender | None,
        probe: MemoryProbe,
        interval: float,
        tree: ProcessTree | None = None,
    ) -> None:
        self.interval = interval
        #: The worker's descendants, read with each sample where there are any.
        self._tree = tree
        #: The running test, if any: what the sampler samples and the sink is told about.
        self.test: CurrentTest | None = None
        #: The sampler's latest ``(test index, phase, time, rss)``: what a limit failure shows.
        self.recent: deque[tuple[int, str, float, int]] = deque(maxlen=RECENT)
        #: None: nothing to stream to (a worker on another host, handed no address it
        #: can reach); its figures reach the controller through workeroutput alone.
        self._sender = sender
        self._probe = probe
        #: Messages packed by wire.pack_message, waiting for their numbers.
        self._queue: deque[bytes] = deque()
        #: Either thread may send: the lock keeps the numbering and the socket to one.
        self._lock = threading.Lock()
        self._seq = 0
        self._sent_at = time.monotonic()
        self._wake = threading.Event()
        self._stopping = False
        self._bye: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._run, name="memstream-stream", daemon=True)
        # A forked child (a test using multiprocessing) must not send on its parent's
        # socket, nor wait on a lock the parent's sampler held at the fork: what the
        # child's tests end with stays in its queue.
        self._forked = fork_flag()

    @property
    def sent(self) -> int:
        return 0 if self._sender is None else self._sender.sent

    @property
    def dropped(self) -> int:
        return 0 if self._sender is None else self._sender.dropped

    @property
    def last_seq(self) -> int:
        return self._seq - 1

    def start(self) -> None:
        self._thread.start()

    def pack(self, message: dict[str, Any]) -> bytes:
        """``message`` (with its ``k`` and ``t`` set) packed for :meth:`emit`."""
        return wire.pack_message(message)

    def emit(self, packed: bytes, urgent: bool = False) -> None:
        """Queue a message packed by :meth:`pack` (or alike); send the queue if it is due."""
        if self._sender is None:
            return  # nowhere to stream: the fallback copy holds every end
        queue = self._queue
        queue.append(packed)
        if self._stopping or self._forked:
            return  # the background thread sends what is left (a forked child's: nobody)
        if urgent or len(queue) >= FLUSH_AT or time.monotonic() - self._sent_at >= self.interval:
            # Never the test's problem: the fallback holds every end.
            with contextlib.suppress(Exception):
                self._flush(None, None)

    def stop(self, tests: int, timeout: float) -> None:
        """Send everything still queued and a ``bye``, then close; bounded by ``timeout``."""
        self._bye = {"tests": tests}
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        probe, wake = self._probe, self._wake
        seen = -1  # the index of the test running at the last wake-up
        beat_at = time.monotonic()
        while True:
            wake.wait(self.interval)
            if self._stopping:
                break
            test = self.test
            if test is not None and test.index == seen:
                # Running at two wake-ups in a row: a test the sink should see live.
                self._flush(test, self._sample(test))
                beat_at = time.monotonic()
            else:
                if test is not None and probe.method == SAMPLED:
                    probe.observe(probe.rss())  # where the sampler is the only peak there is
                if time.monotonic() - beat_at >= HEARTBEAT:
                    self._flush(None, self._sample(test))
                    beat_at = time.monotonic()
                elif self._queue and time.monotonic() - self._sent_at >= self.interval:
                    self._flush(None, None)  # the test thread has not sent them for a while
            seen = -1 if test is None else test.index
        if self._sender is None:
            return
        bye = dict(self._bye, k="bye", t=time.time(), sent=self.sent, dropped=self.dropped)
        self._queue.append(self.pack(bye))
        self._flush(None, None)
        self._sender.close()

    def _sample(self, test: CurrentTest | None) -> dict[str, Any]:
        """A sample of the worker's RSS (and tree): of ``test``, or a heartbeat."""
        probe = self._probe
        now, rss = time.time(), probe.rss()
        probe.observe(rss)
        sample: dict[str, Any] = {"k": "sample", "t": now, "i": -1, "ph": "", "s": [[now, rss]]}
        if test is not None:
            if rss > test.sampled_peak:
                test.sampled_peak = rss
            self.recent.append((test.index, test.phase, now, rss))
            sample["i"], sample["ph"] = test.index, test.phase
        if self._tree is not None:
            self._sample_tree(test, rss, sample)
        return sample

    def _sample_tree(self, test: CurrentTest | None, rss: int, sample: dict[str, Any]) -> None:
        """Add the tree's total to a running test's sample, where it has descendants."""
        tree = self._tree
        assert tree is not None
        # The main thread's children, or a tree the test already has: anything else
        # would be a process started by another thread, which a later reading finds.
        if (test is None or test.tree is None) and not tree.any_children():
            return
        with tree.lock:
            reading = tree.read()
            if test is not None and not test.ended:
                if test.tree is None:
                    test.tree = TestTree(test.rss, None)
                test.tree.observe(rss, reading)
        sample["tree"] = rss + reading.memory
        sample["procs"] = len(reading.processes)

    def _flush(self, test: CurrentTest | None, sample: dict[str, Any] | None) -> None:
        sender = self._sender
        if sender is None:
            return
        with self._lock:
            queue, pop = self._queue, self._queue.popleft
            messages: list[bytes] = []
            while queue:
                messages.append(pop())
            # A test whose end is queued needs no start: its end carries every phase.
            if test is not None and not test.ended:
                messages += [self.pack(message) for message in test.progress()]
            if sample is not None:
                messages.append(self.pack(sample))
            for first in range(0, len(messages), CHUNK):
                batch = messages[first : first + CHUNK]
                seq = self._seq
                # Numbered before it goes: a send cut short (Ctrl-C reaches the test's
                # thread) is a gap the sink counts, never a number used twice.
                self._seq += len(batch)
                sender.send(batch, seq)
            self._sent_at = time.monotonic()
