"""Workers on other hosts: which address of this machine each one reaches the sink at.

xdist runs a worker on another host through an execnet gateway (``--tx socket=HOST:PORT``,
``--tx ssh=DEST``).  A loopback address would lead such a worker's stream to whatever
listens there on its own host, so as each gateway comes up (xdist's
``pytest_xdist_newgateway``, before it rsyncs or starts its own code there) the
controller asks the far side, in one round trip, its host name, whether it is this very
machine (same boot, same network namespace), and, for ssh, ``SSH_CONNECTION``: the
address it sees this machine at.  Then:

- ``ssh=``: that address (the destination is only a name for ssh: an alias, a jump host);
- ``socket=``: the local address of the route to the gateway's ``remoteaddress``;
- ``--memstream-advertise HOST``: HOST, for every worker on another host.

With the default bind the sink then also listens on that address (the controller binds
it here, before ZeroMQ is imported, as it bound loopback; see sinkstart.py): an
interface that faces no worker gets no open port.  With ``--memstream-bind`` it listens
where that says, and nowhere else.  A worker whose address cannot be found, or is not
one of this machine's (NAT), is handed none: it streams nothing, its figures come from
its ``workeroutput``, and the reason is one line at the end.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Callable
from typing import Any, NamedTuple

import pytest

from pytest_memstream.plugin.options import Settings
from pytest_memstream.plugin.sinkstart import SinkStarter

#: How long the far side may take to say who it is (one round trip on a live gateway).
PROBE_TIMEOUT = 10.0

# Runs on the far side, in whatever Python it has: standard library only.
FAR_SIDE = """
import os, socket
def _read(path):
    try:
        with open(path) as file:
            return file.read().strip()
    except (OSError, ValueError):
        return ""
try:
    _net = os.stat("/proc/self/ns/net")
    _netns = "%d:%d" % (_net.st_dev, _net.st_ino)
except OSError:
    _netns = ""
_boot = _read("/proc/sys/kernel/random/boot_id")
channel.send({
    "host": socket.gethostname(),
    "ssh": os.environ.get("SSH_CONNECTION", ""),
    "machine": _boot + "/" + _netns if _boot and _netns else "",
})
"""


class FarSide(NamedTuple):
    """What the far side of a gateway says of itself ("" for what it could not say)."""

    host: str
    #: ``SSH_CONNECTION``: "client address, client port, server address, server port".
    ssh: str
    #: Its boot id and network namespace: equal to this process's only on this machine.
    machine: str


class Reach(NamedTuple):
    """Where one worker streams to, and under which host it is reported."""

    endpoint: str
    host: str
    #: Why it was given no endpoint ("" when it was given one).
    why: str = ""


def this_machine() -> str:
    """This process's boot id and network namespace, as FAR_SIDE reports its own."""
    namespace: dict[str, Any] = {}
    sent: list[dict[str, str]] = []

    class Channel:
        send = sent.append

    exec(FAR_SIDE, {"channel": Channel}, namespace)  # the very code the far side runs
    return sent[0]["machine"]


def ask(gateway: Any, source: str) -> dict[str, Any] | None:
    """What ``source``, run on the far side of ``gateway``, sends back: a dict, or None
    (an old or odd Python there, a gateway gone, an answer of another shape)."""
    try:
        channel = gateway.remote_exec(source)
        answer = channel.receive(PROBE_TIMEOUT)
        channel.waitclose(PROBE_TIMEOUT)
    except Exception:
        return None
    return answer if isinstance(answer, dict) else None


def ask_far_side(gateway: Any) -> FarSide:
    """Ask the far side of ``gateway`` who it is; empty fields for what it did not say."""
    answer = ask(gateway, FAR_SIDE)
    if answer is None:
        return FarSide("", "", "")
    fields = [answer.get(name) for name in FarSide._fields]
    return FarSide(*(value if isinstance(value, str) else "" for value in fields))


def route_source(host: str) -> str:
    """The local IPv4 address this machine sends from to ``host`` ("" if none).

    A connected UDP socket sends nothing: the kernel only picks the route.
    """
    try:
        infos = socket.getaddrinfo(host, 9, socket.AF_INET, socket.SOCK_DGRAM)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(infos[0][4])
            source: str = probe.getsockname()[0]
            return source
    except (OSError, IndexError):
        return ""


