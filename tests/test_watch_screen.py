"""The terminal view of `memstream watch`: in a real terminal (tmux), and at any size."""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any

import pytest
from rich.console import Console
from watching import Project, Tmux, record_value, run_value

from pytest_memstream.cli.client import Mirror
from pytest_memstream.cli.screen import Status, render


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_screen_at_80_columns_shows_running_test_and_top(project: Project) -> None:
    tmux = Tmux("screen")
    watch = f"{sys.executable} -m pytest_memstream.cli watch"
    after = "echo EXIT=$?; stty -a; echo STTY-DONE; sleep 60"  # wait for the last line
    try:
        project.pytest()
        project.session_file()
        tmux.start("stay", f"cd {project.path} && {watch} --top 4 --stay; {after}")
        tmux.start("interrupt", f"cd {project.path} && {watch}; {after}")
        tmux.wait("stay", lambda s: "test_gated.py::test_hungry" in s)
        project.open("quick")
        screen = tmux.wait(
            "stay",
            lambda s: (
                # All six quick tests done: the largest, [5], is in the top list too.
                "test_gated.py::test_hungry" in s
                and s.count("test_gated.py::test_quick") >= 4
                and "test_quick[5]" in s
            ),
        )
        lines = screen.splitlines()
        assert lines[0].startswith("memstream running")  # the header fits on one line
        hungry = next(line for line in lines if "test_hungry" in line)
        assert hungry.split()[1] == "call"  # worker, phase, RSS, growth, sparkline, test
        assert hungry.split()[3].startswith("+4")  # it grew by some 48 MiB
        assert "top 4 tests by growth" in screen
        top = lines[lines.index(next(x for x in lines if "top 4 tests" in x)) + 2 :][:4]
        assert all("test_quick[" in row for row in top), top
        assert "test_quick[5]" in top[0]  # the biggest first

        tmux.wait("interrupt", lambda s: "test_hungry" in s)
        tmux("send-keys", "-t", "interrupt", "C-c")
        screen = tmux.wait("interrupt", lambda s: "STTY-DONE" in s)
        assert "EXIT=130" in screen
        assert " icanon " in screen and " echo " in screen  # the terminal is restored

        project.open("go")
        code, output, report = project.finish()
        assert code == 0, output
        screen = tmux.wait("stay", lambda s: "memstream finished" in s)
        assert "EXIT=" not in screen  # --stay: still showing the final state
        assert f"{len(report['tests'])} tests done" in screen
        tmux("send-keys", "-t", "stay", "q")
        screen = tmux.wait("stay", lambda s: "STTY-DONE" in s)
        assert "EXIT=0" in screen
        assert " icanon " in screen and " echo " in screen
    finally:
        tmux.kill()


def screen_mirror() -> Mirror:
    mirror = Mirror()
    long_id = "test_deep/test_module_with_a_long_name.py::test_" + "x" * 80
    running = {
        "index": 3,
        "nodeid": long_id,
        "phase": "call",
        "started": time.time() - 5,
        "rss_start": 100 << 20,
        "rss": 612 << 20,
        "peak_rss": 612 << 20,
        "climb_rate": 50e6,
        "recent_rss": [(100 + 10 * n) << 20 for n in range(48)],
        "tree": None,
        "tree_start": None,
    }
    worker = {
        "status": "running",
        "pid": 4242,
        "peak_method": "hwm",
        "messages": 10,
        "lost": 0,
        "dropped": 0,
        "recovered": 0,
        "unrecoverable": 0,
        "max_rss": 612 << 20,
        "crashed_test": "",
        "error": "",
        "running": running,
    }
    values: dict[str, Any] = {"run": dict(run_value("running", tests=30), started=time.time() - 42)}
    values["w/gw0"] = worker
    values["w/gw1"] = dict(
        worker, status="crashed", running=None, crashed_test="test_a.py::test_boom"
    )
    values["w/gw10"] = dict(worker, status="complete", running=None)
    for n in range(30):
        values[f"t/gw1/{n}"] = dict(record_value(n), worker="gw1", growth=n << 20)
    mirror.load(10, values)
    return mirror


@pytest.mark.parametrize("width", [80, 60, 140])
def test_the_screen_fits_the_width(width: int) -> None:
    console = Console(width=width, height=30, record=True, color_system=None)
    console.print(render(screen_mirror(), Status("tcp://x"), width, 30, 10, "growth"))
    lines = console.export_text().splitlines()
    assert all(len(line) <= width for line in lines)
    assert lines[0].startswith("memstream running 0:4")
    assert lines[1] == ""  # the header is one line, however narrow the terminal
    header = next(i for i, line in enumerate(lines) if line.startswith("worker  phase"))
    workers = lines[header + 1 : lines.index("", header)]
    assert [line.split()[0] for line in workers] == ["gw0", "gw1", "gw10"]  # natural order
    assert workers[0].split()[1:4] == ["call", "612.0M", "+512.0M"]
    assert "▁" in workers[0] and "█" in workers[0]  # the sparkline climbs
    assert "…" in workers[0] and workers[0].rstrip().endswith("xxx")  # cut at the front
    assert "crashed" in workers[1]
    assert "test_a.py::test_boom" in workers[1] or width < 80
    assert "gw1 crashed while running test_a.py::test_boom" in lines
    top = lines[lines.index("top 10 tests by growth") + 2 :][:10]
    assert [row.split()[0] for row in top[:3]] == ["+29.0M", "+28.0M", "+27.0M"]


def test_the_top_list_shortens_to_the_height() -> None:
    console = Console(width=80, height=16, record=True, color_system=None)
    console.print(render(screen_mirror(), Status("tcp://x"), 80, 16, 10, "growth"))
    lines = console.export_text().splitlines()
    assert len(lines) <= 16
    assert any(line.startswith("top ") and "tests by growth" in line for line in lines)


def test_a_test_that_never_finished_shows_no_kept_and_sorts_last_by_it() -> None:
    mirror = screen_mirror()
    crashed = dict(
        record_value(30), nodeid="test_a.py::test_boom", worker="gw1", outcome="crashed", kept=None
    )
    mirror.apply(11, {"t/gw1/30": crashed})
    console = Console(width=100, height=60, record=True, color_system=None)
    console.print(render(mirror, Status("tcp://x"), 100, 60, 31, "kept"))
    lines = console.export_text().splitlines()
    top = lines[lines.index("top 31 tests by kept") + 2 :][:31]
    assert top[-1].split() == ["+30B", "130B", "gw1", "test_a.py::test_boom", "[crashed]"]
