"""Listening sockets bound before ZeroMQ is even imported.

The controller must name the sink's endpoint before the workers start, but importing
ZeroMQ and building the sink then would delay every worker by tens of milliseconds.
Instead it binds plain sockets here, in microseconds, names their addresses at once, and
builds the sink on a thread once xdist has started the workers: ZeroMQ adopts a bound,
listening socket through ``ZMQ_USE_FD``, and a worker that connects earlier is simply
queued by the kernel until it does.

A TCP address with a literal IPv4 host (or ``*``) and an ``ipc://`` path are bound this
way; anything else (a host or interface name, IPv6) is left to ZeroMQ, on the caller's
thread.  An ``ipc://`` path is bound here for a second reason: libzmq unlinks whatever is
at the path before it binds, so a second run would take a live run's socket over (and a
regular file there would be deleted).  Bound here, a path in use by a live run is refused,
a socket file nobody listens on any more is replaced, anything else at the path is left
alone; and since ZeroMQ does not unlink an adopted socket, the run removes its socket
files itself at the end, each only if it is still the one it made.
"""

from __future__ import annotations

import errno
import os
import socket
import stat

#: Connections the kernel queues before ZeroMQ accepts them (libzmq's own default).
BACKLOG = 100
#: What ``sockaddr_un.sun_path`` holds, less its terminating nul.
MAX_IPC_PATH = 107


class Listener:
    """A bound, listening socket: its address as ZeroMQ names it, its descriptor, and for
    an ``ipc://`` socket the file it made: ``(path, device, inode)``."""

    __slots__ = ("endpoint", "fd", "file")

    def __init__(self, endpoint: str, fd: int, file: tuple[str, int, int] | None = None) -> None:
        self.endpoint = endpoint
        self.fd = fd
        self.file = file

    def adopted(self) -> None:
        """A ZeroMQ socket bound with it: the descriptor is ZeroMQ's to close now."""
        self.fd = -1

    def close(self) -> None:
        """Let go of a socket that ZeroMQ never adopted."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def remove_file(self) -> None:
        """Remove the socket file this made, unless it has been replaced since."""
        if self.file is None:
            return
        path, device, inode = self.file
        self.file = None
        try:
            found = os.lstat(path)
            if (found.st_dev, found.st_ino) == (device, inode):
                os.unlink(path)
        except OSError:
            pass  # gone already, or not ours to remove


def listen(bind: str) -> Listener | None:
    """Bind and listen on ``bind`` if it is ``tcp://IPv4[:port|:*]`` or ``ipc://PATH``,
    else None.

    Raises OSError when the address cannot be bound (in use, not local, no permission).
    """
    if bind.startswith("ipc://"):
        return _listen_ipc(bind[len("ipc://") :])
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


def check_ipc_path(path: str) -> None:
    """OSError unless ``path`` fits a unix socket address."""
    if len(os.fsencode(path)) > MAX_IPC_PATH:
        raise OSError(
            errno.ENAMETOOLONG,
            f"the path {path!r} is {len(os.fsencode(path))} bytes; a unix socket's holds "
            f"{MAX_IPC_PATH}",
        )


def _listen_ipc(path: str) -> Listener:
    check_ipc_path(path)
    abstract = path.startswith("@")  # Linux's abstract namespace: no file at all
    address = "\0" + path[1:] if abstract else path
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # not inherited by workers
    try:
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or abstract:
                raise
            _take_if_stale(path)
            sock.bind(address)
        sock.listen(BACKLOG)
        file = None
        if not abstract:
            found = os.lstat(path)
            file = (path, found.st_dev, found.st_ino)
    except OSError:
        sock.close()
        raise
    return Listener(f"ipc://{path}", sock.detach(), file)


def _take_if_stale(path: str) -> None:
    """Remove the socket file at ``path`` if no process listens on it any more; OSError
    saying why not otherwise (never removing anything but a socket)."""
    if not stat.S_ISSOCK(os.lstat(path).st_mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket: it is left alone")
    if _listening(path):
        raise OSError(errno.EADDRINUSE, f"{path} is in use: another run listens on it")
    os.unlink(path)


def _listening(path: str) -> bool:
    """Whether a process listens on the unix socket file ``path``."""
    try:
        # Linux lists listening unix sockets with the paths they were bound to: a live
        # run found there is not knocked at (it would count the knock as a failed
        # handshake).  A path bound relative to another directory is not found this way.
        with open("/proc/net/unix", encoding="utf-8", errors="replace") as table:
            paths = {os.path.abspath(path), path}
            for line in table:
                fields = line.split()
                if len(fields) >= 8 and fields[7] in paths and int(fields[3], 16) & 0x10000:
                    return True
    except (OSError, ValueError):
        pass
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        return False
    except OSError:
        return True  # not proven stale: left alone
    finally:
        probe.close()
    return True


def viewer_binds(sink_endpoint: str) -> tuple[str, str]:
    """Where to bind the snapshot and updates sockets: next to the sink's own endpoint."""
    if sink_endpoint.startswith("ipc://"):
        return sink_endpoint + "-snapshot", sink_endpoint + "-updates"
    host = sink_endpoint[len("tcp://") :].rsplit(":", 1)[0]
    return f"tcp://{host}:*", f"tcp://{host}:*"
