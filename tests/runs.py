"""Driving pytest the way a user does: a tiny project, a real subprocess run, its report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import xdist.scheduler

#: ``--dist worksteal`` and ``--maxschedchunk`` came with pytest-xdist 3.2 (the oldest
#: Python's smoke run has xdist 3.0).
NEEDS_XDIST_3_2 = pytest.mark.skipif(
    not hasattr(xdist.scheduler, "WorkStealingScheduling"),
    reason="--dist worksteal and --maxschedchunk came with pytest-xdist 3.2",
)


@dataclass
class MemstreamRun:
    result: pytest.RunResult
    report: dict[str, Any]

    @property
    def output(self) -> str:
        return "\n".join(self.result.outlines)

    def test(self, name: str, worker: str | None = None) -> dict[str, Any]:
        """The report entry of the one test whose node id ends with ``name``."""
        found = [
            t
            for t in self.report["tests"]
            if t["nodeid"].endswith(name) and (worker is None or t["worker"] == worker)
        ]
        assert len(found) == 1, (name, [t["nodeid"] for t in self.report["tests"]])
        test: dict[str, Any] = found[0]
        return test


RunMemstream = Callable[..., MemstreamRun]


def table_rows(output: str, title: str) -> list[str]:
    """The rows of the memstream table whose section title contains ``title``."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if title in line)
    rows = []
    for line in lines[start + 2 :]:  # past the title and the column header
        if line.startswith("memstream:"):
            break
        rows.append(line)
    return rows


# Test-project code: block until this worker's stream has sent ``messages`` more
# messages (a condition polled with a deadline, not a sleep).
WAIT_UNTIL_STREAMED = """
def wait_until_streamed(request, messages):
    stream = request.config.pluginmanager.get_plugin("memstream-recorder").stream
    target, deadline = stream.sent + messages, time.monotonic() + 60
    while stream.sent < target:
        assert time.monotonic() < deadline, "the stream did not move for 60 s"
        time.sleep(0.005)
"""


MEMORY_TESTS = """
import unittest
import pytest

KEPT = []
MiB = 1 << 20


def test_spike():
    data = b"x" * (300 * MiB)  # every page touched, freed at once
    del data


def test_keeps():
    KEPT.append(b"k" * (40 * MiB))


def test_fails():
    assert False


@pytest.mark.skip(reason="not today")
def test_skipped():
    pass


@pytest.fixture
def big_fixture():
    data = b"f" * (64 * MiB)
    yield
    del data


def test_fixture_cost(big_fixture):
    pass


class TestCaseStyle(unittest.TestCase):
    def test_unittest(self):
        data = b"u" * (32 * MiB)
        del data
"""
