"""The sink's start-up: its addresses bound at once, the sink built behind them on a thread.

The controller must tell each worker where to stream as xdist starts it, but importing
ZeroMQ and building the sink would hold the interpreter lock that xdist needs to start
the workers.  So the addresses are bound here first with plain sockets (see
collector/listen.py), and the sink is built behind them while the workers start up.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from pytest_memstream.collector.listen import Listener, check_ipc_path, listen, viewer_binds

if TYPE_CHECKING:
    from pytest_memstream.collector.sink import Sink
    from pytest_memstream.collector.state import RunState
    from pytest_memstream.security import RunKeys


class SinkStarter:
    """Builds and starts the sink on a thread of its own, once xdist started the workers.

    Its addresses are known at once, and the run's state exists before the sink does:
    workers can be told where to stream, and expected, before ZeroMQ is imported.
    :meth:`build_in_background` then builds the sink when the controller has nothing else
    to do.  An address that only ZeroMQ can bind (a host name, an interface, IPv6) makes
    the sink on this thread, at once.
    """

    def __init__(self, keys: RunKeys, bind: str, ready: Callable[[Sink], None]) -> None:
        self._keys = keys
        self._bind = bind
        self._ready = ready
        self._state: RunState | None = None
        #: The run's start, for its state (made later) and its report alike.
        self.began = time.time()
        #: Workers told where to stream before the state was made (see :meth:`expect`),
        #: and the host of each.
        self._expected: list[tuple[str, str]] = []
        self._sink: Sink | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._listeners: tuple[Listener, Listener, Listener] | None = None
        #: More addresses the stream listens on: where workers on other hosts reach it.
        self._more: list[Listener] = []
        self.endpoint = ""
        self.viewer_endpoints: dict[str, str] = {}
        self.viewer_problem = ""
        listeners = _listen_all(bind)
        if listeners is None:
            self._build(None)
            sink = self.wait_for_sink()
            self.endpoint = sink.endpoint
            self.viewer_endpoints = dict(sink.viewer_endpoints)
            self.viewer_problem = sink.viewer_problem
            return
        self.endpoint = listeners[0].endpoint
        self.viewer_endpoints = {
            "snapshot": listeners[1].endpoint,
            "updates": listeners[2].endpoint,
        }
        self.viewer_problem = ""
        self._listeners = listeners
        self._thread = threading.Thread(
            target=self._build, args=(listeners,), name="memstream-sink-setup", daemon=True
        )

    @property
    def state(self) -> RunState:
        """The run's state, which the sink will feed (made on first use, on this thread)."""
        if self._state is None:
            from pytest_memstream.collector.state import RunState

            self._state = RunState(started=self.began)
            for worker, host in self._expected:
                self._state.expect(worker, host)
        return self._state

    def expect(self, worker: str, host: str = "") -> None:
        """A worker will stream to this sink.  Before the sink starts, nothing it sends can
        arrive, so the state is not made for this: xdist tells each worker where to stream
        between starting its process and starting the next one's, and a worker kept
        waiting while the controller imports the state is time the whole run waits."""
        if self._state is None:
            self._expected.append((worker, host))
        else:
            self._state.expect(worker, host)

    def listen_also(self, address: str) -> str:
        """Also listen for the stream on ``address`` (IPv4), before the sink is built;
        the endpoint.  OSError if it cannot be bound, or the sink is already built."""
        if self._listeners is None or self._thread is None or self._thread.ident is not None:
            raise OSError(errno.EALREADY, "the sink has started already")
        listener = listen(f"tcp://{address}:*")
        assert listener is not None  # an IPv4 address: bound here, never left to ZeroMQ
        self._more.append(listener)
        return listener.endpoint

    def build_in_background(self) -> None:
        """Build the sink on its thread (once; :meth:`wait_for_sink` waits for it)."""
        if self._thread is not None and self._thread.ident is None:
            self.state  # noqa: B018 - made here, before the thread may need it
            self._thread.start()

    def _build(self, listeners: tuple[Listener, Listener, Listener] | None) -> None:
        try:
            from pytest_memstream.collector.sink import Sink, SinkError

            try:
                sink = Sink(self.state, self._keys, self._bind, listeners, self._more)
            except SinkError as exc:
                raise pytest.UsageError(f"memstream: {exc}") from None
            try:
                self._ready(sink)
                sink.start()
            except BaseException:
                sink.discard()
                raise
            self._sink = sink
        except BaseException as exc:  # handed to whoever asks for the sink
            self._error = exc
            for listener in [*(listeners or ()), *self._more]:
                listener.close()  # those ZeroMQ never adopted

    def wait_for_sink(self) -> Sink:
        """The running sink, once it is built (starts and waits for the thread that builds it)."""
        if self._thread is not None:
            self.build_in_background()
            self._thread.join()
        if self._sink is None:
            if isinstance(self._error, pytest.UsageError):
                raise self._error
            raise pytest.UsageError(f"memstream: the sink could not start: {self._error!r}")
        if self._sink.viewer_problem and not self.viewer_problem:
            # The viewer sockets failed after their addresses were announced.
            self.viewer_endpoints, self.viewer_problem = {}, self._sink.viewer_problem
        return self._sink

    def remove_files(self) -> None:
        """Close sockets ZeroMQ never adopted, and remove the socket files this run made
        (those that are still the ones it made)."""
        _let_go([*(self._listeners or ()), *self._more])

    def sink_if_started(self) -> Sink | None:
        """The sink if its build was started, without raising (for cleaning up); a sink
        that never was is not built just to be stopped: its sockets are closed."""
        if self._thread is not None and self._thread.ident is None:
            self._thread = None  # and never will be
            self._error = RuntimeError("the run ended before it needed a sink")
            self.remove_files()
            return None
        try:
            return self.wait_for_sink()
        except pytest.UsageError:
            return None


def _listen_all(bind: str) -> tuple[Listener, Listener, Listener] | None:
    """The sink's and the viewers' sockets, bound; None where ZeroMQ must bind them."""
    ipc = bind.startswith("ipc://")
    try:
        if ipc:
            # The viewers' paths too: a run whose viewer sockets cannot be bound goes on
            # without them, but a path too long for any of them is a mistake to say now.
            for path in (bind, *viewer_binds(bind)):
                check_ipc_path(path[len("ipc://") :])
        sink = listen(bind)
    except OSError as exc:
        where = " (with the viewers' -snapshot and -updates)" if ipc else ""
        raise pytest.UsageError(
            f"memstream: cannot bind the sink to {bind!r}{where}: {exc.strerror or exc}"
        ) from None
    if sink is None:
        return None
    bound = [sink]
    try:
        for viewer_bind in viewer_binds(sink.endpoint):
            listener = listen(viewer_bind)
            if listener is None:
                break
            bound.append(listener)
    except OSError as exc:
        if ipc:  # another run's path, or something else that is not ours to take
            _let_go(bound)
            raise pytest.UsageError(
                f"memstream: cannot bind the viewers' socket next to {bind!r}: "
                f"{exc.strerror or exc}"
            ) from None
        # TCP: ZeroMQ will bind them, or say why it cannot
    if len(bound) != 3:
        _let_go(bound)
        return None
    return bound[0], bound[1], bound[2]


def _let_go(listeners: list[Listener]) -> None:
    for listener in listeners:
        listener.close()
        listener.remove_file()
