"""Part 3: how many samples one sink accepts when synthetic workers push as fast as they can.

The senders are separate processes that speak the real protocol through the real sockets
(``Sender`` → ``stream.frame`` → ZeroMQ PUSH over tcp loopback, CurveZMQ), into one real
``Sink`` thread feeding a ``RunState``.  The rate is taken over a window in the middle of
the push, from ``RunState.messages``; CPU is that of the sink thread and of the ZeroMQ I/O
thread of its context, read from ``/proc/self/task``.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.synchronize import Event
from pathlib import Path

from benchmarks import viewer
from benchmarks.common import Table, verdict
from pytest_memstream.collector.sink import Sink
from pytest_memstream.collector.state import RunState
from pytest_memstream.protocol import stream
from pytest_memstream.security import RunKeys
from pytest_memstream.sender import Sender

AIM = 300_000
SENDERS = 2
#: (samples per message, messages per frame, what it stands for)
SHAPES = (
    (1, 256, "as a worker sends them: one sample per message, 256 messages per frame"),
    (64, 16, "64 samples per message, 16 messages per frame"),
    (stream.MAX_SAMPLES, 1, f"{stream.MAX_SAMPLES} samples (MAX_SAMPLES) per message"),
)
#: A refused send means the sink's queues are full: back off this long rather than spin on
#: the CPU that the sink needs (the measurement is what the sink accepts, not what is sent).
BACKOFF = 0.001


def _sender(
    endpoint: str,
    secret: bytes,
    worker: str,
    per_message: int,
    per_frame: int,
    go: Event,
    stop: Event,
) -> None:
    keys = RunKeys(secret)
    sender = Sender(endpoint, worker, keys.server.public, keys.worker(worker))
    seq = 0

    def envelope(kind: str, **fields: object) -> stream.Message:
        return {"k": kind, "t": time.time(), **fields}

    rss = 200 << 20
    opening = [
        envelope("hello", pid=os.getpid(), method="hwm", interval=0.1, rss=rss, platform="linux"),
        envelope("start", i=0, id="bench/test_x.py::test_push", rss=rss),
    ]
    sample = envelope("sample", i=0, ph="call", s=[[time.time(), rss]] * per_message)
    for message in [*opening, sample]:
        stream.check_message(message)  # what we send is what the sink must accept
    go.wait()
    sender.send([stream.pack_message(message) for message in opening], seq)
    seq += len(opening)
    while not stop.is_set():
        now = time.time()
        pairs = [[now, rss + i * 4096] for i in range(per_message)]
        batch = [stream.pack_message(envelope("sample", i=0, ph="call", s=pairs))]
        batch *= per_frame
        sent = sender.send(batch, seq)
        seq += per_frame
        if not sent:
            time.sleep(BACKOFF)
    sender.close()


def _thread_cpu() -> dict[int, tuple[str, float]]:
    """Name and CPU seconds of each thread of this process, by native thread id."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float]] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(task.name)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


@dataclass
class Result:
    messages_per_s: float
    samples_per_s: float
    sink_cpu: float
    io_cpu: float
    window: float
    rejected: int
    lost: int
    #: What the attached viewer saw, by event kind (None: no viewer).
    viewer: dict[str, float] | None = None


