"""The worker's process tree: the memory of the processes a test starts.

What the tree counts at one moment is the worker's RSS plus each descendant's own memory:
its RSS for a process that ran a program of its own (``subprocess``, ``spawn``), its
private pages (Private_Clean + Private_Dirty of ``smaps_rollup``) for a forked copy of
the worker (``multiprocessing``'s fork), whose pages shared with the worker are counted
once, in the worker.  A forked child's private pages cost milliseconds to read, so they
are read at most once an interval and followed in between by its RSS.

The peaks of single processes are exact where the kernel keeps them: ``VmHWM`` of a live
process is its peak since it started its program (``hwm``); ``wait4()``'s ``ru_maxrss`` of
a reaped one (``rusage``) is the larger of its own peak and its parent's RSS, so it is
exact only above the worker's.  ``os.waitpid`` and ``os.wait``, through which
``subprocess`` and ``multiprocessing`` reap their children, are taken over to see it.
The tree's total is ``sampled``: read at test boundaries and by the stream's sampler.

A test that starts no process pays one read of the main thread's children list.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

HWM = "hwm"
RUSAGE = "rusage"
SAMPLED = "sampled"
#: How long a forked child's private pages, once read, stand for it (then read again).
PRIVATE_FOR = 0.1
#: Processes followed at once; a fork bomb is not measured past this.
MAX_PROCESSES = 256
#: Signals that ask a process to stop, as a Pool's exit does its workers: no finding.
POLITE = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


@dataclass
class Reaped:
    """A child reaped through ``os.waitpid``/``os.wait`` (see ProcessTree)."""

    pid: int
    status: int
    maxrss: int


@dataclass
class Process:
    """One descendant as last read."""

    pid: int
    name: str
    forked: bool
    rss: int = 0
    #: Its own peak (exact for a process that ran its own program: ``VmHWM``).
    hwm: int = 0
    #: What it counts for in the tree (see the module's docstring).
    own: int = 0
    #: For a forked child: its private pages, the RSS and time they were read at.
    private: int = 0
    private_rss: int = 0
    private_at: float = -1.0


@dataclass
class Reading:
    """The tree at one moment: what its descendants count for, and each of them."""

    memory: int
    processes: dict[int, Process] = field(default_factory=dict)


class ProcessTree:
    """Finds and reads this process's descendants; knows which of its children died."""

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._exe = _readlink(f"/proc/{self._pid}/exe")
        self._cmdline = _read(f"/proc/{self._pid}/cmdline")
        # The test's thread starts most processes; its list is the one cheap check.
        tid = threading.get_native_id()
        self._children_fd = os.open(f"/proc/self/task/{tid}/children", os.O_RDONLY | os.O_CLOEXEC)
        self._lock = threading.Lock()
        #: Held by whoever reads the tree or adds to a test's figures: the test's thread
        #: and the stream's sampler both do.
        self.lock = threading.Lock()
        self._reaped: list[Reaped] = []
        self._known: dict[int, Process] = {}
        self._waitpid: Callable[[int, int], tuple[int, int]] | None = None
        self._wait: Callable[[], tuple[int, int]] | None = None
        self._take_over_reaping()

    # --- the cheap check --------------------------------------------------------------

    def any_children(self) -> bool:
        """Whether the test's thread has a child now, or a child was reaped since the last
        :meth:`take_reaped` (one read, or none)."""
        return bool(self._reaped) or bool(os.pread(self._children_fd, 16, 0).strip())

    def take_reaped(self) -> list[Reaped]:
        if not self._reaped:
            return []
        with self._lock:
            reaped, self._reaped = self._reaped, []
        return reaped

    # --- reading the tree -------------------------------------------------------------

    def read(self) -> Reading:
        """Every descendant of this process, read now; those that are gone are forgotten."""
        now = time.monotonic()
        seen: dict[int, Process] = {}
        total = 0
        for pid in self._descendants():
            process = self._known.get(pid) or self._new(pid)
            if process is None or not _read_process(process, now, self._page):
                continue
            seen[pid] = process
            total += process.own
        self._known = seen
        return Reading(total, seen)

    def _new(self, pid: int) -> Process | None:
        cmdline = _read(f"/proc/{pid}/cmdline")
        if not cmdline:
            return None  # gone, or a zombie
        forked = cmdline == self._cmdline and _readlink(f"/proc/{pid}/exe") == self._exe
        name = cmdline.split(b"\0", 1)[0].decode(errors="replace").rsplit("/", 1)[-1]
        return Process(pid, name or "?", forked)

    def _descendants(self) -> Iterator[int]:
        """This process's descendants, breadth first, at most MAX_PROCESSES."""
        queue = [self._pid]
        found = 0
        while queue and found < MAX_PROCESSES:
            parent = queue.pop(0)
            for child in _children(parent):
                if found >= MAX_PROCESSES:
                    return
                found += 1
                queue.append(child)
                yield child

    # --- reaping ------------------------------------------------------------------------

    def _take_over_reaping(self) -> None:
        """Reap through wait4() to keep each child's ``ru_maxrss``, as waitpid would."""
        waitpid, wait = os.waitpid, os.wait
        me = self._pid
        note = self._note

        def memstream_waitpid(pid: int, options: int) -> tuple[int, int]:
            if os.getpid() != me:  # a forked child of the worker reaps its own
                return waitpid(pid, options)
            got, status, usage = os.wait4(pid, options)
            if got > 0:
                note(got, status, usage)
            return got, status

        def memstream_wait() -> tuple[int, int]:
            return memstream_waitpid(-1, 0)

        self._waitpid, self._wait = waitpid, wait
        os.waitpid = memstream_waitpid
        os.wait = memstream_wait

    def _note(self, pid: int, status: int, usage: Any) -> None:
        reaped = Reaped(pid, status, usage.ru_maxrss << 10)
        with self._lock:
            if len(self._reaped) < MAX_PROCESSES:
                self._reaped.append(reaped)

    def close(self) -> None:
        """Give os.waitpid and os.wait back (unless someone replaced them since)."""
        if self._waitpid is not None and getattr(os.waitpid, "__name__", "") == "memstream_waitpid":
            os.waitpid = self._waitpid
        if self._wait is not None and getattr(os.wait, "__name__", "") == "memstream_wait":
            os.wait = self._wait
        self._waitpid = self._wait = None
        if self._children_fd >= 0:
            os.close(self._children_fd)
            self._children_fd = -1


