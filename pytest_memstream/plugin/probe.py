"""Reading this process's resident set size and its peak.

On Linux the kernel keeps an RSS high-water mark (``VmHWM``) and resets it to the
current RSS when ``5`` is written to ``/proc/self/clear_refs``.  Read at each phase
boundary and set back to the RSS there, it gives the exact peak of each phase, however
short the spike, for a few µs.  Elsewhere the peak is the largest RSS the sampler thread
saw, and the report says so (``peak_method: sampled``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading

if sys.platform == "linux":
    from resource import RUSAGE_THREAD, getrusage

HWM = "hwm"
SAMPLED = "sampled"
#: How far a getrusage reading and the status file may differ and still agree (the
#: kernel sums its per-CPU RSS counters lazily).
AGREE = 1 << 20


class MemoryProbe:
    """RSS and peak RSS between phase boundaries, by the best method available.

    A *boundary* is where one phase ends and the next begins: :meth:`start` takes the
    first, :meth:`boundary` each later one and returns the peak since the one before.
    """

    method: str

    def rss(self) -> int:
        raise NotImplementedError

    def start(self) -> int:
        """Take a boundary whose peak counts for nothing (the time before it belongs to
        no phase); return the RSS now."""
        return self.boundary()[0]

    def boundary(self) -> tuple[int, int]:
        """Take a boundary; return ``(rss now, peak rss since the last boundary)``."""
        raise NotImplementedError

    def observe(self, rss: int) -> None:
        """A sample taken by the sampler thread (only the sampled method uses it)."""


def fork_flag() -> list[bool]:
    """A list that is empty here and not empty in a forked child of this process.

    The fork hook only appends to a list: a function of ours, kept by
    ``os.register_at_fork`` to the very end, would keep the whole session alive with it
    (docs/design-notes.md).
    """
    forked: list[bool] = []
    os.register_at_fork(after_in_child=functools.partial(forked.append, True))
    return forked


def open_probe() -> MemoryProbe:
    """The exact high-water-mark probe where the kernel offers it, else the sampled one."""
    try:
        return HighWaterMark()
    except (OSError, ValueError):
        return SampledPeak()


class HighWaterMark(MemoryProbe):
    """Exact per-phase peaks from the Linux RSS high-water mark.

    Writing ``5`` to ``/proc/self/clear_refs`` resets the mark to the current RSS.  It is
    read with ``getrusage()``, which is cheap but also reports a maximum the process
    inherited at exec, bounded by the *floor* (the reading just after the first reset);
    ``VmHWM`` in ``/proc/self/status``, several times dearer, is read only where
    getrusage cannot tell, and once to prove it right.  The figures and the reasoning:
    docs/design-notes.md, "Reading the high-water mark".
    """

    method = HWM

    def __init__(self) -> None:
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._open()
        try:
            self._status_figures()  # it parses here, or this probe is not used at all
        except BaseException:
            self._close()
            raise
        #: Whether getrusage follows the mark: True, False, or None while unproven.  It
        #: is proven, or not, on the first reading above the floor (see _figures).
        self._trust: bool | None = None
        # A forked child (a test using multiprocessing) must not read its parent's files:
        # its first reading opens its own.
        self._forked = fork_flag()

    def _open(self, reset: bool = True) -> None:
        # Kept open for the life of the process: each reading is then one system call.
        fds: list[int] = []
        try:
            for path, mode in _FILES:
                fds.append(os.open(path, mode | os.O_CLOEXEC))
            if reset:
                os.write(fds[2], b"5")
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        self._statm, self._status, self._clear_refs = fds
        # A forked child inherits no maximum: the kernel carries one across exec only.
        self._floor = _maxrss_kib() if reset else 0

    def _close(self) -> None:
        for fd in (self._statm, self._status, self._clear_refs):
            if fd >= 0:
                os.close(fd)
        self._statm = self._status = self._clear_refs = -1

    def _in_child(self) -> None:
        """Open this process's own files, in a forked child, at its first reading.

        The mark is not reset: a forked child's starts at its RSS at the fork, so the
        first boundary shows the peak since then, whatever the child did before it.
        The parent's descriptors stay open: the child may have closed them already, and
        their numbers may be someone else's by now.
        """
        self._forked.clear()
        self._statm = self._status = self._clear_refs = -1
        # A child that cannot read its own files never measures: it must still run.
        with contextlib.suppress(OSError):
            self._open(reset=False)

    def rss(self) -> int:
        if self._forked:
            self._in_child()
        return int(os.pread(self._statm, 64, 0).split(None, 2)[1]) * self._page

    def boundary(self) -> tuple[int, int]:
        # At every phase: the usual case is one flat function (see _figures for the rest).
        if self._forked:
            self._in_child()
        if self._trust:
            rss = int(os.pread(self._statm, 64, 0).split(None, 2)[1]) * self._page
            mark = getrusage(RUSAGE_THREAD).ru_maxrss
            if mark > self._floor:
                # getrusage sums per-CPU counters lazily: it may lag statm a little.
                peak = mark << 10
                if peak <= rss:
                    return rss, rss
                # Set back for the next phase only now: at the RSS, a reset changes nothing.
                os.write(self._clear_refs, b"5")
                return rss, peak
            if mark << 10 <= rss:
                return rss, rss
        rss, peak = self._figures()
        if peak > rss:
            os.write(self._clear_refs, b"5")
        return rss, peak

    def _figures(self) -> tuple[int, int]:
        """The figures when getrusage is not trusted yet, or cannot tell."""
        if self._trust is None:
            rss = self.rss()
            mark = _maxrss_kib()
            if mark > self._floor:
                # The first reading above the floor: it must agree with the status file
                # (it does on Linux; anywhere it does not, the status file is read).
                rss, peak = self._status_figures()
                self._trust = _follows(mark, peak)
                return rss, peak
        return self._status_figures()

    def _status_figures(self) -> tuple[int, int]:
        status = os.pread(self._status, 8192, 0)
        return _status_kb(status, b"VmRSS:") * 1024, _status_kb(status, b"VmHWM:") * 1024


_FILES = (
    ("/proc/self/statm", os.O_RDONLY),
    ("/proc/self/status", os.O_RDONLY),
    ("/proc/self/clear_refs", os.O_WRONLY),
)


def _follows(mark_kib: int, status_peak: int) -> bool:
    """Whether a getrusage reading agrees with the status file's mark, give or take the
    kernel's lazily summed per-CPU counters."""
    return abs((mark_kib << 10) - status_peak) <= AGREE


