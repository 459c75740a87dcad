"""The memory a run may have, read from real cgroups this test makes, and the OOM killer."""

from __future__ import annotations

import json
import sys

import pytest
from cgroups import inside, memory_cgroup

MiB = 1 << 20

PROBE = """
import json
from pytest_memstream.machine import memory_limit

limit = memory_limit()
before = limit.headroom()
data = b"x" * (200 << 20)
print(json.dumps({
    "limit": limit.limit, "source": limit.source, "before": before,
    "after": limit.headroom(), "kills": limit.oom_kills(),
}))
"""


def test_the_limit_is_the_smallest_on_the_way_up(pytester: pytest.Pytester) -> None:
    with (
        memory_cgroup("outer", 1024 * MiB) as outer,
        memory_cgroup("inner", 3072 * MiB, parent=outer) as inner,
    ):
        probe = pytester.makepyfile(probe=PROBE)
        result = pytester.run(*inside(inner, sys.executable, str(probe)))
    assert result.ret == 0, result.stderr.str()
    found = json.loads(result.stdout.lines[-1])
    # The inner cgroup says 3 GiB, its parent 1 GiB: the parent's caps it.
    assert found["limit"] == 1024 * MiB
    assert found["source"].startswith("cgroup v1 /") and found["source"].endswith(outer.name)
    # What the process took shows in the headroom (the working set, not the page cache).
    assert found["before"] - found["after"] >= 190 * MiB
    assert found["kills"] == 0


OOM = """
import pytest

MiB = 1 << 20


def test_hog():
    held = []
    for _ in range(40):
        held.append(b"x" * (50 * MiB))  # 2 GiB in steps, in a cgroup of 600 MiB


@pytest.mark.parametrize("n", range(6))
def test_fine(n):
    pass
"""


def test_a_worker_the_oom_killer_ends_is_said_to_be(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_oom=OOM)
    path = pytester.path / "memstream.json"
    with memory_cgroup("oom", 600 * MiB) as cgroup:
        result = pytester.run(
            *inside(
                cgroup,
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:randomly",
                "-n",
                "2",
                "--memstream",
                f"--memstream-json={path}",
                "--memstream-interval=0.05",
                "--memstream-max-total=auto",
            )
        )
        kills = (cgroup / "memory.oom_control").read_text()
    assert "oom_kill 1" in kills.splitlines(), kills
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    report = json.loads(path.read_text())
    hog = next(t for t in report["tests"] if t["nodeid"].endswith("test_hog"))
    assert hog["outcome"] == "crashed"
    victim = next(w for w in report["workers"] if w["id"] == hog["worker"])
    assert victim["killed_by"] == "oom-killer"
    assert "killed by the OOM killer (cgroup v1 /" in victim["error"]
    assert [t["outcome"] for t in report["tests"]].count("passed") == 6
    assert report["run"]["limit"] == 600 * MiB
    assert report["run"]["limit_source"].endswith(cgroup.name)
    result.stdout.re_match_lines(
        [
            rf"memstream: worker {victim['id']} was killed by the OOM killer while running "
            r"test_oom.py::test_hog \(phase call, last RSS .*\)$",
            r"memstream: run peak [\d.]+M total \(\d workers?\) .*; limit 600.0M, "
            r"least headroom seen [\d.]+M$",
            r"memstream: scheduled by memory: budget [\d.]+M of [\d.]+M free in cgroup v1 /\S+, .*",
        ]
    )
