"""The worker end of the stream: a ZeroMQ PUSH socket that never blocks the test run."""

from __future__ import annotations

import errno
import random
import time
from collections.abc import Callable
from typing import TypeVar

import zmq

from pytest_memstream import protocol
from pytest_memstream.faults import Faults

T = TypeVar("T")

#: Frames queued for a sink that is slow or gone before sends start to drop.
SEND_HWM = 1000
#: How long closing may wait for queued frames to leave; a gone sink costs at most this.
LINGER_MS = 500


class Sender:
    """Signs batches of messages and hands them to ZeroMQ without ever blocking.

    A batch that ZeroMQ refuses (its queue is full because the sink is slow or gone) is
    dropped and counted; the sink sees the gap in sequence numbers and the controller
    recovers the test records from ``workeroutput``.
    """

    def __init__(self, endpoint: str, secret: bytes, linger_ms: int = LINGER_MS) -> None:
        self._secret = secret
        self._faults = Faults.from_env()
        if self._faults.worker == "fail":
            raise OSError(errno.EMFILE, "Too many open files (injected by PYTEST_MEMSTREAM_FAULTS)")
        self._random = random.Random(self._faults.seed)
        self._context = zmq.Context()
        try:
            self._socket = self._context.socket(zmq.PUSH)
            self._socket.setsockopt(zmq.SNDHWM, self._faults.hwm or SEND_HWM)
            self._socket.setsockopt(zmq.LINGER, linger_ms)
            self._socket.connect(endpoint)
        except BaseException:
            self._context.destroy(linger=0)  # out of descriptors, say: none kept open
            raise
        self.sent = 0
        self.dropped = 0

    def send(self, messages: list[protocol.Message]) -> bool:
        """Send messages that carry their own numbers (``q``); False if dropped."""
        return self._send_halving(
            messages, lambda part, _: protocol.encode_frame(self._secret, part)
        )

    def send_packed(self, packed: list[bytes], first_seq: int) -> bool:
        """Send messages packed by ``protocol.pack_message``, numbered from ``first_seq``."""
        return self._send_halving(
            packed,
            lambda part, offset: protocol.encode_packed_frame(
                self._secret, part, first_seq + offset
            ),
        )

    def _send_halving(
        self,
        items: list[T],
        encode: Callable[[list[T], int], list[bytes]],
        offset: int = 0,
    ) -> bool:
        """Encode ``items`` (the ``offset``-th onwards of a batch) as one frame and send it."""
        frame = encode(items, offset)
        if len(frame[1]) > protocol.MAX_FRAME and len(items) > 1:
            # Very long node ids: halve the batch rather than have the sink refuse it.
            half = len(items) // 2
            first = self._send_halving(items[:half], encode, offset)
            return self._send_halving(items[half:], encode, offset + half) and first
        return self._send(frame, len(items))

    def _send(self, frame: list[bytes], count: int) -> bool:
        faults = self._faults
        if faults.delay:
            time.sleep(faults.delay)
        if faults.drop and self._random.random() < faults.drop:
            self.sent += count  # lost on the way: the worker cannot know
            return True
        try:
            self._socket.send_multipart(frame, flags=zmq.NOBLOCK, copy=False)
        except zmq.ZMQError:
            # Again (queue full) or a socket that is going away: the run must go on.
            self.dropped += count
            return False
        self.sent += count
        return True

    def close(self) -> None:
        self._socket.close()
        self._context.term()
