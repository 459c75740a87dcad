"""Speaking to a sink as a worker does: its keys, its socket, its frames."""

from __future__ import annotations

from typing import Any

import zmq

from pytest_memstream import security
from pytest_memstream.protocol import stream as wire

#: A run's keys, from a fixed secret (the ``sink`` fixture's sink admits them).
KEYS = security.RunKeys(b"s" * 32)

HELLO = {"k": "hello", "t": 1.0, "pid": 1, "method": "hwm", "interval": 0.1, "rss": 1,
         "platform": "linux"}  # fmt: skip


def worker_socket(
    context: zmq.Context[Any], endpoint: str, keys: security.RunKeys, worker: str
) -> zmq.Socket[Any]:
    """A PUSH socket connected to ``endpoint`` with ``worker``'s key of the run ``keys``."""
    push: zmq.Socket[Any] = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 2000)
    security.connect_as(push, keys.server.public, keys.worker(worker))
    push.connect(endpoint)
    return push


def send(
    push: zmq.Socket[Any], worker: str, first: int, messages: list[Any], dropped: int = 0
) -> None:
    """One frame of ``messages`` (maps or arrays), numbered from ``first``."""
    packed = [wire.pack_message(m) for m in messages]
    push.send_multipart(wire.frame(worker, first, dropped, packed))
