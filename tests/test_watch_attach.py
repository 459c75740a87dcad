"""Finding a run to watch: session files, live or left over, and the one credential."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streams import KEYS
from watching import DEADLINE, Lines, Project, Tmux

from pytest_memstream.collector.sink import Sink
from pytest_memstream.session import process_start

WATCH = [sys.executable, "-m", "pytest_memstream.cli", "watch"]


def watch(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "MEMSTREAM_SECRET"}
    return subprocess.run(
        [*WATCH, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**environment, **env},
    )


def session_file(directory: Path, pid: int, **fields: object) -> Path:
    """A session file as a run writes it, for process ``pid``."""
    path = directory / ".pytest_cache" / "d" / "memstream" / f"session-{pid}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {
        "pid": pid,
        "process_start": process_start(pid),
        "started": time.time(),
        "secret": "00" * 32,
        "endpoint": "tcp://127.0.0.1:9",
        "viewers": {"snapshot": "tcp://127.0.0.1:9", "updates": "tcp://127.0.0.1:9"},
        **fields,
    }
    path.write_text(json.dumps(content))
    return path


def test_nothing_running_says_so(tmp_path: Path) -> None:
    done = watch(cwd=tmp_path)
    assert done.returncode == 1
    assert "no running pytest --memstream session found" in done.stderr
    # A session file left by a run that was killed is not a running session...
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    session_file(tmp_path, dead.pid, process_start=12345)
    # ...nor one whose pid now belongs to another process (this one, started later).
    session_file(tmp_path, os.getpid(), process_start=(process_start(os.getpid()) or 0) - 1)
    done = watch("--json", cwd=tmp_path)
    assert done.returncode == 1
    assert "no running pytest --memstream session found" in done.stderr
    assert watch("--list", cwd=tmp_path).returncode == 1


def test_a_run_removes_session_files_that_killed_runs_left(project: Project) -> None:
    project.pytest(start_new_session=True)
    killed = project.session_file()
    assert project.run is not None
    os.killpg(project.run.pid, signal.SIGKILL)
    project.run.wait(DEADLINE)
    assert killed.exists()  # nobody could remove it
    reused = session_file(project.path, os.getpid(), process_start=1)  # a pid reused since
    project.pytest()
    live = project.session_file()
    assert not killed.exists() and not reused.exists()
    assert oct(live.stat().st_mode & 0o777) == "0o600"
    project.open("quick")
    project.open("go")
    code, output, _ = project.finish()
    assert code == 0, output
    assert not live.exists()


def test_two_runs_are_listed_and_picked_by_pid(pytester: pytest.Pytester) -> None:
    first, second = Project(pytester), None
    try:
        first.pytest()
        first.session_file()
        second = Project(pytester, gate="gates2")
        second.pytest()
        second.session_file()
        pids = sorted(p.run.pid for p in (first, second) if p.run is not None)
        listed = watch("--list", cwd=pytester.path)
        assert listed.returncode == 0, listed.stderr
        rows = listed.stdout.splitlines()[1:]
        assert sorted(int(row.split()[0]) for row in rows) == pids
        for pid in pids:
            picked = subprocess.Popen(
                [*WATCH, "--json", "--pid", str(pid)],
                cwd=pytester.path,
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                line = Lines(picked.stdout).wait(lambda line: '"snapshot"' in line)
                assert json.loads(line)["state"]["run"]["pid"] == pid
            finally:
                picked.kill()
                picked.wait(10)
    finally:
        first.cleanup()
        if second is not None:
            second.cleanup()


def test_a_secret_on_the_command_line_is_refused(tmp_path: Path) -> None:
    done = watch("tcp://127.0.0.1:5555", "--secret", "ab" * 32, cwd=tmp_path)
    assert done.returncode == 4
    assert done.stderr.count("\n") == 1
    assert "--secret is refused" in done.stderr and "--session FILE" in done.stderr
    done = watch("nonsense", "--secret", "00", cwd=tmp_path)
    assert done.returncode == 4 and "--secret is refused" in done.stderr
    done = watch("nonsense", cwd=tmp_path, MEMSTREAM_SECRET="00")
    assert done.returncode == 4
    assert done.stderr == (
        "memstream watch: 'nonsense' is not an endpoint: expected tcp://HOST:PORT or ipc://PATH\n"
    )
    done = watch("tcp://127.0.0.1:5555", cwd=tmp_path)
    assert done.returncode == 4 and "MEMSTREAM_SECRET" in done.stderr


def test_a_wrong_secret_is_told(sink: Sink) -> None:
    done = watch(sink.viewer_endpoints["snapshot"], MEMSTREAM_SECRET="ab" * 32)
    assert done.returncode == 1
    assert "refused our key: wrong secret" in done.stderr


def test_secret_from_the_environment(sink: Sink) -> None:
    endpoint = sink.viewer_endpoints["snapshot"]
    viewer = subprocess.Popen(
        [*WATCH, "--json", endpoint],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, MEMSTREAM_SECRET=KEYS.secret.hex()),
    )
    try:
        out = Lines(viewer.stdout)
        line = out.wait(lambda line: '"snapshot"' in line)
        assert json.loads(line)["state"]["run"]["status"] == "running"
        sink.stop()  # the run ends: the viewer hears it and exits
        assert viewer.wait(30) == 0
        out.wait_closed(5)
        assert json.loads(out.lines[-1])["event"] == "finished"
    finally:
        viewer.kill()
        viewer.wait(10)


def test_nothing_answering_is_one_clean_line(tmp_path: Path) -> None:
    # Not a terminal: no screen is drawn, only the error.
    done = watch("tcp://127.0.0.1:9", MEMSTREAM_SECRET="ab" * 32)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == "memstream watch: nothing answers at tcp://127.0.0.1:9\n"


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_nothing_answering_on_a_terminal_draws_no_screen() -> None:
    tmux = Tmux("silent")
    command = " ".join(WATCH) + " tcp://127.0.0.1:9; echo EXIT=$?; sleep 60"
    try:
        tmux.start("silent", f"MEMSTREAM_SECRET={'ab' * 32} {command}")
        screen = tmux.wait("silent", lambda s: "EXIT=" in s)
        lines = [line for line in screen.splitlines() if line.strip()]
        assert lines[0] == "memstream watch: nothing answers at tcp://127.0.0.1:9"
        assert lines[1] == "EXIT=1"
    finally:
        tmux.kill()


def test_plain_lines_when_the_output_is_not_a_terminal(project: Project) -> None:
    project.pytest()
    project.session_file()
    viewer = subprocess.Popen(
        WATCH, cwd=project.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out = Lines(viewer.stdout)
        out.wait(lambda line: line.startswith("memstream watch: attached to the run of pid"))
        project.open("quick")
        project.open("go")
        code, output, report = project.finish()
        assert code == 0, output
        assert viewer.wait(30) == 0
        out.wait_closed(5)
    finally:
        viewer.kill()
        viewer.wait(10)
    assert (
        out.lines[-1]
        == "memstream watch: the run finished: 8 tests on 2 workers, 0 lost, 0 recovered"
    )
    printed = {line.split()[-1] for line in out.lines[1:-1]}
    assert printed == {t["nodeid"] for t in report["tests"]}


def test_without_the_cache_a_session_file_is_asked_for(project: Project) -> None:
    path = project.path / "private" / "run.json"
    project.pytest("-p", "no:cacheprovider")
    assert project.output is not None
    project.output.wait(lambda line: "memstream: no session file" in line)
    assert not (project.path / ".pytest_cache").exists()
    project.open("quick")
    project.open("go")
    code, output, _ = project.finish()
    assert code == 0, output
    assert "--memstream-session PATH" in output and "memstream watch --session PATH" in output

    project.close_gates()
    project.pytest("-p", "no:cacheprovider", f"--memstream-session={path}")
    viewer = project.watch("--session", str(path), "--wait")
    viewer.wait_event(lambda event: event["event"] == "snapshot")
    project.open("quick")
    project.open("go")
    code, output, _ = project.finish()
    assert code == 0, output
    assert "memstream: no session file" not in output
    assert viewer.finish() == 0
    assert viewer.events[-1]["event"] == "finished"
    assert not path.exists()  # gone with the run