def measure(per_message: int, per_frame: int, seconds: float, with_viewer: bool) -> Result:
    state = RunState()
    secret = os.urandom(32)
    sink = Sink(state, RunKeys(secret), "tcp://127.0.0.1")
    sink.start()
    sink_tid = next(t.native_id for t in threading.enumerate() if t.name == "memstream-sink")
    context = multiprocessing.get_context("spawn")
    go, stop = context.Event(), context.Event()
    seen = context.Queue()
    watcher = None
    if with_viewer:
        endpoints: dict[str, str] = getattr(sink, "viewer_endpoints")  # noqa: B009
        watcher = context.Process(
            target=viewer.count_updates,
            args=(endpoints["snapshot"], secret, stop, seen),
            daemon=True,
        )
        watcher.start()
    workers = [f"gw{i}" for i in range(SENDERS)]
    procs = []
    for worker in workers:
        state.expect(worker)
        proc = context.Process(
            target=_sender,
            args=(sink.endpoint, secret, worker, per_message, per_frame, go, stop),
            daemon=True,
        )
        proc.start()
        procs.append(proc)
    try:
        go.set()
        # A measuring window, not a synchronisation: skip the start, then count.
        time.sleep(min(1.0, seconds / 3))
        with state.cond:
            messages0 = state.messages
        cpu0, t0 = _thread_cpu(), time.perf_counter()
        time.sleep(seconds)
        with state.cond:
            messages1 = state.messages
        cpu1, t1 = _thread_cpu(), time.perf_counter()
    finally:
        stop.set()
        counts = seen.get(timeout=30) if watcher is not None else None
        for proc in [*procs, *([watcher] if watcher is not None else [])]:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        sink.stop()
    window = t1 - t0

    def cpu(tid: int | None = None, prefix: str = "") -> float:
        return sum(
            seconds - cpu0.get(task, (name, 0.0))[1]
            for task, (name, seconds) in cpu1.items()
            if task == tid or (prefix and name.startswith(prefix))
        )

    messages = messages1 - messages0
    return Result(
        messages_per_s=messages / window,
        samples_per_s=messages * per_message / window,
        sink_cpu=cpu(tid=sink_tid) / window,
        io_cpu=cpu(prefix="ZMQbg/IO") / window,
        window=window,
        rejected=sum(state.rejects.values()),
        lost=sum(w.lost for w in state.workers.values()),
        viewer=counts,
    )


def run_part(long: bool) -> str:
    seconds = 10.0 if long else 3.0
    has_viewer = viewer.available()
    table = Table(
        f"3. Sink throughput: {SENDERS} sender processes pushing as fast as they can",
        [
            "frames",
            "viewer",
            "messages/s accepted",
            "samples/s accepted",
            "sink thread CPU",
            "samples per sink CPU-second",
            f"aim ≥ {AIM:,} samples/s on one core",
        ],
    )
    for per_message, per_frame, what in SHAPES:
        for with_viewer in (False, True):
            if with_viewer and not has_viewer:
                table.add(what, viewer.UNAVAILABLE, "", "", "", "", "")
                continue
            r = measure(per_message, per_frame, seconds, with_viewer)
            per_cpu = r.samples_per_s / r.sink_cpu if r.sink_cpu > 0 else float("nan")
            label = "none"
            if r.viewer is not None:
                updates = int(r.viewer.get("update", 0))
                label = f"1 attached: {updates:,} updates"
                if updates > 1:
                    label += f", one per {r.viewer['span'] / (updates - 1):.2f} s"
                if r.viewer.get("behind"):
                    label += f", {int(r.viewer['behind'])} resyncs"
            print(f"  {what}, {label}: {r.samples_per_s:,.0f} samples/s", file=sys.stderr)
            table.add(
                what,
                label,
                f"{r.messages_per_s:,.0f}",
                f"{r.samples_per_s:,.0f}",
                f"{r.sink_cpu:.0%} (+ {r.io_cpu:.0%} ZeroMQ I/O thread)",
                f"{per_cpu:,.0f}",
                verdict(min(r.samples_per_s, per_cpu) >= AIM),
            )
            if r.rejected:
                table.notes.append(f"**{r.rejected} messages rejected** in the run of: {what}.")
    table.notes += [
        f"Window: {seconds:.0f} s after a short start; messages every sender's queue refused "
        "(the sink was full) are not counted, only what `RunState` applied. Every message "
        "passes `stream.check_message` and goes through `Sink` → `decode_payload` → "
        "`RunState.accept`, into a running test's sample buffer. CPU is a share of one core.",
        "The target is judged on the smaller of samples/s and samples per sink CPU-second, "
        f"with {SENDERS} senders and the sink sharing the machine's {os.cpu_count()} CPUs.",
        "The viewer is a separate process running `pytest_memstream.cli.client.Viewer` (what "
        "`memstream watch` uses) against the sink's fan-out; it counts the updates it applies."
        if has_viewer
        else "With a viewer attached: `pytest_memstream` has no viewer fan-out to attach to "
        "yet; those rows fill in when it lands.",
    ]
    return table.markdown()
