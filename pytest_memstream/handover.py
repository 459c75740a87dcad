"""What the controller and a worker hand each other through pytest-xdist, by its shape.

Both entries sit under the key ``"memstream"``: the controller writes :class:`WorkerSpec`
into ``node.workerinput`` (plugin/controller.py), the worker reads it (plugin/worker.py);
the worker writes a :data:`WorkerOutput` into ``config.workeroutput`` as its session
finishes, and the controller's state reads it when the worker goes down
(collector/state.py).  Without xdist the one pytest process hands them to itself, as
worker ``main``.  execnet sends only exact builtin types: these are plain dicts, typed
for the reader and the writer alike.  Nothing here imports pytest, ZeroMQ or msgpack.
"""

from __future__ import annotations

from typing import TypedDict


class WorkerSpec(TypedDict):
    """What a worker needs to measure its tests and stream them (``workerinput``)."""

    #: Where the sink listens; "" when there is nowhere to stream (another host).
    endpoint: str
    #: The sink's CURVE public key, and this worker's own key (never the run's secret).
    server_key: str
    key: str
    #: The worker's id (``gw0``..., or ``main`` without xdist).
    worker: str
    #: Seconds between live samples (``--memstream-interval``).
    interval: float
    #: ``--memstream-limit``: ``[bytes, on]``; None for no limit.
    limit: list[int | str] | None
    #: Measure the processes its tests start (``--memstream-children``).
    children: bool


class WorkerTotals(TypedDict):
    """A worker's own account of its stream, and every test record it sent (packed ends),
    from which the controller fills whatever the stream lost (``workeroutput``)."""

    #: The stream protocol's version these records are packed in.
    version: int
    pid: int
    #: Messages handed to ZeroMQ, and those its full queue refused.
    sent: int
    dropped: int
    #: The sequence number of the last message numbered (-1: none).
    last_seq: int
    #: Tests measured, and their ``end`` messages, packed and concatenated.
    tests: int
    records: bytes


class WorkerFailure(TypedDict):
    """A worker that could not measure at all: why (its tests ran unmeasured)."""

    version: int
    error: str


#: What a worker leaves in ``workeroutput["memstream"]`` (absent when it crashed).
WorkerOutput = WorkerTotals | WorkerFailure
