"""``--memstream-bind ipc://PATH``: one run per path, nothing else at it ever deleted."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from watching import Project

ONE_TEST = "def test_one():\n    pass\n"


def run(pytester: pytest.Pytester, path: Path | str, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "--memstream", f"--memstream-bind=ipc://{path}", "-p", "no:randomly", *args
    )


@pytest.fixture
def short() -> Iterator[Path]:
    """A directory whose paths fit a unix socket's 107 bytes (pytester's do not)."""
    directory = Path(tempfile.mkdtemp(prefix="ms-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def socket_files(path: Path) -> list[Path]:
    return [p for p in (path, *(path.with_name(path.name + s) for s in ("-snapshot", "-updates")))]


def test_a_path_in_use_by_a_live_run_is_refused_and_that_run_goes_on(
    pytester: pytest.Pytester, project: Project, short: Path
) -> None:
    path = short / "run.sock"
    report = pytester.path / "report.json"
    project.pytest(f"--memstream-bind=ipc://{path}")
    project.session_file()
    viewer = project.watch()
    viewer.wait_event(lambda event: event["event"] == "snapshot")
    inodes = [p.stat().st_ino for p in socket_files(path)]

    second = pytester.runpytest_subprocess(
        "--memstream", f"--memstream-bind=ipc://{path}", f"--memstream-json={report}"
    )
    assert second.ret == pytest.ExitCode.USAGE_ERROR
    second.stderr.fnmatch_lines([f"ERROR: memstream: cannot bind the sink to 'ipc://{path}'*"])
    assert "is in use: another run listens on it" in second.stderr.str()
    assert [p.stat().st_ino for p in socket_files(path)] == inodes  # untouched

    project.open("quick")
    project.open("go")
    code, output, first_report = project.finish()
    assert code == 0, output
    assert viewer.finish() == 0 and viewer.events[-1]["event"] == "finished"
    assert first_report["run"]["complete"]
    assert first_report["run"]["rejected"] == {}  # nobody knocked at its door
    assert all(w["lost"] == 0 and w["status"] == "complete" for w in first_report["workers"])
    assert not any(p.exists() for p in socket_files(path))  # removed at the end


@pytest.mark.parametrize("which", ["", "-snapshot"])
def test_a_file_at_the_path_is_refused_and_never_deleted(
    pytester: pytest.Pytester, which: str, short: Path
) -> None:
    pytester.makepyfile(ONE_TEST)
    path = short / "run.sock"
    precious = path.with_name(path.name + which)
    precious.write_text("keep me")
    result = run(pytester, path)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"{precious} exists and is not a socket: it is left alone" in result.stderr.str()
    assert precious.read_text() == "keep me"
    assert [p for p in socket_files(path) if p.exists()] == [precious]  # nothing left behind


def test_a_socket_file_nobody_listens_on_is_taken_over(
    pytester: pytest.Pytester, short: Path
) -> None:
    pytester.makepyfile(ONE_TEST)
    path = short / "run.sock"
    for stale in socket_files(path):  # as a run killed with SIGKILL leaves them
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(stale))
        sock.close()
    result = run(pytester, path)
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()
    result.stdout.fnmatch_lines([f"memstream: sink ipc://{path}"])
    assert not any(p.exists() for p in socket_files(path))


def test_a_socket_file_replaced_during_the_run_is_not_removed(
    pytester: pytest.Pytester, short: Path
) -> None:
    path = short / "run.sock"
    pytester.makepyfile(
        f"""
        import os

        def test_replace_the_socket_file():
            os.unlink({str(path)!r})
            with open({str(path)!r}, "w") as file:
                file.write("someone else's")
        """
    )
    result = run(pytester, path)
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()
    assert path.read_text() == "someone else's"


def test_a_path_too_long_for_a_unix_socket_says_so(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(ONE_TEST)
    # Long enough for the sink, too long for "<path>-snapshot" (sockaddr_un holds 107).
    path = pytester.path / "s"
    path = path.with_name("s" * (100 - len(str(path)) + 1))
    assert len(str(path)) == 100
    result = run(pytester, path)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            f"ERROR: memstream: cannot bind the sink to 'ipc://{path}' (with the viewers' "
            "-snapshot and -updates): the path * is 109 bytes; a unix socket's holds 107"
        ]
    )
    assert not any(p.exists() for p in socket_files(path))


def test_an_abstract_socket_needs_no_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(ONE_TEST)
    name = f"@memstream-test-{os.getpid()}"
    result = run(pytester, name, "-n", "2")
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()
    result.stdout.fnmatch_lines([f"memstream: sink ipc://{name}", "*1 passed*"])
