"""The viewer protocol: the client against a server scripted by hand, and the sink's side."""

from __future__ import annotations

import os
import socket as sockets
import time
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
import zmq
from streams import HELLO, KEYS, send, worker_socket
from watching import record_value, run_value

from pytest_memstream import security
from pytest_memstream.cli.client import Viewer, ViewerError, reachable
from pytest_memstream.collector.sink import Sink
from pytest_memstream.protocol import ProtocolError
from pytest_memstream.protocol import viewer as wire


class ScriptedRun:
    """Plays the sink's side of the viewer protocol by hand, as docs/protocol.md says."""

    def __init__(self, keys: security.RunKeys) -> None:
        self.context = zmq.Context()
        self.zap = security.ZapHandler(self.context, keys, list)
        self.router = self.context.socket(zmq.ROUTER)
        self.xpub = self.context.socket(zmq.XPUB)
        for socket in (self.router, self.xpub):
            security.serve(socket, keys, security.VIEWER)
            socket.bind("tcp://127.0.0.1:*")
        self.snapshot_endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.state: dict[str, Any] = {"run": run_value("running", tests=0)}
        self.seq = 5
        self.snapshots = 0
        self.subscribed = False

    def serve(self) -> None:
        """Answer whatever has arrived."""
        while self.zap.socket.poll(0):
            self.zap.handle()
        while self.xpub.poll(0):
            if self.xpub.recv()[:1] == b"\x01":
                self.subscribed = True
                self.publish("beat", {"seq": self.seq, "t": time.time()})
        while self.router.poll(0):
            peer, body = self.router.recv_multipart()
            request = wire.decode(body, wire.REQUEST_KINDS)
            nonce = request["nonce"]
            if request["k"] == "hello":
                reply = {"nonce": nonce, "seq": self.seq, "beat": 1.0, "pid": 1, "started": 1.0}
                reply["updates"] = self.xpub.getsockopt_string(zmq.LAST_ENDPOINT)
                self.send(peer, "welcome", reply)
            else:
                self.snapshots += 1
                part = {"nonce": nonce, "seq": self.seq, "parts": 1, "part": 0}
                self.send(peer, "snap", dict(part, sets=self.state))

    def send(self, peer: bytes, kind: str, fields: dict[str, Any]) -> None:
        self.router.send_multipart([peer, wire.encode(kind, fields)])

    def publish(self, kind: str, fields: dict[str, Any]) -> None:
        self.xpub.send(wire.encode(kind, fields))

    def update(self, sets: dict[str, Any], seq: int | None = None) -> None:
        """Change the state; publish it as ``seq`` (the next one unless told)."""
        self.state.update(sets)
        self.seq = self.seq + 1 if seq is None else seq
        self.publish("update", {"seq": self.seq, "t": time.time(), "sets": sets})

    def close(self) -> None:
        self.zap.close()
        self.context.destroy(linger=0)


def pump(viewer: Viewer, server: ScriptedRun, until: Callable[[list[str]], bool]) -> list[str]:
    kinds: list[str] = []
    deadline = time.monotonic() + 20
    while not until(kinds):
        assert time.monotonic() < deadline, kinds
        server.serve()
        events, _ = viewer.poll(0.01)
        kinds += [e.kind for e in events]
    return kinds


def test_a_gap_in_updates_means_behind_then_a_fresh_snapshot() -> None:
    server = ScriptedRun(KEYS)
    viewer = Viewer(server.snapshot_endpoint, KEYS.secret)
    try:
        assert pump(viewer, server, lambda k: "snapshot" in k) == ["snapshot"]
        assert viewer.mirror.seq == 5
        server.update({"t/gw0/1": record_value(1)})
        assert pump(viewer, server, lambda k: "update" in k) == ["update"]
        # A message of a later version, or not msgpack at all, is never shown.
        later = msgpack.packb({"v": wire.VERSION + 1, "k": "update", "seq": 7, "sets": {}})
        server.xpub.send(later)
        server.xpub.send(b"\xc1")
        server.update({"t/gw0/2": record_value(2)}, seq=8)  # 7 went missing
        kinds = pump(viewer, server, lambda k: "snapshot" in k)
        assert kinds == ["behind", "snapshot"]
        assert server.snapshots == 2
        assert viewer.mirror.seq == 8
        assert {test["nodeid"] for test in viewer.mirror.tests()} == {
            "test_x.py::test_1",
            "test_x.py::test_2",
        }
        server.update({"run": run_value("finished", tests=2)})
        assert pump(viewer, server, lambda k: "finished" in k) == ["update", "finished"]
        assert viewer.mirror.totals()["tests"] == 2
    finally:
        viewer.close()
        server.close()


def test_a_wrong_secret_is_told_at_once() -> None:
    server = ScriptedRun(KEYS)
    viewer = Viewer(server.snapshot_endpoint, os.urandom(32))
    try:
        with pytest.raises(ViewerError, match="refused our key: wrong secret"):
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                server.serve()
                viewer.poll(0.05)
    finally:
        viewer.close()
        server.close()


def test_nothing_answering_is_an_error() -> None:
    # A port bound and never listened on: refused, and no other process can take it.
    with sockets.socket() as port:
        port.bind(("127.0.0.1", 0))
        viewer = Viewer(f"tcp://127.0.0.1:{port.getsockname()[1]}", os.urandom(32))
        try:
            with pytest.raises(ViewerError, match="nothing answers"):
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    viewer.poll(0.1)
        finally:
            viewer.close()


