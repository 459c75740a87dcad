"""Other hosts for the tests: network namespaces, each joined to this one by a veth pair.

A :class:`Host` is a network namespace with one interface, ``eth0``, whose peer lives in
this (the controller's) namespace.  Each host has a /24 of its own, picked at random in
10.213.0.0/16 among those no interface or route here uses: ``.1`` is this side's address
(the controller, as the host sees it), ``.2`` the host's.  Names carry this process's id
and a counter, so that runs on one machine never meet.  A blackhole route for the /24,
behind the veth's own, keeps a packet for the host from ever leaving by the default route
while the link is cut or gone.  :meth:`Network.close` kills every process in each
namespace and removes namespaces, links and routes, whatever state the test left.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest

#: The private range the test hosts take their /24s from; nothing else here uses it.
RANGE = "10.213"
_names = itertools.count()


def need_root_and_ip() -> None:
    """Skip, saying why, where namespaces cannot be made."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the test makes network namespaces (CI runs as root)")
    if shutil.which("ip") is None:
        pytest.skip("needs the ip command (iproute2) to make network namespaces")


def ip(*args: str, check: bool = True) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


class Host:
    """A network namespace with ``eth0`` at ``address``; this side's end at ``peer``."""

    def __init__(self, name: str, link: str, subnet: int) -> None:
        self.name = name
        #: This side's end of the veth pair (the host's end is ``eth0`` inside it).
        self.link = link
        self.subnet = f"{RANGE}.{subnet}.0/24"
        self.address = f"{RANGE}.{subnet}.2"
        self.peer = f"{RANGE}.{subnet}.1"
        #: What ``socket.gethostname()`` says inside it.
        self.hostname = name
        self.processes: list[subprocess.Popen[Any]] = []

    def command(self, args: Sequence[str]) -> list[str]:
        """``args`` run inside the host, under its own host name (a UTS namespace)."""
        return [
            *("ip", "netns", "exec", self.name, "unshare", "--uts", "sh", "-c"),
            'hostname "$0" && exec "$@"',
            self.hostname,
            *args,
        ]

    def popen(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``args`` inside the host; killed at the end of the test."""
        process = subprocess.Popen(self.command(args), **kwargs)
        self.processes.append(process)
        return process

    def run(self, args: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        kwargs.setdefault("timeout", 60)
        return subprocess.run(self.command(args), capture_output=True, text=True, **kwargs)

    def cut(self) -> None:
        """Take the host's end of the link down: packets either way are lost."""
        ip("-n", self.name, "link", "set", "eth0", "down")

    def mend(self) -> None:
        ip("-n", self.name, "link", "set", "eth0", "up")

    def kill_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
        for pid in ip("netns", "pids", self.name, check=False).split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)


