"""What scripts/test does to the machine it runs on, it says."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def fake_tools(directory: Path, uid: int) -> Path:
    """A PATH with no tmux, no Chromium, an ``id`` that says ``uid`` and an apt-get that
    only writes down how it was called."""
    directory.mkdir()
    log = directory / "apt-get.log"
    for name, body in (("id", f"echo {uid}"), ("apt-get", f'echo "$@" >> {log}')):
        (directory / name).write_text(f"#!/bin/sh\n{body}\n")
        (directory / name).chmod(0o755)
    return directory


def source(script: str, path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash")
    assert bash is not None
    return subprocess.run(
        [bash, "-c", f"set -euo pipefail; source {SCRIPTS / script}"],
        env={
            "PATH": str(path),
            "HOME": os.environ.get("HOME", "/"),
            "MEMSTREAM_SSHD": str(path / "sshd"),  # none there
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_installing_what_the_tests_need_is_said(tmp_path: Path) -> None:
    path = fake_tools(tmp_path / "bin", uid=0)
    done = source("_tools.sh", path)
    assert done.stderr.splitlines() == [
        "test: installing tmux chromium openssh-server with apt-get for the tests that need them "
        "(MEMSTREAM_NO_INSTALL=1 skips those tests instead)"
    ]
    assert (path / "apt-get.log").read_text().splitlines() == [
        "update -qq",
        "install -y -qq tmux chromium openssh-server",
    ]


@pytest.mark.parametrize(("uid", "env"), [(0, {"MEMSTREAM_NO_INSTALL": "1"}), (1000, {})])
def test_without_installing_the_skipped_tests_are_said(
    tmp_path: Path, uid: int, env: dict[str, str]
) -> None:
    path = fake_tools(tmp_path / "bin", uid)
    done = source("_tools.sh", path, **env)
    assert done.stderr.splitlines() == [
        "test: no tmux chromium openssh-server: the tests that need them are skipped"
    ]
    assert not (path / "apt-get.log").exists()


def test_a_python_pyenv_lacks_is_skipped_and_said(tmp_path: Path) -> None:
    (tmp_path / "versions" / "3.12.1" / "bin").mkdir(parents=True)
    done = source("_smoke.sh", Path(os.environ["PATH"]), PYENV_ROOT=str(tmp_path))
    assert done.stderr.splitlines() == [
        "== smoke on Python 3.10: skipped, pyenv has no Python 3.10 here",
        "== smoke on Python 3.13: skipped, pyenv has no Python 3.13 here",
    ]
