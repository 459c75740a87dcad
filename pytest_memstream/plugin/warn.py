"""``--memstream-warn SIZE``: name a hungry test in pytest's terminal while it still runs.

Detection runs on the sink thread, right after it applied new messages: under pytest-xdist
the controller's main thread sits in xdist's loop and runs no hook while a worker is busy
with one long test, so nothing that waits for a hook could speak up in time.  A running
test's growth is its current RSS (from the latest sample or phase message) minus its RSS
when it started; a line goes out when it first reaches SIZE and again each time it reaches
double the last level announced.

Printing from a second thread into pytest's terminal: pytest's writes take no lock that we
could share, so the line is written in one ``write`` call, starting on a fresh line
(pytest-xdist writes its progress dots without a newline) and keeping the terminal
writer's idea of the current column right, so that the ``[ 42%]`` column still lines up.
Our own lock keeps two of our lines from interleaving.  When this process runs the tests
itself (no xdist), pytest redirects file descriptor 1 while a test runs, so the line goes
to a duplicate of the terminal's descriptor taken before any test ran, and the cursor
is moved back to pytest's column just before pytest reports the test.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from pytest_memstream.collector.state import RunState
from pytest_memstream.sizes import format_size

if TYPE_CHECKING:
    from pytest_memstream.collector.sink import Sink


def growth_alarm(config: pytest.Config, size: int) -> Callable[[Sink], None]:
    """What to do with the sink once it is built: after each batch it applies, announce
    the tests that grew by ``size`` on pytest's terminal."""
    lines = TerminalLines(config)
    config.add_cleanup(lines.close)
    config.pluginmanager.register(lines, "memstream-terminal-lines")

    def add_alarm(sink: Sink) -> None:
        sink.on_applied.append(GrowthAlarm(sink.state, size, lines).check)

    return add_alarm


class GrowthAlarm:
    """Finds running tests whose growth reached the next level, and announces them."""

    def __init__(self, state: RunState, threshold: int, lines: TerminalLines) -> None:
        self._state = state
        self._threshold = threshold
        self._lines = lines
        #: worker -> (index of its running test, growth at which to speak next)
        self._next: dict[str, tuple[int, int]] = {}

    def check(self) -> None:
        """Called on the sink thread after each batch of messages."""
        found = []
        with self._state.cond:
            for worker in self._state.workers.values():
                running = worker.running
                if running is None:
                    continue
                index, level = self._next.get(worker.id, (-1, 0))
                if index != running.index:
                    level = self._threshold
                growth = running.rss - running.rss_start
                # With the processes it started, where it started any.
                tree = None
                if running.tree_start is not None:
                    tree = running.tree - running.tree_start
                    if tree > growth:
                        growth = tree
                if growth < level:
                    self._next[worker.id] = (running.index, level)
                    continue
                while level <= growth:
                    level *= 2
                self._next[worker.id] = (running.index, level)
                found.append(
                    announcement(
                        worker.id,
                        running.nodeid,
                        running.rss,
                        growth,
                        running.climb_rate(),
                        running.tree if tree is not None and tree == growth else None,
                    )
                )
        # Outside the lock: a terminal that does not take output must not stall the sink.
        for line in found:
            self._lines.write(line)


def announcement(
    worker: str, nodeid: str, rss: int, growth: int, rate: float, tree: int | None = None
) -> str:
    """The line for a test that grew by ``growth``; with ``tree``, the total of the
    processes it started and the worker's, if that is what grew."""
    if tree is not None:
        return (
            f"memstream: {worker} {nodeid} has grown {format_size(growth, signed=True)} "
            f"with the processes it started, to {format_size(tree)} in all"
        )
    if rate > 0:
        trend = f"climbing {format_size(rate)}/s"
    elif rate < 0:
        trend = f"falling {format_size(-rate)}/s"
    else:
        trend = "steady"
    return (
        f"memstream: {worker} {nodeid} has grown {format_size(growth, signed=True)} "
        f"to {format_size(rss)} RSS, {trend}"
    )


class TerminalLines:
    """Whole lines on pytest's terminal, from any thread, between pytest's own output.

    Registered as a plugin so that, when it wrote while a test's output was captured, it
    can move the cursor back to where pytest left it before pytest writes again.
    """

    def __init__(self, config: pytest.Config) -> None:
        self._config = config
        self._lock = threading.Lock()
        # Taken in pytest_configure, when pytest's capturing is suspended: the terminal.
        self._fd: int | None
        try:
            self._fd = os.dup(sys.stdout.fileno())
        except (AttributeError, OSError, ValueError):
            self._fd = None  # stdout is not a file (pytest run in-process by a tool)
        #: Columns pytest's writer believes it is at while our cursor is at 0.
        self._owed = 0

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def write(self, line: str) -> None:
        with self._lock:
            if self._config.pluginmanager.get_plugin("terminalreporter") is None:
                print(line, file=sys.stderr, flush=True)  # -p no:terminal
                return
            writer = self._config.get_terminal_writer()
            column = writer.width_of_current_line
            text = writer.markup(line, yellow=True, bold=True) + "\n"
            if self._fd is None or not self._captured():
                writer.write(("\n" if column else "") + text, flush=True)
            else:
                # Written past the capture; the writer's column is put right later.
                _write_all(self._fd, (("\n" if column and not self._owed else "") + text).encode())
                self._owed = column

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self) -> None:
        """Before pytest writes a test's progress: back to the column it believes it is at."""
        if self._owed:
            with self._lock:
                if self._owed and self._fd is not None:
                    _write_all(self._fd, b" " * self._owed)
                self._owed = 0

    def _captured(self) -> bool:
        """Whether pytest currently redirects file descriptor 1 (a test of ours runs)."""
        assert self._fd is not None
        try:
            ours, now = os.fstat(self._fd), os.fstat(1)
        except OSError:
            return True
        return (ours.st_dev, ours.st_ino) != (now.st_dev, now.st_ino)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]
