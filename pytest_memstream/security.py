"""The run's keys, and ZeroMQ security: CURVE on every socket, and who may connect.

A run has one credential, a random 32-byte secret.  Every key is derived from it:

- the sink's CURVE server key pair, which the worker stream and both viewer sockets use;
- one client key pair per worker (``worker/<id>``), handed to that worker alone through
  ``workerinput``, so that a worker cannot speak for another;
- the viewers' client key pair, derived by whoever holds the secret (the session file).

CURVE alone admits any client that knows the server's public key; the ZAP handler here
admits only the run's own client keys, on the socket each belongs to, and names the
connection after its key (a worker's frames must then carry that worker's id).  It is
served from the sink thread's poller: no thread of its own.  libzmq asks it about every
CURVE handshake in the context it is bound in, so it is bound before any socket of the
sink is.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from typing import Any

#: ZAP domains: which key may connect to which socket.
STREAM = "stream"
VIEWER = "viewer"
#: Where libzmq sends its authentication requests (RFC 27).
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
#: Refused client keys remembered, so that a peer's retries are not counted again.
REFUSED_KEPT = 4096
#: Requests answered per wake-up, so that a flood cannot starve the stream.
READ_PER_WAKE = 64

_P = 2**255 - 19


def _x25519_base(scalar: bytes) -> bytes:
    """The X25519 public key of the secret key ``scalar`` (RFC 7748's ladder).

    Here so that the controller can hand workers the server's public key before ZeroMQ,
    whose import would delay every worker's start, is even imported (about 1.5 ms; the
    tests hold it to libzmq's ``curve_public``).
    """
    n = int.from_bytes(scalar, "little")
    n = (n & ~7 & ~(1 << 255)) | (1 << 254)
    x1, x2, z2, x3, z3 = 9, 1, 0, 9, 1
    swap = 0
    for bit_index in range(254, -1, -1):
        bit = (n >> bit_index) & 1
        if swap ^ bit:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = bit
        a, b, c, d = x2 + z2, x2 - z2, x3 + z3, x3 - z3
        aa, bb = a * a % _P, b * b % _P
        da, cb = d * a % _P, c * b % _P
        e = aa - bb
        x3, z3 = (da + cb) ** 2 % _P, x1 * (da - cb) ** 2 % _P
        x2, z2 = aa * bb % _P, e * (aa + 121665 * e) % _P
    if swap:
        x2, z2 = x3, z3
    return (x2 * pow(z2, _P - 2, _P) % _P).to_bytes(32, "little")


def derive(secret: bytes, label: str) -> bytes:
    """The 32-byte key called ``label`` of the run whose secret is ``secret``."""
    return hmac.new(secret, label.encode(), hashlib.sha256).digest()


class KeyPair:
    __slots__ = ("public", "secret")

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.public = _x25519_base(secret)


class RunKeys:
    """Every key of one run, from its secret."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.server = KeyPair(derive(secret, "server"))
        self._viewer: KeyPair | None = None

    @property
    def viewer(self) -> KeyPair:
        # Made when a viewer first asks: a run nobody watches never pays for it.
        if self._viewer is None:
            self._viewer = KeyPair(derive(self.secret, "viewer"))
        return self._viewer

    def worker(self, worker: str) -> bytes:
        """The secret key of ``worker``'s stream (its public key is derived from it)."""
        return derive(self.secret, f"worker/{worker}")


def serve(socket: Any, keys: RunKeys, domain: str) -> None:
    """Make ``socket`` (not yet bound) a CURVE server that ZAP admits peers to."""
    import zmq

    socket.setsockopt(zmq.CURVE_SERVER, 1)
    socket.setsockopt(zmq.CURVE_SECRETKEY, keys.server.secret)
    socket.setsockopt(zmq.ZAP_DOMAIN, domain.encode())


def connect_as(socket: Any, server_public: bytes, client_secret: bytes) -> None:
    """Make ``socket`` (not yet connected) a CURVE client with the key ``client_secret``."""
    import zmq
    from zmq.utils import z85

    socket.setsockopt(zmq.CURVE_SERVERKEY, server_public)
    socket.setsockopt(zmq.CURVE_SECRETKEY, client_secret)
    socket.setsockopt(zmq.CURVE_PUBLICKEY, z85.decode(zmq.curve_public(z85.encode(client_secret))))


class ZapHandler:
    """Answers libzmq's authentication requests for one run's sockets (RFC 27).

    On the ``stream`` domain it admits the client keys of ``workers()`` and names the
    connection after the worker; on ``viewer`` the viewers' key.  Everything else is
    refused, and each refused key counted once in ``refused``.
    """

    def __init__(self, context: Any, keys: RunKeys, workers: Callable[[], Iterable[str]]) -> None:
        import zmq

        self._keys = keys
        self._workers = workers
        self._by_key: dict[bytes, str] = {}
        self._known: set[str] = set()
        self._refused_keys: set[bytes] = set()
        self.refused = 0
        self.socket = context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(ZAP_ENDPOINT)

    def close(self) -> None:
        self.socket.close(linger=0)

    def handle(self) -> None:
        """Answer the requests waiting (called when the socket is readable)."""
        import zmq

        for _ in range(READ_PER_WAKE):
            try:
                request = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            # [routing id, "", version, request id, domain, address, identity, mechanism,
            # credentials...]
            if len(request) < 8:
                continue
            peer, _, version, request_id, domain, _, _, mechanism, *credentials = request
            user = ""
            if mechanism == b"CURVE" and len(credentials) == 1:
                user = self._admit(domain.decode("ascii", "replace"), credentials[0])
            if user:
                reply = [b"200", b"OK", user.encode()]
            else:
                reply = [b"400", b"not a key of this run", b""]
            self.socket.send_multipart([peer, b"", version, request_id, *reply, b""])

    def _admit(self, domain: str, client: bytes) -> str:
        """The name of the connection with the public key ``client``; "" to refuse it."""
        if domain == VIEWER and client == self._keys.viewer.public:
            return VIEWER
        if domain == STREAM:
            worker = self._by_key.get(client)
            if worker is None:
                self._learn_workers()
                worker = self._by_key.get(client)
            if worker is not None:
                return worker
        if client not in self._refused_keys:
            if len(self._refused_keys) < REFUSED_KEPT:
                self._refused_keys.add(client)
            self.refused += 1
        return ""

    def _learn_workers(self) -> None:
        import zmq
        from zmq.utils import z85

        for worker in self._workers():
            if worker not in self._known:
                self._known.add(worker)
                secret = z85.encode(self._keys.worker(worker))
                self._by_key[z85.decode(zmq.curve_public(secret))] = worker