def viewer_socket(context: zmq.Context[Any], kind: int, endpoint: str) -> zmq.Socket[Any]:
    socket: zmq.Socket[Any] = context.socket(kind)
    security.connect_as(socket, KEYS.server.public, KEYS.viewer.secret)
    if kind == zmq.SUB:
        socket.setsockopt(zmq.SUBSCRIBE, b"")
    socket.connect(endpoint)
    return socket


def test_a_snapshot_taken_while_nobody_listened_is_followed_by_a_gap(sink: Sink) -> None:
    """The sink publishes nothing while nobody subscribes; the first subscriber must not
    mistake a snapshot from that time for an up-to-date one."""
    context = zmq.Context()
    try:
        dealer = viewer_socket(context, zmq.DEALER, sink.viewer_endpoints["snapshot"])
        dealer.send(wire.encode("snapshot", {"nonce": b"n" * 16}))
        assert dealer.poll(10_000)
        snap = wire.decode(dealer.recv(), frozenset({"snap"}))
        assert snap["parts"] == 1 and snap["sets"]["run"]["messages"] == 0
        # The state changes while nobody listens...
        sink.state.expect("gw0")
        push = worker_socket(context, sink.endpoint, KEYS, "gw0")
        send(push, "gw0", 0, [HELLO])
        with sink.state.cond:
            assert sink.state.cond.wait_for(lambda: sink.state.messages == 1, 10)
        # ...so the first beat a new subscriber hears is past the snapshot's seq.
        sub = viewer_socket(context, zmq.SUB, sink.viewer_endpoints["updates"])
        assert sub.poll(10_000)
        beat = wire.decode(sub.recv(), frozenset({"beat"}))
        assert beat["seq"] > snap["seq"]
    finally:
        context.destroy(linger=0)


def test_no_byte_reaches_a_viewer_without_the_key(sink: Sink) -> None:
    """A port scan, a plain ZeroMQ peer, or a CURVE peer with a key of its own: none of
    them reads a byte of the run's state, on either viewer socket."""
    sink.state.expect("gw0")
    context = zmq.Context()
    try:
        push = worker_socket(context, sink.endpoint, KEYS, "gw0")
        start = {"k": "start", "t": 1.0, "i": 0, "id": "test_secret.py::test_name", "rss": 1}
        send(push, "gw0", 0, [HELLO, start])
        with sink.state.cond:
            assert sink.state.cond.wait_for(lambda: sink.state.messages == 2, 10)
        strangers = []
        for endpoint in sink.viewer_endpoints.values():
            for key in (None, os.urandom(32)):
                for kind in (zmq.SUB, zmq.DEALER):
                    socket = context.socket(kind)
                    if key is not None:
                        security.connect_as(socket, KEYS.server.public, key)
                    if kind == zmq.SUB:
                        socket.setsockopt(zmq.SUBSCRIBE, b"")
                    socket.connect(endpoint)
                    if kind == zmq.DEALER:
                        socket.send(wire.encode("snapshot", {"nonce": b"n" * 16}))
                    strangers.append(socket)
        # A viewer with the key, asking after them, is answered: the strangers had time.
        dealer = viewer_socket(context, zmq.DEALER, sink.viewer_endpoints["snapshot"])
        dealer.send(wire.encode("snapshot", {"nonce": b"m" * 16}))
        assert dealer.poll(10_000)
        snap = wire.decode(dealer.recv(), frozenset({"snap"}))
        assert "test_secret.py::test_name" in str(snap["sets"])
        assert all(not socket.poll(200) for socket in strangers)
    finally:
        context.destroy(linger=0)


def test_a_workers_host_is_an_optional_field_of_its_view() -> None:
    view = {"status": "running", "pid": 3, "peak_method": "hwm", "messages": 1, "lost": 0,
            "dropped": 0, "recovered": 0, "unrecoverable": 0, "max_rss": 1,
            "crashed_test": "", "error": "", "running": None}  # fmt: skip
    assert "host" not in wire.check_view("w/gw0", view)  # from a sink of before
    assert wire.check_view("w/gw0", dict(view, host="build2"))["host"] == "build2"
    with pytest.raises(ProtocolError, match="schema"):
        wire.check_view("w/gw0", dict(view, host=["build2"]))


@pytest.mark.parametrize(
    ("updates", "snapshot", "reached"),
    [
        ("tcp://0.0.0.0:5002", "tcp://10.0.0.5:5001", "tcp://10.0.0.5:5002"),
        # The sink bound an address of its machine; the viewer came through another
        # (the advertised name, a tunnel's end): the updates are there too.
        ("tcp://192.168.1.5:5002", "tcp://build-ctl:5001", "tcp://build-ctl:5002"),
        ("tcp://[::1]:5002", "tcp://[::1]:5001", "tcp://[::1]:5002"),
        ("ipc:///tmp/m-updates", "ipc:///tmp/m-snapshot", "ipc:///tmp/m-updates"),
    ],
)
def test_a_viewer_reaches_the_updates_where_it_reached_the_snapshot(
    updates: str, snapshot: str, reached: str
) -> None:
    assert reachable(updates, snapshot) == reached
