"""The memory the run may have: its cgroup's limit if it has one, else the machine's.

The OOM killer acts on the smallest memory limit of the cgroups a process is in (each
level up the hierarchy caps the ones below it), or, without one, on the machine's memory.
Found from ``/proc/self/cgroup`` and the mount table: cgroup v1's ``memory`` controller
(``memory.limit_in_bytes``, ``memory.usage_in_bytes``, ``memory.oom_control``) or
cgroup v2's unified hierarchy (``memory.max``, ``memory.current``, ``memory.events``).
A cgroup's usage counts tmpfs and page cache, which the sum of RSS misses; the kernel
reclaims the inactive file cache before it kills, so where there is a limited cgroup its
headroom is the limit less its *working set* (usage less ``inactive_file`` from
``memory.stat``, as the kubelet counts it); elsewhere ``MemAvailable``.
Nothing here imports anything beyond the standard library (psutil off Linux), and the
module runs as it is on the far side of a remote worker's gateway (plugin/remote.py):
:func:`describe` is what that side reports.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

#: cgroup v1 says "no limit" with a number near 2**63; anything this large is none.
UNLIMITED = 1 << 60


class MemoryLimit(NamedTuple):
    """The memory the run may have, where it comes from, and how to read its headroom."""

    limit: int
    #: ``cgroup v1 /path``, ``cgroup v2 /path`` or ``machine``.
    source: str
    #: The limited cgroup's directory (None: the machine's memory is the limit).
    directory: Path | None = None
    version: int = 0

    def headroom(self) -> int | None:
        """How much more the run may take now, None where it cannot be read."""
        if self.directory is None:
            available = meminfo().get("MemAvailable")
            if available is None:  # no /proc (off Linux): psutil's figure
                import psutil

                available = psutil.virtual_memory().available
            return available
        used = self.working_set()
        return None if used is None else max(0, self.limit - used)

    def working_set(self) -> int | None:
        """What the limited cgroup holds that the kernel cannot simply drop: its usage
        less its inactive file cache (None where it cannot be read)."""
        if self.directory is None:
            return None
        v1 = self.version == 1
        usage = _read_int(self.directory / ("memory.usage_in_bytes" if v1 else "memory.current"))
        if usage is None:
            return None
        # v1's hierarchical figure counts the cgroups below, as its usage does.
        key = "total_inactive_file" if v1 else "inactive_file"
        try:
            stat = (self.directory / "memory.stat").read_text()
        except OSError:
            return usage
        for line in stat.splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return max(0, usage - int(value))
        return usage

    def oom_kills(self) -> int | None:
        """How many processes the OOM killer ended in the limited cgroup, or without one
        on the machine (``/proc/vmstat``); None where unknown."""
        if self.directory is None:
            return _vmstat_oom_kills()
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        try:
            text = (self.directory / name).read_text()
        except OSError:
            return None
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
        return None


def _vmstat_oom_kills() -> int | None:
    try:
        with open("/proc/vmstat", encoding="ascii") as file:
            for line in file:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def meminfo() -> dict[str, int]:
    """``/proc/meminfo`` in bytes (empty where there is none)."""
    out: dict[str, int] = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as file:
            for line in file:
                key, _, rest = line.partition(":")
                fields = rest.split()
                if fields and fields[0].isdigit():
                    out[key] = (
                        int(fields[0]) << 10 if rest.rstrip().endswith("kB") else int(fields[0])
                    )
    except OSError:
        pass
    return out


def memory_limit() -> MemoryLimit:
    """The smallest memory limit on the way up from this process's cgroup, else the
    machine's memory (psutil's where /proc has none)."""
    found = _cgroup_limit()
    if found is not None:
        return found
    total = meminfo().get("MemTotal")
    if total is None:
        import psutil

        total = psutil.virtual_memory().total
    return MemoryLimit(total, "machine")


def _cgroup_limit() -> MemoryLimit | None:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    v1 = v2 = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            v1 = path
        elif controllers == "" and line.startswith("0::"):
            v2 = path
    if v1 is not None:
        mount = _mount(mounts, "cgroup", "memory")
        if mount is not None:
            return _smallest(mount, v1, 1, "memory.limit_in_bytes")
    if v2 is not None:
        mount = _mount(mounts, "cgroup2", None)
        if mount is not None:
            return _smallest(mount, v2, 2, "memory.max")
    return None


def _mount(mounts: list[str], fstype: str, option: str | None) -> tuple[Path, str] | None:
    """Where a cgroup hierarchy is mounted, and the cgroup path its root stands for."""
    for line in mounts:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] != fstype:
            continue
        if option is not None and option not in tail[2].split(","):
            continue
        return Path(fields[4]), fields[3]
    return None


def _smallest(mount: tuple[Path, str], path: str, version: int, name: str) -> MemoryLimit | None:
    """The smallest limit from ``path`` up to the hierarchy's root."""
    root, root_path = mount
    relative = os.path.relpath(path, root_path) if path.startswith(root_path) else path
    directory = (root / relative.lstrip("/")).resolve()
    best: MemoryLimit | None = None
    while True:
        limit = _read_int(directory / name)
        if limit is not None and limit < UNLIMITED and (best is None or limit < best.limit):
            shown = "/" + str(directory.relative_to(root)).strip(".")
            best = MemoryLimit(limit, f"cgroup v{version} {shown}", directory, version)
        if directory == root or root not in directory.parents:
            return best
        directory = directory.parent


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def describe() -> dict[str, object]:
    """The memory this machine gives the processes here, as plain values: ``host``, ``limit`` and
    ``source`` (see :class:`MemoryLimit`), ``headroom`` now (None where unknown) and
    ``domain``, which is equal for two processes only when one OOM killer guards both:
    the same kernel (its boot id) and the same limited cgroup, or the machine."""
    import socket

    found = memory_limit()
    host = socket.gethostname()
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = host  # no /proc: one host, one machine
    return {
        "host": host,
        "limit": found.limit,
        "source": found.source,
        "headroom": found.headroom(),
        "domain": f"{boot} {found.source}",
    }