@dataclass
class Child:
    """What one test saw of one process: its name, its own peak and how that is known."""

    name: str
    peak: int = 0
    method: str = ""
    #: The signal that ended it, if one did and it was reaped during the test.
    signal: int = 0
    last: int = 0
    #: A forked copy of the worker: its RSS and ru_maxrss count the pages it shares.
    forked: bool = False


class TestTree:
    """What the processes of one test came to: the tree's peak, and each process's."""

    def __init__(self, worker_rss: int, reading: Reading | None) -> None:
        memory = reading.memory if reading is not None else 0
        self.start = worker_rss + memory
        self.peak = self.start
        #: The least the processes alive at the start held at any reading: the worker's
        #: own peak happened on top of at least that much.
        self._floor = memory
        self._start_pids = set(reading.processes) if reading is not None else set()
        self.children: dict[int, Child] = {}
        self._worker_low = worker_rss
        if reading is not None:
            self._note_processes(reading)

    def observe(self, worker_rss: int, reading: Reading) -> None:
        """A reading of the tree while the worker's RSS was ``worker_rss``."""
        self.peak = max(self.peak, worker_rss + reading.memory)
        self._worker_low = min(self._worker_low, worker_rss)
        # What the processes alive at the start still held (nothing, for those gone).
        held = sum(p.own for pid, p in reading.processes.items() if pid in self._start_pids)
        self._floor = min(self._floor, held)
        self._note_processes(reading)

    def _note_processes(self, reading: Reading) -> None:
        for pid, process in reading.processes.items():
            child = self.children.setdefault(pid, Child(process.name))
            child.forked = process.forked
            if process.forked:
                own, method = process.own, SAMPLED
            else:
                own, method = process.hwm, HWM
            if own >= child.peak:
                child.peak, child.method = own, method
            child.last = process.own

    def reaped(self, reaped: list[Reaped], worker_peak: int) -> None:
        """Children reaped during the test: their ``ru_maxrss`` where it is their own (above
        the worker's peak), and the signal that ended them."""
        for dead in reaped:
            child = self.children.setdefault(dead.pid, Child("?"))
            child.signal = killed_by(dead.status)
            # A forked child's counts the worker's pages too: its samples stand for it.
            if not child.forked and dead.maxrss > worker_peak and dead.maxrss > child.peak:
                child.peak, child.method = dead.maxrss, RUSAGE

    def finish(self, worker_peak: int) -> None:
        """The worker's own peak on top of what its descendants held all along, and each
        process's own peak, where it is exact, on top of the worker's lowest."""
        self.peak = max(self.peak, worker_peak + self._floor)
        for child in self.children.values():
            if child.method in (HWM, RUSAGE):
                self.peak = max(self.peak, self._worker_low + child.peak)

    def figures(self) -> dict[str, Any]:
        """The test's ``tree`` figures for its ``end`` (see protocol.stream)."""
        known = [c for c in self.children.values() if c.method]
        biggest = max(known, key=lambda c: c.peak, default=None)
        return {
            "peak": self.peak,
            "start": self.start,
            "count": len(self.children),
            "max_rss": biggest.peak if biggest else 0,
            "method": biggest.method if biggest else "",
            "killed": [
                [pid, c.name, c.signal, c.last or c.peak]
                for pid, c in self.children.items()
                if c.signal and c.signal not in POLITE
            ],
        }


def open_tree() -> ProcessTree | None:
    """The process tree where /proc shows it, else None: without it only the worker's
    own memory is measured, and the report says no child was seen."""
    try:
        return ProcessTree()
    except OSError:
        return None


def killed_by(status: int) -> int:
    """The signal that ended a reaped child, 0 if it exited."""
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in threads:
        out += [int(child) for child in _read(f"/proc/{pid}/task/{tid}/children").split()]
    return out


def _read_process(process: Process, now: float, page: int) -> bool:
    """Bring ``process``'s figures up to date; False if it is gone."""
    statm = _read(f"/proc/{process.pid}/statm").split()
    if len(statm) < 2:
        return False
    process.rss = int(statm[1]) * page
    status = _read(f"/proc/{process.pid}/status")
    start = status.find(b"VmHWM:")
    if start >= 0:
        process.hwm = int(status[start + 6 : status.index(b"kB", start)]) << 10
    if not process.forked:
        process.own = process.rss
        return True
    if now - process.private_at >= PRIVATE_FOR:
        private = _private(process.pid)
        if private is not None:
            process.private, process.private_rss, process.private_at = private, process.rss, now
    # In between, what its RSS did since is its private pages' doing: the shared ones
    # stay where the fork left them.
    process.own = max(0, process.private + process.rss - process.private_rss)
    return True


def _private(pid: int) -> int | None:
    rollup = _read(f"/proc/{pid}/smaps_rollup")
    total = 0
    for key in (b"Private_Clean:", b"Private_Dirty:"):
        start = rollup.find(key)
        if start < 0:
            return None
        total += int(rollup[start + len(key) : rollup.index(b"kB", start)]) << 10
    return total


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:
        return b""


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""
