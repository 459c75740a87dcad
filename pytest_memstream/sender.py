"""The worker end of the stream: a ZeroMQ PUSH socket that never blocks the test run."""

from __future__ import annotations

import errno
import random
import time

import zmq

from pytest_memstream import security
from pytest_memstream.faults import Faults
from pytest_memstream.protocol import stream

#: Frames queued for a sink that is slow or gone before sends start to drop.
SEND_HWM = 1000
#: How long closing may wait for queued frames to leave; a gone sink costs at most this.
LINGER_MS = 500


class Sender:
    """Frames messages and hands them to ZeroMQ without ever blocking.

    A frame that ZeroMQ refuses (its queue is full because the sink is slow or gone) is
    dropped and counted; the next frame's header says so, and the controller recovers
    the test records from ``workeroutput``.
    """

    def __init__(
        self,
        endpoint: str,
        worker: str,
        server_key: bytes,
        key: bytes,
        linger_ms: int = LINGER_MS,
    ) -> None:
        self.worker = worker
        self._faults = Faults.from_env()
        if self._faults.worker == "fail":
            raise OSError(errno.EMFILE, "Too many open files (injected by PYTEST_MEMSTREAM_FAULTS)")
        self._random = random.Random(self._faults.seed)
        self._context = zmq.Context()
        try:
            self._socket = self._context.socket(zmq.PUSH)
            self._socket.setsockopt(zmq.SNDHWM, self._faults.hwm or SEND_HWM)
            self._socket.setsockopt(zmq.LINGER, linger_ms)
            security.connect_as(self._socket, server_key, key)
            self._socket.connect(endpoint)
        except BaseException:
            self._context.destroy(linger=0)  # out of descriptors, say: none kept open
            raise
        #: Messages handed to ZeroMQ, and those its full queue refused.
        self.sent = 0
        self.dropped = 0

    def send(self, packed: list[bytes], first_seq: int) -> bool:
        """Send messages packed by ``stream.pack_message`` (or alike), numbered from
        ``first_seq``; False if (some of) them were dropped."""
        frame = stream.frame(self.worker, first_seq, self.dropped, packed)
        if len(frame[1]) > stream.MAX_FRAME and len(packed) > 1:
            # Very long node ids: halve the batch rather than have the sink refuse it.
            half = len(packed) // 2
            first = self.send(packed[:half], first_seq)
            return self.send(packed[half:], first_seq + half) and first
        return self._send(frame, len(packed))

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