class Network:
    """The hosts a test made, torn down by :meth:`close` (call it in a ``finally``)."""

    def __init__(self) -> None:
        self.hosts: list[Host] = []

    def add(self) -> Host:
        n = next(_names)
        host = Host(f"memstream-{os.getpid()}-{n}", f"ms{os.getpid()}v{n}"[-15:], _free_subnet())
        self.hosts.append(host)
        ip("netns", "add", host.name)
        try:
            ip("route", "add", "blackhole", host.subnet, "metric", "4000")
            ip("link", "add", host.link, "type", "veth", "peer", "name", f"{host.link}p")
            ip("link", "set", f"{host.link}p", "netns", host.name)
            ip("-n", host.name, "link", "set", f"{host.link}p", "name", "eth0")
            ip("addr", "add", f"{host.peer}/24", "dev", host.link)
            ip("-n", host.name, "addr", "add", f"{host.address}/24", "dev", "eth0")
            ip("link", "set", host.link, "up")
            ip("-n", host.name, "link", "set", "eth0", "up")
            ip("-n", host.name, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        _wait_reachable(host)
        return host

    def close(self) -> None:
        """Kill and remove it all, in an order that sends nothing beyond this machine."""
        for host in self.hosts:
            # First whatever on this side still talks to the host (an ssh client that a
            # killed run left behind), while the link still carries its last packets.
            _kill_talking_to(host.subnet)
            host.kill_all()
            ip("netns", "del", host.name, check=False)
            ip("link", "del", host.link, check=False)  # gone with its peer, normally
            # A socket that outlived its process (a FIN never answered) would retry by
            # the default route once the blackhole route is gone: destroy it first.
            subprocess.run(["ss", "-K", "dst", host.subnet], capture_output=True, timeout=30)
            ip("route", "del", "blackhole", host.subnet, "metric", "4000", check=False)
        self.hosts = []


def _kill_talking_to(subnet: str) -> None:
    """Kill the processes of this namespace with a connection into ``subnet``."""
    network = ipaddress.ip_network(subnet)
    pids = set()
    for connection in psutil.net_connections(kind="inet4"):
        if connection.raddr and ipaddress.ip_address(connection.raddr.ip) in network:
            pids.add(connection.pid)
    for pid in pids - {None, os.getpid()}:
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()
    psutil.wait_procs([p for p in map(_process, pids - {None, os.getpid()}) if p], timeout=5)


def _process(pid: int | None) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def _free_subnet() -> int:
    """A third octet in RANGE that no address or route of this namespace uses."""
    used = ip("-4", "addr") + ip("-4", "route") + ip("-4", "route", "show", "table", "all")
    for _ in range(1000):
        subnet = random.randint(1, 254)
        if f"{RANGE}.{subnet}." not in used:
            return subnet
    raise RuntimeError(f"no free /24 in {RANGE}.0.0/16")


def _wait_reachable(host: Host) -> None:
    """Wait for the link to carry packets (duplicate address detection and the like)."""
    deadline = time.monotonic() + 10
    probe = f"import socket; socket.create_connection(('{host.peer}', 9), 0.5)"
    while time.monotonic() < deadline:
        done = host.run([sys.executable, "-c", probe])
        if "ConnectionRefused" in done.stderr:  # a RST from this side: the link is up
            return
        time.sleep(0.05)
    raise RuntimeError(f"{host.name} never reached {host.peer}")


SOCKETSERVER = """
import os, sys
from execnet.gateway_base import get_execmodel
from execnet.script import socketserver

socketserver.execmodel = get_execmodel("thread")  # what its __main__ would set
sock = socketserver.bind_and_listen((sys.argv[1], 0), socketserver.execmodel)
print(sock.getsockname()[1], flush=True)
sys.stdout = open(os.devnull, "w")  # its chatter: nobody reads the pipe any more
socketserver.startserver(sock, loop=True)
"""


def start_socketserver(
    host: Host, cwd: Path, env: dict[str, str] | None = None, prefix: Sequence[str] = ()
) -> int:
    """execnet's socket server inside ``host``, serving from ``cwd``; its port.

    It runs the gateway of one connection at a time, in its own process: one worker.
    ``prefix``: a command that runs it (``sh -c '...; exec "$@"' sh``, say).
    """
    cwd.mkdir(parents=True, exist_ok=True)
    server = host.popen(
        [*prefix, sys.executable, "-c", SOCKETSERVER, host.address],
        cwd=cwd,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert server.stdout is not None
    return int(server.stdout.readline())


SSHD_CONFIG = """\
ListenAddress {address}
Port 22
HostKey {dir}/host_key
AuthorizedKeysFile {dir}/authorized_keys
PidFile none
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
AcceptEnv PYTEST_MEMSTREAM_FAULTS
"""

SSH_CONFIG = """\
Host {alias}
  HostName {address}
  User root
  IdentityFile {dir}/client_key
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  BatchMode yes
  LogLevel ERROR
  ConnectTimeout 10
  ServerAliveInterval 5
  ServerAliveCountMax 2
"""


def sshd() -> str | None:
    """Debian's sshd, where openssh-server is installed (scripts/test installs it as root)."""
    return shutil.which("sshd") or next(
        (path for path in ("/usr/sbin/sshd",) if os.access(path, os.X_OK)), None
    )


def start_sshd(host: Host, directory: Path, alias: str) -> Path:
    """An sshd inside ``host`` with a host key and a client key made for the test; the
    ssh config file in which ``alias`` names it (for an ``ssh_config=...//ssh=alias`` spec)."""
    daemon = sshd()
    if daemon is None:
        pytest.skip("needs Debian's openssh-server (scripts/test installs it when run as root)")
    directory.mkdir(parents=True, exist_ok=True)
    for key in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(directory / key)],
            check=True,
            timeout=30,
        )
    (directory / "authorized_keys").write_bytes((directory / "client_key.pub").read_bytes())
    config = directory / "sshd_config"
    config.write_text(SSHD_CONFIG.format(address=host.address, dir=directory))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege separation directory
    host.popen([daemon, "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)
    client = directory / "ssh_config"
    client.write_text(SSH_CONFIG.format(alias=alias, address=host.address, dir=directory))
    deadline = time.monotonic() + 20
    while True:
        done = subprocess.run(
            ["ssh", "-F", str(client), alias, "true"], capture_output=True, text=True, timeout=30
        )
        if done.returncode == 0:
            return client
        if time.monotonic() > deadline:
            raise RuntimeError(f"sshd in {host.name} never answered: {done.stderr}")
        time.sleep(0.1)


class Capture:
    """Every TCP segment on one interface, as an ``AF_PACKET`` socket sees it, by flow.

    ``segments`` holds ``(source, source port, destination, destination port, flags,
    payload)`` of each IPv4 TCP segment, both ways.
    """

    def __init__(self, interface: str) -> None:
        self._socket = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self._socket.bind((interface, 0))
        self._socket.settimeout(0.1)
        self.segments: list[tuple[str, int, str, int, int, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self._socket.recv(65536)
            except TimeoutError:
                continue
            if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
                continue  # not IPv4 over Ethernet, or not TCP
            ip_header = (frame[14] & 0x0F) * 4
            total = int.from_bytes(frame[16:18], "big")
            tcp = 14 + ip_header
            tcp_header = (frame[tcp + 12] >> 4) * 4
            self.segments.append(
                (
                    socket.inet_ntoa(frame[26:30]),
                    int.from_bytes(frame[tcp : tcp + 2], "big"),
                    socket.inet_ntoa(frame[30:34]),
                    int.from_bytes(frame[tcp + 2 : tcp + 4], "big"),
                    frame[tcp + 13],
                    frame[tcp + tcp_header : 14 + total],
                )
            )

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._socket.close()

    def ports_connected_to(self, address: str) -> set[int]:
        """The ports at ``address`` that a connection was opened to (a SYN without ACK)."""
        return {dport for _, _, dst, dport, flags, _ in self.segments if dst == address
                and flags & 0x12 == 0x02}  # fmt: skip

    def payload(self, address: str, port: int) -> bytes:
        """What flowed either way between ``address``:``port`` and anyone, concatenated."""
        return b"".join(
            data
            for src, sport, dst, dport, _, data in self.segments
            if (src, sport) == (address, port) or (dst, dport) == (address, port)
        )
