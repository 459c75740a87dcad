"""The sink: a background thread that owns a ZeroMQ PULL socket and feeds RunState."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

import zmq

from pytest_memstream import protocol
from pytest_memstream.collector.fanout import Fanout
from pytest_memstream.collector.listen import Listener
from pytest_memstream.collector.state import RunState
from pytest_memstream.faults import Faults

#: Frames read in one go before the thread looks at its control socket again.
DRAIN = 256
#: Frames queued per connected peer before ZeroMQ stops reading from it.
RECV_HWM = 1000
#: Connection events that mean a peer did not speak ZeroMQ (or not our version of it).
HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
_ids = itertools.count()


class SinkError(RuntimeError):
    """The sink could not start (for example: the endpoint cannot be bound)."""


class Sink:
    """Receives every worker's frames, authenticates and decodes them, applies them.

    The thread owns its sockets; ``stop()`` asks it, over an inproc socket, to close them.
    No input can stop it: anything that fails to decode is counted in ``state.rejects``.
    """

    def __init__(
        self,
        state: RunState,
        secret: bytes,
        bind: str,
        listeners: tuple[Listener, Listener, Listener] | None = None,
    ) -> None:
        """Bind to ``bind``, or adopt ``listeners`` (sink, snapshot, updates; listen.py)."""
        self.state = state
        self._secret = secret
        self._context = zmq.Context()
        try:
            self._pull = self._bind(bind, listeners[0] if listeners else None)
        except zmq.ZMQError as exc:
            self._context.destroy(linger=0)
            for listener in listeners or ():
                listener.close()
            raise SinkError(f"cannot bind the sink to {bind!r}: {exc}") from None
        self.endpoint = self._pull.getsockopt_string(zmq.LAST_ENDPOINT)
        #: Why viewers cannot attach, if they cannot; the run goes on without them.
        self.viewer_problem = ""
        self.fanout: Fanout | None = None
        try:
            self.fanout = Fanout(
                self._context, state, secret, self.endpoint, listeners[1:] if listeners else None
            )
        except zmq.ZMQError as exc:
            self.viewer_problem = f"cannot bind the viewer sockets next to {self.endpoint}: {exc}"
        #: ``{"snapshot": endpoint, "updates": endpoint}`` for viewers (see ``fanout``).
        self.viewer_endpoints = dict(self.fanout.endpoints) if self.fanout else {}
        #: Called on the sink thread after it applied new messages (e.g. to warn).
        self.listeners: list[Callable[[], None]] = []
        # Raw bytes on the port never reach recv(); the monitor is how they are counted.
        self._monitor = self._pull.get_monitor_socket(HANDSHAKE_FAILED)
        self._faults = Faults.from_env()
        if self._faults.sink == "gone":
            self._pull.unbind(self.endpoint)
        control = f"inproc://memstream-sink-{next(_ids)}"
        self._control = self._context.socket(zmq.PAIR)
        self._control.bind(control)
        self._stopper = self._context.socket(zmq.PAIR)
        self._stopper.connect(control)
        self._thread = threading.Thread(target=self._run, name="memstream-sink", daemon=True)
        self.internal_errors = 0

    def _bind(self, bind: str, listener: Listener | None) -> zmq.Socket[bytes]:
        pull = self._context.socket(zmq.PULL)
        pull.setsockopt(zmq.LINGER, 0)
        pull.setsockopt(zmq.RCVHWM, RECV_HWM)
        # ZeroMQ itself disconnects a peer that announces a larger frame.
        pull.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_FRAME + 1024)
        host = bind[len("tcp://") :] if bind.startswith("tcp://") else None
        if host is not None and (host.endswith("]") or ":" not in host):
            bind += ":*"  # a host without a port: any free port
        if listener is not None:
            pull.setsockopt(zmq.USE_FD, listener.fd)
            bind = listener.endpoint
        try:
            pull.bind(bind)
        except zmq.ZMQError:
            pull.close()
            raise
        if listener is not None:
            listener.adopted()
        return pull

    def start(self) -> None:
        self._thread.start()

    def discard(self) -> None:
        """Let go of a sink that was never started: its sockets, ports and context."""
        self._context.destroy(linger=0)

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            self._stopper.send(b"stop")
            self._thread.join(timeout)
        self._stopper.close(linger=0)
        if not self._thread.is_alive():
            self._context.term()

    def _run(self) -> None:
        poller = zmq.Poller()
        if not self._faults.sink:
            poller.register(self._pull, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        poller.register(self._control, zmq.POLLIN)
        for socket in self.fanout.sockets if self.fanout else ():
            poller.register(socket, zmq.POLLIN)
        try:
            while True:
                timeout = self.fanout.timeout(time.monotonic()) if self.fanout else None
                events = dict(poller.poll(timeout))
                if self._control in events:
                    break
                if self._monitor in events:
                    self._count_handshakes()
                if self._pull in events:
                    self._drain()
                    self._notify()
                self._serve_viewers(events, changed=self._pull in events)
        finally:
            self._close_fanout()
            self._pull.disable_monitor()
            self._monitor.close(linger=0)
            self._pull.close(linger=0)
            self._control.close(linger=0)

    def _count_handshakes(self) -> None:
        # Every event the monitor is subscribed to is a failed handshake: no need to
        # parse it (and zmq.utils.monitor would import asyncio, 30 ms per run).
        while True:
            try:
                self._monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.state.reject("handshake")

    def _drain(self) -> None:
        for _ in range(DRAIN):
            try:
                frames = self._pull.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                batch = protocol.decode_frame(self._secret, frames)
            except protocol.ProtocolError as exc:
                self.state.reject(exc.reason)
                continue
            try:
                self.state.accept(batch)
            except Exception:  # a bug of ours must not silence the stream
                self.internal_errors += 1

    # --- viewers and listeners (see fanout.py) -------------------------------------------

    def _notify(self) -> None:
        for listener in self.listeners:
            try:
                listener()
            except Exception:  # a bug of ours must not silence the stream
                self.internal_errors += 1

    def _serve_viewers(self, events: dict[object, int], changed: bool = False) -> None:
        if self.fanout is None:
            return
        try:
            if changed:
                self.fanout.changed()
            self.fanout.handle(events)
            self.fanout.tick(time.monotonic())
        except Exception:  # nothing a viewer does may stop the sink
            self.internal_errors += 1

    def _close_fanout(self) -> None:
        try:
            if self.fanout is not None:
                self.fanout.close()
        except Exception:
            self.internal_errors += 1
