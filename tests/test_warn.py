"""`--memstream-warn`: a hungry test is named in pytest's output while it still runs.

The hungry test grows, then blocks until a gate file appears; the test below reads
pytest's output line by line and opens the gate only once it has seen the warning, so the
warning provably came while the test was running.  Every wait has a deadline.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

DEADLINE = 60.0

HUNGRY = """
import os, pathlib, time

GATE = pathlib.Path(os.environ["MEMSTREAM_GATE"])
MiB = 1 << 20
KEPT = []


def wait_for(name):
    deadline = time.monotonic() + 60
    while not (GATE / name).exists():
        assert time.monotonic() < deadline, f"gate {name} never opened"
        time.sleep(0.01)


def test_hungry():
    KEPT.append(b"a" * (40 * MiB))
    wait_for("more")
    KEPT.append(b"b" * (40 * MiB))
    wait_for("go")
    KEPT.clear()


def test_small():
    data = b"s" * MiB
    del data
"""

WARNING = re.compile(
    r"memstream: (?P<worker>\S+) test_hungry\.py::test_hungry has grown "
    r"\+(?P<growth>[\d.]+)M to (?P<rss>[\d.]+)M RSS, (climbing \S+/s|steady|falling \S+/s)$"
)


class Run:
    """pytest in a subprocess, its output read line by line as it comes."""

    def __init__(self, path: Path, *args: str) -> None:
        self.gate = path / "gates"
        self.gate.mkdir(exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pytest", "--memstream", "-p", "no:randomly", *args],
            cwd=path,
            env=dict(os.environ, MEMSTREAM_GATE=str(self.gate)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def expect(self, pattern: re.Pattern[str]) -> re.Match[str]:
        """Read until a line matches ``pattern``; fail at the deadline or at the end."""
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail("not seen in time:\n" + "\n".join(self.lines))
            if line is None:
                pytest.fail("pytest ended first:\n" + "\n".join(self.lines))
            self.lines.append(line)
            match = pattern.search(line)
            if match:
                return match

    def open(self, name: str) -> None:
        (self.gate / name).touch()

    def finish(self) -> tuple[int, list[str]]:
        self.open("more")
        self.open("go")
        try:
            code = self.process.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail("pytest did not finish:\n" + "\n".join(self.lines))
        while (line := self._queue.get(timeout=10)) is not None:
            self.lines.append(line)
        return code, self.lines


@pytest.fixture
def hungry(pytester: pytest.Pytester) -> Path:
    pytester.makepyfile(test_hungry=HUNGRY)
    return pytester.path


def test_warns_while_the_test_runs_under_xdist(hungry: Path) -> None:
    run = Run(hungry, "-n", "2", "--memstream-warn=32M")
    try:
        first = run.expect(WARNING)  # test_hungry is blocked on "more" right now
        assert first.group("worker") in ("gw0", "gw1")
        assert 32 <= float(first.group("growth")) < 64
        assert first.string.startswith("memstream:")  # on a line of its own
        run.open("more")  # it grows again, past the next level: 64M
        second = run.expect(WARNING)
        assert second.group("worker") == first.group("worker")
        assert 64 <= float(second.group("growth")) < 128
        assert float(second.group("rss")) > float(first.group("rss"))
    finally:
        code, lines = run.finish()
    assert code == 0, "\n".join(lines)
    # Once per level: 32M and 64M, not again at 80M.
    assert sum(bool(WARNING.search(line)) for line in lines) == 2
    summary = next(i for i, line in enumerate(lines) if "memstream: top" in line)
    assert lines.index(second.string) < summary
    # pytest's own progress is intact: the dots and the percentage are still there.
    assert any(re.fullmatch(r"\.+\s+\[100%\]", line) for line in lines), lines


def test_warns_without_xdist_and_keeps_progress_aligned(hungry: Path) -> None:
    run = Run(hungry, "--memstream-warn=32M", "-p", "no:xdist")
    try:
        first = run.expect(WARNING)
        assert first.group("worker") == "main"
        assert first.string.startswith("memstream:")
    finally:
        code, lines = run.finish()
    assert code == 0, "\n".join(lines)
    progress = [line for line in lines if line.endswith("[100%]")]
    assert len(progress) == 1
    # The dots continue in the column where pytest left them: under the file name.
    assert re.fullmatch(r" {15}\.\.\s+\[100%\]", progress[0]), progress


def test_no_warning_below_the_size(hungry: Path) -> None:
    run = Run(hungry, "-n", "2", "--memstream-warn=1GiB")
    run.open("more")
    run.open("go")
    code, lines = run.finish()
    assert code == 0, "\n".join(lines)
    assert not any("has grown" in line for line in lines)


@pytest.mark.parametrize("size", ["lots", "0", "-5M", "12Q"])
def test_bad_sizes_are_rejected(pytester: pytest.Pytester, size: str) -> None:
    result = pytester.runpytest_subprocess("--memstream", f"--memstream-warn={size}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"*--memstream-warn got '{size}'; expected a size above 0 such as 500M, 1.5GiB*"]
    )


def test_the_ini_key_is_read(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmemstream_warn = 2 bananas\n")
    result = pytester.runpytest_subprocess("--memstream")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini key memstream_warn in *tox.ini got '2 bananas'*"])
