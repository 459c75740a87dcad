"""Helpers for the viewer tests: a gated test project, its pytest run, and viewers of it.

The test projects block on gate files that the test opens once it has seen what it waits
for, so that "while the test is still running" is a fact, not a hope; every wait has a
deadline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

DEADLINE = 60.0

PROJECT = """
import os, pathlib, time
import pytest

GATE = pathlib.Path(os.environ["MEMSTREAM_GATE"])
MiB = 1 << 20


def wait_for(name):
    deadline = time.monotonic() + 60
    while not (GATE / name).exists():
        assert time.monotonic() < deadline, f"gate {name} never opened"
        time.sleep(0.01)


def test_hungry():
    data = b"x" * (48 * MiB)
    wait_for("go")
    del data


@pytest.mark.parametrize("n", range(6))
def test_quick(n):
    wait_for("quick")
    data = b"q" * ((n + 1) * MiB)
    del data


def test_zz_hold():
    wait_for("go")  # keeps the other worker up too (xdist stops an idle one)
"""

# Holds the controller after its report is written, while the sink still serves viewers.
HOLD_AT_END = """
import os, pathlib, time

def pytest_sessionfinish(session):
    if hasattr(session.config, "workerinput") or not os.environ.get("MEMSTREAM_HOLD"):
        return
    gate = pathlib.Path(os.environ["MEMSTREAM_GATE"]) / "end"
    deadline = time.monotonic() + 60
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
"""

Event = dict[str, Any]


class Lines:
    """Everything a subprocess writes to one pipe, line by line, as it comes."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self.closed = False
        self._cond = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def wait(self, predicate: Callable[[str], bool], timeout: float = DEADLINE) -> str:
        """The first line for which ``predicate`` holds; fail after ``timeout`` seconds."""
        found: list[str] = []

        def seen(lines: list[str]) -> bool:
            found[:] = [line for line in lines if predicate(line)][:1]
            return bool(found)

        self.wait_all(seen, timeout)
        return found[0]

    def wait_all(self, predicate: Callable[[list[str]], bool], timeout: float = DEADLINE) -> None:
        """Wait until ``predicate`` holds for all the lines so far."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.lines) or self.closed, timeout):
                pytest.fail("not seen in time; output so far:\n" + "\n".join(self.lines))
            if not predicate(self.lines):
                pytest.fail("the output ended first:\n" + "\n".join(self.lines))

    def wait_closed(self, timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self.closed, timeout)


class Watch:
    """A `memstream watch --json` process and the events it printed."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pytest_memstream.cli", "watch", "--json", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out = Lines(self.process.stdout)
        self.err = Lines(self.process.stderr)

    @property
    def events(self) -> list[Event]:
        return [json.loads(line) for line in self.out.lines]  # every line must parse

    def wait_event(self, predicate: Callable[[Event], bool]) -> Event:
        line = self.out.wait(lambda line: predicate(json.loads(line)))
        event: Event = json.loads(line)
        return event

    def wait_state(self, predicate: Callable[[dict[str, Any]], bool]) -> None:
        """Wait until the state replayed from the events so far satisfies ``predicate``."""
        self.out.wait_all(lambda lines: predicate(replay([json.loads(x) for x in lines])))

    def finish(self, timeout: float = 30) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"memstream watch did not exit; stderr: {self.err.lines}")
        self.out.wait_closed(5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class Project:
    """A tiny test project, its gate directory, and the pytest run over it."""

    def __init__(self, pytester: pytest.Pytester, gate: str = "gates") -> None:
        self.path = pytester.path
        pytester.makepyfile(test_gated=PROJECT)
        pytester.makeconftest(HOLD_AT_END)
        self.gate = self.path / gate
        self.gate.mkdir()
        self.report_path = self.path / "report.json"
        self.run: subprocess.Popen[str] | None = None
        self.output: Lines | None = None
        self.watches: list[Watch] = []

    def pytest(self, *args: str, hold: bool = False, start_new_session: bool = False) -> None:
        env = dict(os.environ, MEMSTREAM_GATE=str(self.gate))
        if hold:
            env["MEMSTREAM_HOLD"] = "1"
        self.run = subprocess.Popen(
            [
                *(sys.executable, "-m", "pytest", "-n", "2", "--memstream", "-p", "no:randomly"),
                f"--memstream-json={self.report_path}",
                *args,
            ],
            cwd=self.path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=start_new_session,
        )
        self.output = Lines(self.run.stdout)

    def watch(self, *args: str) -> Watch:
        watch = Watch(self.path, *args)
        self.watches.append(watch)
        return watch

    def open(self, name: str) -> None:
        (self.gate / name).touch()

    def close_gates(self) -> None:
        for gate in self.gate.iterdir():
            gate.unlink()

    def session_file(self) -> Path:
        """The session file of the run going on, once it is there."""
        assert self.run is not None
        path = self.path / ".pytest_cache" / "d" / "memstream" / f"session-{self.run.pid}.json"
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            if path.exists():
                return path
            assert self.run is not None and self.output is not None
            if self.run.poll() is not None:
                self.output.wait_closed(5)
                pytest.fail("pytest ended early:\n" + "\n".join(self.output.lines))
            time.sleep(0.01)
        pytest.fail("no session file appeared")

    def finish(self) -> tuple[int, str, dict[str, Any]]:
        assert self.run is not None and self.output is not None
        try:
            code = self.run.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.run.kill()
            pytest.fail("pytest did not finish:\n" + "\n".join(self.output.lines))
        self.output.wait_closed(5)
        report: dict[str, Any] = json.loads(self.report_path.read_text())
        return code, "\n".join(self.output.lines), report

    def cleanup(self) -> None:
        self.open("quick")
        self.open("go")
        self.open("end")
        for watch in self.watches:
            watch.kill()
        if self.run is not None and self.run.poll() is None:
            self.run.kill()
            self.run.wait(10)


def running(event: Event, name: str) -> bool:
    """Whether ``event`` shows a worker running the test ``name``."""
    values = event.get("state") or event.get("sets") or {}
    return any(
        key.startswith("w/") and (value["running"] or {}).get("nodeid", "").endswith(name)
        for key, value in values.items()
    )


def replay(events: list[Event]) -> dict[str, Any]:
    """The state a viewer ends with, rebuilt from its JSON events alone."""
    state: dict[str, Any] = {}
    for event in events:
        if event["event"] == "snapshot":
            state = dict(event["state"])
        elif event["event"] == "update":
            state.update(event["sets"])
    return state


def quick_done(state: dict[str, Any]) -> int:
    return sum(1 for k, v in state.items() if k.startswith("t/") and "test_quick" in v["nodeid"])


def report_totals(report: dict[str, Any]) -> dict[str, Any]:
    """What `memstream watch` should call the totals of the run in ``report``."""
    workers = report["workers"]
    return {
        "status": "finished",
        "tests": len(report["tests"]),
        "messages": report["run"]["messages"],
        "frames": report["run"]["frames"],
        "rejected": sum(report["run"]["rejected"].values()),
        "workers": len(workers),
        "lost": sum(w["lost"] for w in workers),
        "dropped": sum(w["dropped"] for w in workers),
        "recovered": sum(w["recovered"] for w in workers),
        "unrecoverable": sum(w["unrecoverable"] for w in workers),
        "crashed": sorted(w["id"] for w in workers if w["status"] == "crashed"),
    }


def assert_same_tests(state: dict[str, Any], report: dict[str, Any]) -> None:
    # The viewer state's tests use the report's names for the same figures.
    names = ("nodeid", "outcome", "growth", "peak_rss", "kept")
    seen = {
        (v["worker"], v["index"]): tuple(v[name] for name in names)
        for k, v in state.items()
        if k.startswith("t/")
    }
    expected = {
        (t["worker"], t["index"]): tuple(t[name] for name in names) for t in report["tests"]
    }
    assert seen == expected


def assert_same_workers(state: dict[str, Any], report: dict[str, Any]) -> None:
    seen = {
        k[2:]: (v["status"], v["messages"], v["lost"], v["recovered"], v["max_rss"])
        for k, v in state.items()
        if k.startswith("w/")
    }
    expected = {
        w["id"]: (w["status"], w["messages"], w["lost"], w["recovered"], w["max_rss"])
        for w in report["workers"]
    }
    assert seen == expected


class Tmux:
    """A private tmux server (its own socket) with a detached session of a fixed size."""

    def __init__(self, name: str) -> None:
        self.socket = f"memstream-test-{os.getpid()}-{name}"

    def __call__(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=20
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start(self, window: str, command: str) -> None:
        self("new-session", "-d", "-s", window, "-x", "80", "-y", "30", command)

    def screen(self, window: str) -> str:
        return self("capture-pane", "-p", "-S", "-200", "-t", window)

    def wait(self, window: str, predicate: Callable[[str], bool]) -> str:
        deadline = time.monotonic() + DEADLINE
        while True:
            screen = self.screen(window)
            if predicate(screen):
                return screen
            if time.monotonic() > deadline:
                pytest.fail(f"the screen never showed it:\n{screen}")
            time.sleep(0.05)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


def run_value(status: str, tests: int) -> dict[str, Any]:
    return {
        "status": status,
        "pid": 1,
        "started": 1.0,
        "messages": tests,
        "frames": tests,
        "rejected": 0,
        "tests": tests,
        "total": 200 << 20,
        "peak_total": 300 << 20,
        "limit": 8 << 30,
        "headroom": 6 << 30,
    }


def record_value(n: int) -> dict[str, Any]:
    return {
        "nodeid": f"test_x.py::test_{n}",
        "worker": "gw0",
        "index": n,
        "outcome": "passed",
        "rss_start": 100,
        "peak_rss": 100 + n,
        "rss_end": 100,
        "growth": n,
        "kept": 0,
        "peak_phase": "call",
        "peak_method": "hwm",
        "source": "stream",
        "started": 1.0,
        "finished": 2.0,
        "tree_growth": n,
        "children": 0,
    }
