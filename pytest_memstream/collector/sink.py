"""The sink: a background thread that owns a ZeroMQ PULL socket and feeds RunState.

Its sockets are CURVE servers; the thread also answers the ZAP requests that admit the
run's workers and viewers (security.py), so nothing reaches it from a peer without the
run's keys, and a worker's frames must carry the id its key was issued to.
"""

from __future__ import annotations

import itertools
import threading
import time
import traceback
from collections.abc import Callable, Sequence

import zmq

from pytest_memstream import security
from pytest_memstream.collector.fanout import Fanout
from pytest_memstream.collector.listen import Listener
from pytest_memstream.collector.state import RunState
from pytest_memstream.faults import Faults
from pytest_memstream.protocol import ProtocolError
from pytest_memstream.protocol import stream as wire

#: Frames read in one go before the thread looks at its control socket again.
DRAIN = 256
#: Frames queued per connected peer before ZeroMQ stops reading from it.
RECV_HWM = 1000
#: Connection events that mean a peer did not speak ZeroMQ, or not with the run's keys
#: (a refused key is counted by the ZAP handler instead, once per key).
HANDSHAKE_FAILED = zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
#: A peer retries a failed handshake every ~100 ms: failures closer together than this
#: count as one peer's retries.
RETRY_WINDOW = 1.0
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
        keys: security.RunKeys,
        bind: str,
        listeners: tuple[Listener, Listener, Listener] | None = None,
        more: Sequence[Listener] = (),
    ) -> None:
        """Bind to ``bind``, or adopt ``listeners`` (sink, snapshot, updates; listen.py);
        the stream also adopts ``more``: where workers on other hosts reach it."""
        self.state = state
        self._keys = keys
        self._context = zmq.Context()
        # Bound before any socket that asks it: libzmq admits everyone without it.
        self._zap = security.ZapHandler(self._context, keys, self._workers)
        try:
            self._pull = self._bind(bind, listeners[0] if listeners else None)
            self.endpoint = self._pull.getsockopt_string(zmq.LAST_ENDPOINT)
            for listener in more:
                bind = listener.endpoint
                self._pull.setsockopt(zmq.USE_FD, listener.fd)
                self._pull.bind(bind)
                listener.adopted()
        except zmq.ZMQError as exc:
            self._zap.close()
            self._context.destroy(linger=0)
            for listener in [*(listeners or ()), *more]:
                listener.close()
            raise SinkError(f"cannot bind the sink to {bind!r}: {exc}") from None
        #: Every endpoint the stream listens on, the first one's ``endpoint`` first.
        self.endpoints = [self.endpoint, *(listener.endpoint for listener in more)]
        #: Why viewers cannot attach, if they cannot; the run goes on without them.
        self.viewer_problem = ""
        self.fanout: Fanout | None = None
        try:
            self.fanout = Fanout(
                self._context, state, keys, self.endpoint, listeners[1:] if listeners else None
            )
        except zmq.ZMQError as exc:
            self.viewer_problem = f"cannot bind the viewer sockets next to {self.endpoint}: {exc}"
        #: ``{"snapshot": endpoint, "updates": endpoint}`` for viewers (see ``fanout``).
        self.viewer_endpoints = dict(self.fanout.endpoints) if self.fanout else {}
        #: Called on the sink thread after it applied new messages (e.g. to warn).
        self.on_applied: list[Callable[[], None]] = []
        # Raw bytes on the port never reach recv(); the monitor is how they are counted.
        self._monitor = self._pull.get_monitor_socket(HANDSHAKE_FAILED)
        self._faults = Faults.from_env()
        if self._faults.sink == "gone":
            for endpoint in self.endpoints:
                self._pull.unbind(endpoint)
        control = f"inproc://memstream-sink-{next(_ids)}"
        self._control = self._context.socket(zmq.PAIR)
        self._control.bind(control)
        self._stopper = self._context.socket(zmq.PAIR)
        self._stopper.connect(control)
        self._thread = threading.Thread(target=self._run, name="memstream-sink", daemon=True)
        self._last_handshake_failure = -RETRY_WINDOW
        #: Bugs of ours on the sink thread: how many, and the first one's traceback.
        self.internal_errors = 0
        self.first_internal_error = ""

    def _workers(self) -> list[str]:
        with self.state.cond:
            return list(self.state.workers)

    def _bind(self, bind: str, listener: Listener | None) -> zmq.Socket[bytes]:
        pull = self._context.socket(zmq.PULL)
        pull.setsockopt(zmq.LINGER, 0)
        pull.setsockopt(zmq.RCVHWM, RECV_HWM)
        # ZeroMQ itself disconnects a peer that announces a larger frame.
        pull.setsockopt(zmq.MAXMSGSIZE, wire.MAX_FRAME + 1024)
        security.serve(pull, self._keys, security.STREAM)
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
        poller.register(self._zap.socket, zmq.POLLIN)
        for socket in self.fanout.sockets if self.fanout else ():
            poller.register(socket, zmq.POLLIN)
        try:
            while True:
                timeout = self.fanout.timeout(time.monotonic()) if self.fanout else None
                events = dict(poller.poll(timeout))
                if self._control in events:
                    break
                if self._zap.socket in events:
                    self._admit()
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
            self._zap.close()

    def _admit(self) -> None:
        refused = self._zap.refused
        self._zap.handle()
        if self._zap.refused > refused:
            self.state.reject("refused", self._zap.refused - refused)

    def _count_handshakes(self) -> None:
        # Every event the monitor is subscribed to is a failed handshake: no need to
        # parse it (and zmq.utils.monitor would import asyncio, 30 ms per run).
        while True:
            try:
                self._monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            now = time.monotonic()
            if now - self._last_handshake_failure >= RETRY_WINDOW:
                self.state.reject("handshake")
            self._last_handshake_failure = now

    def _drain(self) -> None:
        for _ in range(DRAIN):
            try:
                frames = self._pull.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                if len(frames) != 2:
                    raise ProtocolError("frame", f"expected [header, payload], got {len(frames)}")
                header = wire.decode_header(frames[0].bytes)
                if header.worker != frames[0].get("User-Id"):
                    raise ProtocolError("identity", f"a frame of {header.worker} from another key")
                batch = wire.decode_payload(frames[1].bytes, header.messages)
            except ProtocolError as exc:
                self.state.reject(exc.reason)
                continue
            try:
                self.state.accept(header, batch)
            except Exception:  # a bug of ours must not silence the stream
                self._internal_error()

    def _internal_error(self) -> None:
        self.internal_errors += 1
        if not self.first_internal_error:
            self.first_internal_error = traceback.format_exc()

    # --- viewers and listeners (see fanout.py) -------------------------------------------

    def _notify(self) -> None:
        for callback in self.on_applied:
            try:
                callback()
            except Exception:  # a bug of ours must not silence the stream
                self._internal_error()

    def _serve_viewers(self, events: dict[object, int], changed: bool = False) -> None:
        if self.fanout is None:
            return
        try:
            if changed:
                self.fanout.changed()
            self.fanout.handle(events)
            self.fanout.tick(time.monotonic())
        except Exception:  # nothing a viewer does may stop the sink
            self._internal_error()

    def _close_fanout(self) -> None:
        try:
            if self.fanout is not None:
                self.fanout.close()
        except Exception:
            self._internal_error()