def is_local(address: str) -> bool:
    """Whether ``address`` (IPv4) is an address of this machine: one it can bind."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((address, 0))
    except OSError as exc:
        if exc.errno == errno.EADDRNOTAVAIL:
            return False
        raise
    return True


def local_ipv4(host: str) -> str:
    """``host`` as an IPv4 address of this machine, or "" if it is none."""
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return ""
    for info in infos:
        address = str(info[4][0])
        if is_local(address):
            return address
    return ""


def bind_advertised(advertise: str) -> str:
    """Where the sink listens for ``--memstream-advertise HOST`` without ``--memstream-bind``:
    on HOST, which must then be an address of this machine."""
    address = local_ipv4(advertise)
    if not address:
        raise pytest.UsageError(
            f"memstream: --memstream-advertise {advertise} is not an IPv4 address of this "
            "machine, so the sink cannot listen there: say where it listens with "
            "--memstream-bind (behind a NAT or an ssh -R tunnel, say)"
        )
    return f"tcp://{address}"


def _client_address(ssh: str) -> str:
    """The client address of ``SSH_CONNECTION``, an IPv4-mapped one as IPv4."""
    words = ssh.split()
    if len(words) != 4:
        return ""
    try:
        address = ipaddress.ip_address(words[0].split("%")[0])
    except ValueError:
        return ""
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


def _endpoint_host(endpoint: str) -> str:
    return endpoint[len("tcp://") :].rpartition(":")[0].strip("[]")


def _with_host(endpoint: str, host: str) -> str:
    return f"tcp://{host}:{endpoint.rpartition(':')[2]}"  # IPv4 or a name: no brackets


def advertised(endpoint: str, host: str) -> str:
    """``endpoint`` (tcp) as a peer elsewhere reaches it: at ``host``, the same port."""
    return _with_host(endpoint, host) if endpoint.startswith("tcp://") else endpoint


class RemoteHosts:
    """Decides, for each worker on another host, where it streams to (see the module)."""

    def __init__(
        self, settings: Settings, starter: SinkStarter, say: Callable[[str], None]
    ) -> None:
        self._settings = settings
        self._starter = starter
        self._say = say
        self._machine: str | None = None
        #: Where each gateway's worker streams (by gateway id, which is the worker's id).
        self.reaches: dict[str, Reach] = {}
        #: Addresses the sink was told to listen on, and the endpoint each became.
        self._listening: dict[str, str] = {}

    def gateway_up(self, gateway: Any) -> Reach:
        """Ask ``gateway``'s far side who it is, and decide where its worker streams."""
        far = ask_far_side(gateway)
        spec = gateway.spec
        host = far.host or _named_host(spec, gateway)
        reach = self.reaches[gateway.id] = self._decide(gateway, spec, far, host)
        return reach

    def reach(self, gateway: Any) -> Reach:
        """Where the worker of ``gateway`` streams to (decided now if xdist did not say
        the gateway came up)."""
        found = self.reaches.get(gateway.id)
        return found if found is not None else self.gateway_up(gateway)

    def _decide(self, gateway: Any, spec: Any, far: FarSide, host: str) -> Reach:
        starter = self._starter
        endpoint = starter.endpoint
        if self._settings.advertise is not None:
            if not endpoint.startswith("tcp://"):
                return Reach("", host, f"the sink listens on {endpoint}, not on TCP")
            return Reach(advertised(endpoint, self._settings.advertise), host)
        if self._machine is None:
            self._machine = this_machine()
        if far.machine and far.machine == self._machine:
            return Reach(endpoint, host)  # this very machine: its loopback is ours
        if not endpoint.startswith("tcp://"):
            return Reach("", host, f"the sink listens on {endpoint} (--memstream-bind)")
        if spec.ssh:
            address = _client_address(far.ssh)
            seen = "its SSH_CONNECTION says it sees this machine as"
        elif spec.socket and not spec.installvia:
            address = route_source(gateway.remoteaddress.rpartition(":")[0])
            seen = "this machine reaches it from"
        else:
            address, seen = "", ""
        if not address:
            return Reach("", host, "which address of this machine it reaches is not known")
        if ipaddress.ip_address(address).version != 4:
            return Reach("", host, f"{seen} {address}, and IPv6 is not served")
        if ipaddress.ip_address(address).is_loopback:
            return Reach("", host, f"{seen} {address}, a loopback address")
        if not is_local(address):
            return Reach("", host, f"{seen} {address}, not an address of this machine (a NAT?)")
        return self._listen(address, host, gateway.id)

    def _listen(self, address: str, host: str, worker: str) -> Reach:
        starter = self._starter
        bound = _endpoint_host(starter.endpoint)
        if self._settings.bind_given:
            if bound in ("0.0.0.0", "*"):
                return Reach(_with_host(starter.endpoint, address), host)
            if _loopback(bound):
                return Reach("", host, f"the sink listens on {starter.endpoint} (--memstream-bind)")
            return Reach(starter.endpoint, host)  # where the user said it listens
        endpoint = self._listening.get(address)
        if endpoint is None:
            try:
                endpoint = starter.listen_also(address)
            except OSError as exc:
                return Reach("", host, f"the sink cannot listen on {address}: {exc}")
            self._listening[address] = endpoint
            self._say(
                f"memstream: the sink also listens on {endpoint}, where {worker} on {host} "
                "reaches this machine (CurveZMQ: encrypted, only this run's keys admitted)"
            )
        return Reach(endpoint, host)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _named_host(spec: Any, gateway: Any) -> str:
    """The host as the ``--tx`` spec names it, where the far side did not say."""
    if spec.ssh:
        return str(spec.ssh).split()[-1].rpartition("@")[2]
    try:
        return str(gateway.remoteaddress).rpartition(":")[0]
    except AttributeError:
        return str(gateway.id)