def _maxrss_kib() -> int:
    """The mark, or the inherited maximum if larger, in KiB (see HighWaterMark)."""
    return getrusage(RUSAGE_THREAD).ru_maxrss


def _status_kb(status: bytes, key: bytes) -> int:
    start = status.index(key) + len(key)
    return int(status[start : status.index(b"kB", start)])


class SampledPeak(MemoryProbe):
    """Portable fallback: the peak is the largest RSS seen by the sampler or at a boundary."""

    method = SAMPLED

    def __init__(self) -> None:
        import psutil  # only where /proc cannot be used: it costs an import otherwise

        self._process = psutil.Process()
        self._lock = threading.Lock()
        self._peak = 0
        # A forked child must read its own process, not its parent's.
        self._forked = fork_flag()

    def _in_child(self) -> None:
        import psutil

        self._forked.clear()
        self._process = psutil.Process()
        self._lock = threading.Lock()  # the parent's sampler may have held it at the fork

    def rss(self) -> int:
        if self._forked:
            self._in_child()
        rss: int = self._process.memory_info().rss
        return rss

    def observe(self, rss: int) -> None:
        with self._lock:
            self._peak = max(self._peak, rss)

    def boundary(self) -> tuple[int, int]:
        rss = self.rss()
        with self._lock:
            peak, self._peak = max(self._peak, rss), rss
        return rss, peak
