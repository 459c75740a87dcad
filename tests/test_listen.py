"""Sockets bound before ZeroMQ is imported, and the sink built on a thread behind them."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
import zmq
from streams import HELLO, send, worker_socket

from pytest_memstream.collector.listen import listen
from pytest_memstream.collector.sink import Sink
from pytest_memstream.plugin.sinkstart import SinkStarter
from pytest_memstream.security import RunKeys


def no_alarm(sink: Sink) -> None:
    pass


@pytest.fixture
def context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.mark.parametrize(
    "bind", ["tcp://localhost", "tcp://eth0:*", "tcp://[::1]:*", "tcp://1.2.3.4:x"]
)
def test_what_only_zeromq_can_bind_is_left_to_it(bind: str) -> None:
    assert listen(bind) is None


@pytest.mark.parametrize("bind", ["tcp://127.0.0.1", "tcp://127.0.0.1:*", "tcp://*:*"])
def test_a_literal_address_is_bound_on_a_free_port(bind: str) -> None:
    listener = listen(bind)
    assert listener is not None
    host, _, port = listener.endpoint[len("tcp://") :].partition(":")
    assert host == ("0.0.0.0" if "*:" in bind else "127.0.0.1")
    assert int(port) > 0
    assert not os.get_inheritable(listener.fd)  # xdist's workers must not hold it open
    listener.close()
    assert listener.fd == -1


def test_an_address_in_use_is_a_clear_usage_error() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        with pytest.raises(
            pytest.UsageError, match=rf"cannot bind the sink to 'tcp://127.0.0.1:{port}'"
        ):
            SinkStarter(RunKeys(os.urandom(32)), f"tcp://127.0.0.1:{port}", no_alarm)
    finally:
        taken.close()


def test_a_port_out_of_range_is_a_usage_error_not_an_overflow() -> None:
    with pytest.raises(OSError, match="port 65536 is not between 0 and 65535"):
        listen("tcp://127.0.0.1:65536")
    with pytest.raises(pytest.UsageError, match=r"cannot bind the sink to 'tcp://\*:99999'"):
        SinkStarter(RunKeys(os.urandom(32)), "tcp://*:99999", no_alarm)


def test_a_worker_that_connects_before_the_sink_exists_is_heard(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    keys = RunKeys(os.urandom(32))
    starter = SinkStarter(keys, "tcp://127.0.0.1", no_alarm)
    # The worker side may connect and send at once: the kernel holds the connection
    # until ZeroMQ, on the starter's thread, adopts the listening socket.
    starter.expect("gw0")  # as the controller does before it starts a worker
    push = worker_socket(context, starter.endpoint, keys, "gw0")
    sink = starter.wait_for_sink()
    send(push, "gw0", 0, [HELLO])
    assert sink.endpoint == starter.endpoint
    assert sink.viewer_endpoints == starter.viewer_endpoints
    assert sink.state.wait_drained("gw0", 0, quiet=10.0, timeout=10.0)
    assert sink.state.workers["gw0"].pid == 1
    push.close(linger=0)
    sink.stop()


def test_the_stream_also_listens_where_workers_on_other_hosts_reach_it(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    keys = RunKeys(os.urandom(32))
    starter = SinkStarter(keys, "tcp://127.0.0.1", no_alarm)
    # 127.0.0.2 stands for the address of an interface that faces another host.
    also = starter.listen_also("127.0.0.2")
    assert also.startswith("tcp://127.0.0.2:")
    for worker, endpoint in (("gw0", starter.endpoint), ("gw1", also)):
        starter.expect(worker)
        send(worker_socket(context, endpoint, keys, worker), worker, 0, [HELLO])
    sink = starter.wait_for_sink()
    assert sink.endpoint == starter.endpoint and sink.endpoints == [starter.endpoint, also]
    for worker in ("gw0", "gw1"):
        assert sink.state.wait_drained(worker, 0, quiet=10.0, timeout=10.0)
    with pytest.raises(OSError, match="the sink has started already"):
        starter.listen_also("127.0.0.3")  # the sink thread owns its sockets by now
    sink.stop()


def test_a_host_name_makes_the_sink_at_once() -> None:
    starter = SinkStarter(RunKeys(os.urandom(32)), "tcp://localhost", no_alarm)
    sink = starter.wait_for_sink()
    assert starter.endpoint == sink.endpoint
    assert starter.endpoint.startswith("tcp://127.0.0.1:") or starter.endpoint.startswith(
        "tcp://[::1]:"
    )
    sink.stop()


def test_a_sink_that_cannot_start_is_named_when_it_is_needed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A ZeroMQ without ZMQ_USE_FD, say: the thread fails, and the controller says so
    # where it first needs the sink instead of hanging or losing the reason.
    def broken(*args: object) -> None:
        raise RuntimeError("no USE_FD here")

    monkeypatch.setattr(Sink, "__init__", broken)
    starter = SinkStarter(RunKeys(os.urandom(32)), "tcp://127.0.0.1", no_alarm)
    with pytest.raises(pytest.UsageError, match=r"the sink could not start: .*no USE_FD here"):
        starter.wait_for_sink()
    assert starter.sink_if_started() is None


def test_viewer_sockets_that_fail_after_one_bind_cost_only_the_viewers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The snapshot socket has adopted its descriptor when the updates socket fails:
    # closing that descriptor a second time would abort the process inside libzmq.
    monkeypatch.setattr(zmq, "XPUB_VERBOSER", 9999)  # an option ZeroMQ rejects
    starter = SinkStarter(RunKeys(os.urandom(32)), "tcp://127.0.0.1", no_alarm)
    sink = starter.wait_for_sink()
    assert sink.fanout is None
    assert "cannot bind the viewer sockets" in sink.viewer_problem
    assert starter.viewer_endpoints == {}
    assert starter.viewer_problem == sink.viewer_problem
    sink.stop()


def test_a_sink_never_started_is_not_built_to_be_stopped() -> None:
    # A run that ends before its test loop (a usage error, --help with addopts): the
    # controller gives its sockets back instead of importing ZeroMQ to close them.
    starter = SinkStarter(RunKeys(os.urandom(32)), "tcp://127.0.0.1", no_alarm)
    host, port = starter.endpoint[len("tcp://") :].rsplit(":", 1)
    assert starter.sink_if_started() is None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=5).close()
    with pytest.raises(pytest.UsageError, match="the sink could not start"):
        starter.wait_for_sink()
