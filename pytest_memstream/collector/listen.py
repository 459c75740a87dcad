"""Listening sockets bound before ZeroMQ is even imported.

The controller must name the sink's endpoint before the workers start, but importing
ZeroMQ and building the sink then would delay every worker by tens of milliseconds.
Instead it binds plain sockets here, in microseconds, names their addresses at once, and
builds the sink on a thread once xdist has started the workers: ZeroMQ adopts a bound,
listening socket through ``ZMQ_USE_FD``, and a worker that connects earlier is simply
queued by the kernel until it does.

Only a TCP address with a literal IPv4 host (or ``*``) is bound this way; anything else
(a host or interface name, IPv6, ``ipc://``) is left to ZeroMQ, on the caller's thread.
"""

from __future__ import annotations

import errno
import os
import socket

#: Connections the kernel queues before ZeroMQ accepts them (libzmq's own default).
BACKLOG = 100


class Listener:
    """A bound, listening socket: its address as ZeroMQ names it, and its descriptor."""

    __slots__ = ("endpoint", "fd")

    def __init__(self, endpoint: str, fd: int) -> None:
        self.endpoint = endpoint
        self.fd = fd

    def adopted(self) -> None:
        """A ZeroMQ socket bound with it: the descriptor is ZeroMQ's to close now."""
        self.fd = -1

    def close(self) -> None:
        """Let go of a socket that ZeroMQ never adopted."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def listen(bind: str) -> Listener | None:
    """Bind and listen on ``bind`` if it is ``tcp://IPv4[:port|:*]``, else None.

    Raises OSError when the address cannot be bound (in use, not local, no permission).
    """
    if not bind.startswith("tcp://"):
        return None
    host, _, port = bind[len("tcp://") :].partition(":")
    host = "0.0.0.0" if host == "*" else host
    try:
        socket.inet_pton(socket.AF_INET, host)
    except OSError:
        return None
    if port in ("", "*"):
        number = 0
    elif port.isascii() and port.isdigit():
        number = int(port)
    else:
        return None
    if number > 65535:  # an OverflowError from bind(), which callers do not expect
        raise OSError(errno.EINVAL, f"port {number} is not between 0 and 65535")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # not inherited by workers
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as libzmq does
        sock.bind((host, number))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return Listener(f"tcp://{host}:{sock.getsockname()[1]}", sock.detach())


def viewer_binds(sink_endpoint: str) -> tuple[str, str]:
    """Where to bind the snapshot and updates sockets: next to the sink's own endpoint."""
    if sink_endpoint.startswith("ipc://"):
        return sink_endpoint + "-snapshot", sink_endpoint + "-updates"
    host = sink_endpoint[len("tcp://") :].rsplit(":", 1)[0]
    return f"tcp://{host}:*", f"tcp://{host}:*"
