"""The fixtures every test module may ask for (their helpers live in runs.py, watching.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from runs import MemstreamRun, RunMemstream
from streams import KEYS
from watching import Project

from pytest_memstream.collector.sink import Sink
from pytest_memstream.collector.state import RunState


@pytest.fixture
def run_memstream(pytester: pytest.Pytester) -> RunMemstream:
    """Run pytest with ``--memstream`` in a subprocess and load its JSON report."""

    def run(*args: str, expect_json: bool = True) -> MemstreamRun:
        path = pytester.path / "memstream.json"
        path.unlink(missing_ok=True)
        result = pytester.runpytest_subprocess(
            "--memstream", f"--memstream-json={path}", "-p", "no:randomly", *args
        )
        report = json.loads(path.read_text()) if expect_json else {}
        return MemstreamRun(result, report)

    return run


@pytest.fixture
def project(pytester: pytest.Pytester) -> Iterator[Project]:
    project = Project(pytester)
    yield project
    project.cleanup()


@pytest.fixture
def sink() -> Iterator[Sink]:
    """A real sink on a free loopback port, admitting ``streams.KEYS``, started."""
    sink = Sink(RunState(), KEYS, "tcp://127.0.0.1")
    sink.start()
    yield sink
    sink.stop()
