"""What the sink knows about the run: per test, per worker and in total.

The sink thread applies validated messages under ``RunState.cond``; the controller reads
under the same lock and waits on it for a worker's stream to drain.  Nothing here knows
about pytest or ZeroMQ.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from pytest_memstream.collector.records import RunningTest, TestRecord, WorkerState
from pytest_memstream.collector.totals import Running, RunTotals
from pytest_memstream.protocol import ProtocolError
from pytest_memstream.protocol import stream as wire
from pytest_memstream.protocol.stream import Header, Message


class RunState:
    """The aggregate of every worker's stream, safe to share between two threads."""

    def __init__(self, started: float | None = None) -> None:
        self.cond = threading.Condition()
        self.started = time.time() if started is None else started
        self.workers: dict[str, WorkerState] = {}
        self.tests: dict[tuple[str, int], TestRecord] = {}
        self.rejects: Counter[str] = Counter()
        self.messages = 0
        self.frames = 0
        #: The run as the machine sees it (collector/totals.py).
        self.totals = RunTotals()

    # --- the sink thread's side --------------------------------------------------------

    def expect(self, worker: str, host: str = "") -> None:
        """Admit messages from ``worker`` (an id the controller handed out), on ``host``."""
        with self.cond:
            state = self.workers.setdefault(worker, WorkerState(worker, heard=time.monotonic()))
            state.host = state.host or host

    def reject(self, reason: str, count: int = 1) -> None:
        with self.cond:
            self.rejects[reason] += count

    def accept(self, header: Header, batch: list[Any]) -> None:
        """Apply one frame's messages, each checked on its own."""
        with self.cond:
            self.frames += 1
            worker = self.workers.get(header.worker)
            if worker is None:
                self.rejects["unknown-worker"] += 1
                return
            if worker.status not in ("expected", "running"):
                # It went down and was settled: nothing it sent is still on its way.
                self.rejects["late"] += 1
                return
            numbers = worker.numbers
            parts = numbers.claim(header.first, header.messages, header.dropped)
            if isinstance(parts, str):
                self.rejects[parts] += 1
                return
            worker.lost = numbers.lost()
            worker.dropped = numbers.dropped()
            worker.heard = time.monotonic()
            ended = worker.ended
            if len(parts) != 1 or parts[0][1] - parts[0][0] != len(batch):
                # Some of its numbers were received before: those messages are replays.
                first = header.first
                fresh = [raw for n, raw in enumerate(batch) if _within(first + n, parts)]
                self.rejects["replay"] += len(batch) - len(fresh)
                batch = fresh
            for raw in batch:
                try:
                    message = wire.check_message(raw)
                except ProtocolError as exc:
                    self.rejects[exc.reason] += 1
                    continue
                worker.received += 1
                self.messages += 1
                kind = message["k"]
                if kind == "end":
                    self._on_end(worker, message)  # most of a run's messages
                elif kind == "sample":
                    self._on_sample(worker, message)  # most of a long test's
                else:
                    getattr(self, "_on_" + kind)(worker, message)
            if worker.ended > ended:
                # A test's exact peak, in the total beside the others' latest figures.
                self._note_totals(worker.id, worker.last_peak)
            self._note_totals()
            self.cond.notify_all()

    def _note_totals(self, peaked: str = "", peak: int = 0) -> None:
        """Every live worker's latest figure after a change (``peaked``'s at ``peak``,
        where a test just told its peak), under the lock."""
        memory: dict[str, int] = {}
        running: list[Running] = []
        for worker in self.workers.values():
            if worker.status != "running" or not worker.rss:
                continue
            held = worker.held
            if worker.id == peaked:
                held = max(held, peak)
            memory[worker.id] = held
            test = worker.running
            nodeid = test.nodeid if test is not None and test.index == worker.current else ""
            running.append(Running(worker.id, worker.current, nodeid, held))
        self.totals.note(time.time(), memory, running)

    def _on_hello(self, worker: WorkerState, message: Message) -> None:
        worker.rss = message["rss"]
        worker.pid = message["pid"]
        worker.method = message["method"]
        worker.platform = message["platform"]
        worker.host = message.get("host") or worker.host
        worker.max_rss = max(worker.max_rss, message["rss"])
        if worker.status == "expected":
            worker.status = "running"

    def _on_start(self, worker: WorkerState, message: Message) -> None:
        if worker.running is not None:
            worker.unfinished[worker.running.index] = worker.running.nodeid
        if worker.status == "expected":
            worker.status = "running"
        rss = message["rss"]
        worker.last_index = max(worker.last_index, message["i"])
        running = worker.running = RunningTest(
            message["i"], message["id"], message["t"], rss, rss=rss, peak=rss
        )
        running.limit = message.get("lim")
        tree = worker.tree = message.get("tree")
        worker.rss, worker.current = rss, running.index
        if tree is not None:
            running.tree_start = running.tree = running.tree_peak = tree

    def _on_phase(self, worker: WorkerState, message: Message) -> None:
        running = worker.running
        figures = message["f"]
        worker.max_rss = max(worker.max_rss, figures[2])
        worker.rss = figures[1]
        if running is not None and running.index == message["i"]:
            running.phases[message["ph"]] = figures
            running.rss = figures[1]
            running.peak = max(running.peak, figures[2])

    def _on_sample(self, worker: WorkerState, message: Message) -> None:
        samples = message["s"]
        for _, rss in samples:
            if rss > worker.max_rss:
                worker.max_rss = rss
        # A heartbeat, or a long test's sample: the worker's figure for the run's total.
        worker.rss, worker.tree, worker.current = samples[-1][1], message.get("tree"), message["i"]
        running = worker.running
        if running is not None and running.index == message["i"]:
            running.phase = message["ph"] or running.phase
            running.samples.extend(samples)
            rss = running.rss = samples[-1][1]
            if rss > running.peak:
                running.peak = rss
            tree = message.get("tree")
            if tree is not None:
                running.tree = tree
                running.tree_peak = max(running.tree_peak, tree)
                running.processes = max(running.processes, message.get("procs", 0))
                if running.tree_start is None:  # children appeared during the test
                    running.tree_start = running.rss_start

    def _on_end(self, worker: WorkerState, message: Message) -> None:
        record = TestRecord.from_end(worker.id, message, "stream")
        # The test it ran last: its peak is what the run's total names it for.
        worker.rss, worker.current, worker.last_peak = (
            record.rss_end,
            record.index,
            record.tree_peak,
        )
        if record.tree is None:
            worker.tree = None
        index = record.index
        if index > worker.last_index:
            worker.last_index = index
        if record.peak_rss > worker.max_rss:
            worker.max_rss = record.peak_rss
        if self.tests.setdefault((worker.id, index), record) is record:
            worker.ended += 1
        if worker.unfinished:
            worker.unfinished.pop(index, None)
        if worker.running is not None and worker.running.index == index:
            worker.running = None

    def _on_bye(self, worker: WorkerState, message: Message) -> None:
        worker.bye = True
        worker.sent = message["sent"]
        worker.dropped = message["dropped"]

    # --- the controller's side ---------------------------------------------------------

    def forget(self) -> None:
        """Let go of every test's record, once the run has been reported.

        Freed now by reference counts, they cost little; kept, they would be walked by
        each full collection left in the process (pytest's own at unconfigure, and the
        interpreter's as it exits).
        """
        with self.cond:
            self.tests = {}

    def nodeids(self) -> set[str]:
        """The node id of every test that has a record."""
        with self.cond:
            return {record.nodeid for record in self.tests.values()}

    def wait_drained(self, worker: str, last_seq: int | None, quiet: float, timeout: float) -> bool:
        """Wait for ``worker``'s message ``last_seq`` to be applied; True if it was.

        Gives up when nothing arrived from the worker for ``quiet`` seconds (a sink or a
        socket that is stuck) or after ``timeout`` in all.  With ``last_seq`` None (a
        crashed worker: its last number is unknown) it waits for the quiet only.
        """
        state = self.workers.get(worker)
        if state is None:
            return False
        if last_seq is not None and last_seq < 0:
            return True  # it streamed nothing
        deadline = time.monotonic() + timeout
        # Quiet since the worker was last heard from, not since the wait began: when the
        # sink is gone, the workers' waits end together instead of one after the other.
        # A worker idle for a while still gets ``grace`` for its last frames to land.
        grace = min(quiet, 0.2)
        floor = time.monotonic() - (quiet - grace)
        with self.cond:
            while last_seq is None or not state.numbers.has(last_seq):
                now = time.monotonic()
                since = max(state.heard, floor)
                if now >= deadline or now - since >= quiet:
                    return False
                self.cond.wait(min(quiet - (now - since), deadline - now))
            return True

    def finish_worker(
        self,
        worker: str,
        fallback: Mapping[str, object] | None,
        error: str | None,
        killed_by: str | None = None,
    ) -> None:
        """The worker is down: fill gaps from its fallback, and name what is lost.

        ``fallback`` is what the worker put in ``workeroutput`` (None if it crashed);
        ``error`` is why it went down, if it did not finish normally.
        """
        records: list[Message] = []
        problem = ""
        unmeasured = False
        decoded = False
        with self.cond:
            ended = self.workers[worker].ended if worker in self.workers else -1
        if fallback is not None and fallback.get("error"):
            # The worker could not measure (its recorder never started): nothing to fill.
            problem, fallback, unmeasured = str(fallback["error"])[:500], None, True
        tests = _whole(fallback, "tests", 0)
        # Decoding every record costs ~12 µs a test: only when the stream missed some.
        if fallback is not None and tests != ended:
            blob = fallback.get("records")
            if isinstance(blob, bytes):
                records, _ = wire.decode_records(blob, tests)
                decoded = True
            else:
                problem = "unreadable fallback: it holds no records"
        with self.cond:
            state = self.workers.setdefault(worker, WorkerState(worker))
            state.killed_by = killed_by
            if fallback is not None:
                # The worker's own counts, over whatever frames said.
                last = _whole(fallback, "last_seq", -1)
                state.dropped = _whole(fallback, "dropped", state.dropped)
                state.sent = _whole(fallback, "sent", state.sent)
                received = state.numbers.received_upto(last)
                state.lost = max(0, last + 1 - state.dropped - received)
                if not state.pid:  # it never reached the sink (another host, say)
                    state.pid = _whole(fallback, "pid", 0)
            for message in records:
                key = (worker, message["i"])
                if key not in self.tests:
                    record = TestRecord.from_end(worker, message, "fallback")
                    self.tests[key] = record
                    state.max_rss = max(state.max_rss, record.peak_rss)
                    state.recovered += 1
                    state.last_index = max(state.last_index, message["i"])
                state.unfinished.pop(message["i"], None)
            state.unrecoverable = len(state.unfinished)
            if decoded:
                # Tests the worker ended whose record neither the stream nor a readable
                # fallback record brought.
                missing = tests - state.ended - state.recovered
                state.unrecoverable = max(state.unrecoverable, missing)
            if error is not None:
                state.status, state.error = "crashed", error
                self._record_crash(state)
            elif problem or fallback is None:
                state.status, state.error = "incomplete", problem or "no workeroutput"
            else:
                state.status = "recovered" if state.recovered else "complete"
            state.unmeasured = state.unmeasured or unmeasured
            self._note_totals()  # what it held leaves the run's total
            self.cond.notify_all()

    def settle_unfinished(self) -> None:
        """The run is over: a worker that has not gone down is ``incomplete``.

        That includes a worker never heard from, such as one still collecting when the
        run was stopped (a worker says hello only once it has sent its collection).
        """
        for worker in list(self.workers.values()):
            if worker.status in ("expected", "running"):
                self.finish_worker(worker.id, None, None)

    def _record_crash(self, state: WorkerState) -> None:
        running = state.running
        if running is None:
            return
        phases = dict(running.phases)
        # The phase the worker died in, as the samples saw it: it ends the test's figures.
        known = phases.pop(running.phase, None)
        if known is not None:
            before, duration = known[0], known[3]
        else:
            before, duration = (running.rss if phases else running.rss_start), 0.0
        phases[running.phase] = [before, running.rss, running.peak, duration]
        last = running.samples[-1][0] if running.samples else running.started
        record = TestRecord(
            nodeid=running.nodeid,
            worker=state.id,
            index=running.index,
            outcome="crashed",
            method="sampled",
            source="stream",
            phases=phases,
            started=running.started,
            finished=last,
            samples=[list(s) for s in running.samples],
            climb_rate=running.climb_rate(),
            limit=running.limit,
        )
        record.kept = None  # even if it died in its teardown
        if running.tree_start is not None:
            tree_peak = max(running.tree_peak, record.peak_rss)
            record.set_tree(
                {"peak": tree_peak, "start": running.tree_start, "count": running.processes,
                 "max_rss": 0, "method": "", "killed": []}
            )  # fmt: skip
        self.tests[(state.id, running.index)] = record
        state.crashed = running.nodeid
        state.running = None

    def note_crashed_test(self, worker: str, nodeid: str) -> None:
        """xdist says ``nodeid`` was running when ``worker`` died; keep it if the stream did not.

        Its only source is xdist's crash report: no figure of it reached the controller.
        """
        with self.cond:
            state = self.workers.setdefault(worker, WorkerState(worker))
            if state.crashed:
                return
            state.last_index += 1
            now = time.time()
            self.tests[(worker, state.last_index)] = TestRecord(
                nodeid, worker, state.last_index, "crashed", "sampled", "xdist", {}, now, now
            )
            state.crashed = nodeid
            state.status = "crashed"


def _whole(fallback: Mapping[str, object] | None, name: str, default: int) -> int:
    """A whole number from a worker's ``workeroutput``, or ``default``."""
    value = None if fallback is None else fallback.get(name)
    return value if type(value) is int and value >= -1 else default


def _within(seq: int, parts: list[tuple[int, int]]) -> bool:
    return any(start <= seq < end for start, end in parts)
