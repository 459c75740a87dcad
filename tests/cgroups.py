"""Memory limits for tests: cgroup v1 ``memory`` cgroups a test makes, and removes.

Each is made under the cgroup this process is in, so it counts against (and is capped by)
what the machine already gives the test run; it is removed at the end, after every
process still in it was killed, even when the test failed.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

V1_MEMORY = Path("/sys/fs/cgroup/memory")


def own_memory_cgroup() -> Path | None:
    """This process's cgroup v1 ``memory`` directory, None where there is none."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            directory = V1_MEMORY / path.lstrip("/")
            return directory if (directory / "memory.limit_in_bytes").exists() else None
    return None


@contextmanager
def memory_cgroup(name: str, limit: int, parent: Path | None = None) -> Iterator[Path]:
    """A new cgroup v1 memory cgroup (under ``parent``, else this process's own) whose
    limit is ``limit`` bytes; skips the test where cgroups cannot be made."""
    base = parent or own_memory_cgroup()
    if base is None or os.geteuid() != 0:
        pytest.skip("needs root and cgroup v1's memory controller")
    path = base / f"memstream-test-{os.getpid()}-{name}"
    try:
        path.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot make a memory cgroup at {path}: {exc}")
    try:
        (path / "memory.limit_in_bytes").write_text(str(limit))
        yield path
    finally:
        _remove(path)


def _remove(path: Path) -> None:
    for child in [p for p in path.iterdir() if p.is_dir()]:
        _remove(child)
    deadline = time.monotonic() + 30
    while True:
        pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
        if not pids:
            break
        assert time.monotonic() < deadline, f"processes {pids} stay in {path}"
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)  # a killed process leaves its cgroup once it is reaped
    path.rmdir()


def inside(path: Path, *command: str) -> list[str]:
    """``command``, run from a shell that first moves itself into the cgroup ``path``."""
    return ["sh", "-c", f'echo $$ > {path}/cgroup.procs && exec "$@"', "sh", *command]


def inside_mounted(path: Path) -> list[str]:
    """A command prefix that mounts cgroup v1's memory hierarchy where it belongs and
    moves itself into the cgroup ``path``: for a process in a mount namespace of its own
    (``ip netns exec`` mounts a fresh /sys, hiding the cgroup mounts), as in a container."""
    relative = path.relative_to(V1_MEMORY)
    script = (
        "mount -t tmpfs cgroups /sys/fs/cgroup && mkdir /sys/fs/cgroup/memory && "
        "mount -t cgroup -o memory memory /sys/fs/cgroup/memory && "
        f'echo $$ > /sys/fs/cgroup/memory/{relative}/cgroup.procs && exec "$@"'
    )
    return ["sh", "-c", script, "sh"]
