"""The run's keys and who gets in: CURVE keys from one secret, and the ZAP allow-list."""

from __future__ import annotations

import os
from typing import Any

import pytest
import zmq
from zmq.utils import z85

from pytest_memstream import security


@pytest.mark.parametrize("seed", range(20))
def test_the_public_key_is_libzmqs(seed: int) -> None:
    secret = os.urandom(32) if seed else bytes(32)
    ours = security.KeyPair(secret).public
    assert z85.encode(ours) == zmq.curve_public(z85.encode(secret))


def test_every_key_of_a_run_is_its_own() -> None:
    keys = security.RunKeys(b"s" * 32)
    others = security.RunKeys(b"t" * 32)
    derived = [keys.server.secret, keys.viewer.secret, keys.worker("gw0"), keys.worker("gw1")]
    assert len(set(derived)) == 4
    assert keys.server.secret != others.server.secret
    assert security.RunKeys(b"s" * 32).worker("gw0") == keys.worker("gw0")


def handshake(
    context: zmq.Context[Any],
    zap: security.ZapHandler,
    keys: security.RunKeys,
    domain: str,
    client: bytes,
) -> str | None:
    """The name ZAP gives a client with the secret key ``client``; None if refused."""
    server = context.socket(zmq.PULL)
    security.serve(server, keys, domain)
    port = server.bind_to_random_port("tcp://127.0.0.1")
    push = context.socket(zmq.PUSH)
    security.connect_as(push, keys.server.public, client)
    refusals = push.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
    push.connect(f"tcp://127.0.0.1:{port}")
    push.send(b"hi")
    poller = zmq.Poller()
    for socket in (server, zap.socket, refusals):
        poller.register(socket, zmq.POLLIN)
    name, refused = None, False
    while name is None and not refused:
        ready = dict(poller.poll(10_000))
        assert ready, "neither admitted nor refused"
        if zap.socket in ready:
            zap.handle()
        if server in ready:
            name = server.recv(copy=False).get("User-Id")
        refused = refusals in ready
    push.disable_monitor()
    for socket in (refusals, push, server):
        socket.close(linger=0)
    return name


def test_zap_admits_the_runs_own_keys_on_their_own_sockets_only() -> None:
    keys = security.RunKeys(os.urandom(32))
    context = zmq.Context()
    zap = security.ZapHandler(context, keys, lambda: ["gw0", "gw3"])
    try:
        assert handshake(context, zap, keys, security.STREAM, keys.worker("gw3")) == "gw3"
        assert handshake(context, zap, keys, security.VIEWER, keys.viewer.secret) == "viewer"
        assert zap.refused == 0
        # A worker never started, the viewer's key on the stream, a worker's on a viewer
        # socket, a key of no run: each refused, each counted once.
        assert handshake(context, zap, keys, security.STREAM, keys.worker("gw9")) is None
        assert handshake(context, zap, keys, security.STREAM, keys.viewer.secret) is None
        assert handshake(context, zap, keys, security.VIEWER, keys.worker("gw0")) is None
        stranger = os.urandom(32)
        assert handshake(context, zap, keys, security.STREAM, stranger) is None
        assert handshake(context, zap, keys, security.STREAM, stranger) is None
        assert zap.refused == 4
    finally:
        zap.close()
        context.destroy(linger=0)
