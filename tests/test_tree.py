"""The worker's process tree, read from real processes: children, forks, grandchildren."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from pytest_memstream.plugin.tree import HWM, RUSAGE, ProcessTree
from pytest_memstream.plugin.tree import TestTree as Tree

MiB = 1 << 20
# A child that takes SIZE MiB, says so on stdout, and waits for stdin to close.
HOLDER = "import sys; x = b'h' * ({size} << 20); print('ready', flush=True); sys.stdin.read()"


@pytest.fixture
def tree() -> Iterator[ProcessTree]:
    tree = ProcessTree()
    yield tree
    tree.close()


def own_peak() -> int:
    """This process's high-water mark: what a reaped child's ru_maxrss is measured against."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) << 10


def hold(size: int) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER.format(size=size)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    return child


def release(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.close()
    child.wait(30)
    child.stdout.close()


def test_no_child_is_one_cheap_no(tree: ProcessTree) -> None:
    assert not tree.any_children()
    assert tree.read().memory == 0
    assert tree.take_reaped() == []


def test_a_child_counts_its_rss_and_its_own_peak(tree: ProcessTree) -> None:
    child = hold(200)
    try:
        assert tree.any_children()
        reading = tree.read()
        (process,) = reading.processes.values()
        assert process.pid == child.pid and not process.forked
        assert 200 * MiB <= process.own == process.rss < 230 * MiB
        assert process.hwm >= 200 * MiB
        assert reading.memory == process.own
    finally:
        release(child)
    (reaped,) = tree.take_reaped()  # Popen.wait reaped it through os.waitpid
    assert reaped.pid == child.pid and reaped.status == 0


def test_a_forked_child_counts_its_private_pages_only(tree: ProcessTree) -> None:
    held = b"w" * (100 * MiB)  # the worker's own, which the fork shares
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: 60 MiB of its own, then wait
        os.close(read)
        mine = b"c" * (60 * MiB)
        os.write(write, b"r")
        os.read(os.open("/dev/null", os.O_RDONLY), 1)
        time.sleep(60)
        os._exit(len(mine))
    os.close(write)
    try:
        assert os.read(read, 1) == b"r"
        (process,) = tree.read().processes.values()
        assert process.forked
        assert process.rss >= 150 * MiB  # its RSS counts the shared pages too
        assert 55 * MiB <= process.own <= 75 * MiB
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read)
        del held
    (reaped,) = tree.take_reaped()
    assert reaped.pid == pid and os.WTERMSIG(reaped.status) == signal.SIGKILL


def test_a_grandchild_is_in_the_tree(tree: ProcessTree) -> None:
    script = (
        "import subprocess, sys; "
        f"c = subprocess.Popen([sys.executable, '-c', {HOLDER.format(size=120)!r}], "
        "stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True); "
        "print(c.stdout.readline(), end='', flush=True); sys.stdin.read(); "
        "c.stdin.close(); c.wait()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        reading = tree.read()
        assert len(reading.processes) == 2
        assert reading.memory >= 120 * MiB
    finally:
        release(child)


def test_a_reaped_child_bigger_than_the_worker_keeps_its_peak(tree: ProcessTree) -> None:
    subprocess.run([sys.executable, "-c", "x = b'b' * (300 << 20)"], check=True)
    (reaped,) = tree.take_reaped()
    assert 300 * MiB <= reaped.maxrss < 340 * MiB
    test = Tree(40 * MiB, None)
    test.reaped([reaped], worker_peak=60 * MiB)
    test.finish(worker_peak=60 * MiB)
    figures = test.figures()
    assert figures["count"] == 1 and figures["method"] == RUSAGE
    assert figures["max_rss"] == reaped.maxrss
    assert figures["peak"] == 40 * MiB + reaped.maxrss


def test_a_test_tree_takes_the_largest_reading_and_the_workers_peak_on_its_floor(
    tree: ProcessTree,
) -> None:
    server = hold(50)  # alive before and after: it stands under the worker's own peak
    try:
        test = Tree(40 * MiB, tree.read())
        assert test.start >= 90 * MiB
        child = hold(100)
        test.observe(42 * MiB, tree.read())
        release(child)
        # A child smaller than this process: its ru_maxrss is this process's peak.
        test.reaped(tree.take_reaped(), worker_peak=own_peak())
        test.observe(41 * MiB, tree.read())
        test.finish(worker_peak=400 * MiB)
    finally:
        release(server)
    figures = test.figures()
    assert figures["count"] == 2
    assert figures["max_rss"] >= 100 * MiB and figures["method"] == HWM
    assert figures["peak"] >= 450 * MiB  # the worker's 400 on the server's 50
    assert figures["killed"] == []


def test_closing_gives_waitpid_back(tree: ProcessTree) -> None:
    assert os.waitpid.__name__ == "memstream_waitpid"
    tree.close()
    assert os.waitpid.__name__ == "waitpid" and os.wait.__name__ == "wait"
