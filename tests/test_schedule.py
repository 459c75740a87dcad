"""--memstream-max-total: xdist's scheduling, with hungry tests handed out by memory."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from cgroups import inside_mounted, memory_cgroup
from hosts import Network, need_root_and_ip, start_socketserver
from runs import NEEDS_XDIST_3_2, MemstreamRun, RunMemstream

MiB = 1 << 20

# The hungry tests wait for each other (a marker file each, a deadline): run side by side
# they overlap for sure; run one at a time, each waits its deadline out alone.
HUNGRY = """
import os, pathlib, time
import pytest

MiB = 1 << 20


def hold(request, name, size, together=1.5):
    data = b"x" * (size * MiB)
    here = request.config.rootpath / "started"
    here.mkdir(exist_ok=True)
    (here / name).touch()
    deadline = time.monotonic() + together
    while len(list(here.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    del data


def test_1_hungry(request):
    hold(request, "a", 400)


def test_2_small():
    pass


def test_3_hungry(request):
    hold(request, "b", 400)


def test_4_small():
    pass


@pytest.mark.parametrize("n", range(8))
def test_5_more(n):
    pass
"""


def spans(run: MemstreamRun, word: str) -> list[tuple[float, float]]:
    return sorted((t["started"], t["finished"]) for t in run.report["tests"] if word in t["nodeid"])


def overlap(intervals: list[tuple[float, float]]) -> bool:
    return any(a[1] > b[0] for a, b in itertools.pairwise(intervals))


def fresh(pytester: pytest.Pytester) -> None:
    fresh_markers(pytester.path / "started")


def fresh_markers(started: Path) -> None:
    if started.exists():
        for marker in started.iterdir():
            marker.unlink()


@pytest.mark.parametrize("dist", ["load", pytest.param("worksteal", marks=NEEDS_XDIST_3_2)])
def test_two_hungry_tests_never_overlap_when_the_budget_fits_one(
    pytester: pytest.Pytester, run_memstream: RunMemstream, dist: str
) -> None:
    pytester.makepyfile(test_mem=HUNGRY)
    # Without a budget they run side by side (and the run learns what each takes).
    control = run_memstream("-n", "2", f"--dist={dist}", "--memstream-max-total=100G")
    assert control.result.ret == pytest.ExitCode.OK, control.output
    assert overlap(spans(control, "hungry"))
    fresh(pytester)
    # 1 GiB for two workers: room for one 400 MiB test beside them, not for two.
    run = run_memstream("-n", "2", f"--dist={dist}", "--memstream-max-total=1G", "-v")
    assert run.result.ret == pytest.ExitCode.OK, run.output
    assert len(run.report["tests"]) == 12
    assert not overlap(spans(run, "hungry"))
    run.result.stdout.fnmatch_lines(
        ["memstream: scheduled by memory: budget *M of 1.0G, 2 hungry tests (*); *"]
    )


ALL = ["test_1_hungry", "test_2_small", "test_3_hungry", "test_4_small"] + [
    f"test_5_more[{n}]" for n in range(8)
]

CRASH = HUNGRY.replace(
    """def test_3_hungry(request):
    hold(request, "b", 400)""",
    """def test_3_hungry(request):
    data = b"x" * (400 * MiB)
    if (request.config.rootpath / "crash").exists():
        os._exit(3)""",
)


def test_a_crash_in_a_hungry_test_does_not_stall_the_queue(
    pytester: pytest.Pytester, run_memstream: RunMemstream
) -> None:
    pytester.makepyfile(test_mem=CRASH)
    learning = run_memstream("-n", "2", "--memstream-max-total=100G")
    assert learning.result.ret == pytest.ExitCode.OK, learning.output
    fresh(pytester)
    (pytester.path / "crash").touch()
    run = run_memstream("-n", "2", "--memstream-max-total=1G")
    assert run.result.ret == pytest.ExitCode.TESTS_FAILED
    outcomes = {t["nodeid"].split("::")[1]: t["outcome"] for t in run.report["tests"]}
    assert outcomes.pop("test_3_hungry") == "crashed"
    assert set(outcomes.values()) == {"passed"}
    # A test the dying worker had just finished may have lost its figures with it: the
    # report names it, and every one of the 12 tests is accounted for.
    lost = [nodeid.split("::")[1] for nodeid in run.report["run"]["figures_lost"]]
    assert sorted([*outcomes, *lost]) == sorted(n for n in ALL if n != "test_3_hungry")
    run.result.stdout.re_match_lines(
        [
            r"memstream: 11 tests on \d workers, .*crashed: gw\d, 1 test ran but their figures "
            r"died with their worker \(test_mem.py::test_\w+\)$"
        ]
        if lost
        else [r"memstream: 12 tests on \d workers, .*crashed: gw\d$"]
    )


def test_tests_without_history_run(pytester: pytest.Pytester, run_memstream: RunMemstream) -> None:
    pytester.makepyfile(test_mem=HUNGRY)
    run = run_memstream("-n", "2", "--memstream-max-total=600M")  # nothing learnt yet
    assert run.result.ret == pytest.ExitCode.OK, run.output
    assert len(run.report["tests"]) == 12
    assert overlap(spans(run, "hungry"))  # unknown: not held back


ONLY_HUNGRY = """
import time


def hold(size):
    data = b"x" * (size << 20)
    time.sleep(0.2)
    del data


def test_a():
    hold(300)


def test_b():
    hold(350)


def test_c():
    hold(400)
"""


def test_a_run_where_only_hungry_tests_remain_finishes(
    pytester: pytest.Pytester, run_memstream: RunMemstream
) -> None:
    pytester.makepyfile(test_only=ONLY_HUNGRY)
    assert run_memstream("-n", "2", "--memstream-max-total=100G").result.ret == 0
    # Each one alone is over this budget: the smallest waiting goes, one at a time.
    run = run_memstream("-n", "2", "--memstream-max-total=400M", "-v")
    assert run.result.ret == pytest.ExitCode.OK, run.output
    intervals = spans(run, "test_only")
    assert len(intervals) == 3 and not overlap(intervals)
    run.result.stdout.fnmatch_lines(["memstream: scheduled by memory: *, 3 over the budget*"])


def test_other_dist_modes_say_they_are_not_scheduled_by_memory(
    pytester: pytest.Pytester, run_memstream: RunMemstream
) -> None:
    pytester.makepyfile(test_only=ONLY_HUNGRY)
    run = run_memstream("-n", "2", "--dist=loadfile", "--memstream-max-total=1G")
    assert run.result.ret == pytest.ExitCode.OK
    run.result.stdout.fnmatch_lines(
        ["memstream: warning: --memstream-max-total schedules --dist load and worksteal only*"]
    )


def test_without_xdist_it_says_there_was_nothing_to_schedule(
    pytester: pytest.Pytester, run_memstream: RunMemstream
) -> None:
    # pytest-xdist is not a dependency: where it is not installed, its modules are not
    # there to import (the plugin once failed the run on them).
    pytester.makeconftest(
        "import sys\nsys.modules['xdist'] = sys.modules['xdist.scheduler'] = None\n"
    )
    pytester.makepyfile(test_only=ONLY_HUNGRY)
    run = run_memstream("-p", "no:xdist", "--memstream-max-total=1G")
    assert run.result.ret == pytest.ExitCode.OK, run.output
    assert "INTERNALERROR" not in run.output
    run.result.stdout.fnmatch_lines(
        ["memstream: warning: --memstream-max-total schedules pytest-xdist's workers, and this "
         "run had none (no -n, or no pytest-xdist)*"]
    )  # fmt: skip


def facts(run: MemstreamRun) -> dict[str, Any]:
    run_facts: dict[str, Any] = run.report["run"]
    return run_facts


def test_n_auto_is_capped_by_memory(
    pytester: pytest.Pytester, run_memstream: RunMemstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_mem=HUNGRY)
    monkeypatch.setenv("PYTEST_XDIST_AUTO_NUM_WORKERS", "4")  # xdist's count, as if 4 CPUs
    learning = run_memstream("-n", "auto", "--memstream-max-total=100G")
    assert learning.result.ret == pytest.ExitCode.OK, learning.output
    assert len(learning.report["workers"]) == 4
    fresh(pytester)
    # 1 GiB holds two workers in their usual test (the 90th percentile: 400 MiB) and
    # their own 64 MiB each: -n auto means 2, not 4.
    run = run_memstream("-n", "auto", "--memstream-max-total=1G")
    assert run.result.ret == pytest.ExitCode.OK, run.output
    assert len(run.report["workers"]) == 2


def test_predictions_come_from_the_compared_baseline(
    pytester: pytest.Pytester, run_memstream: RunMemstream
) -> None:
    pytester.makepyfile(test_mem=HUNGRY)
    saving = run_memstream("-n", "2", "--memstream-save=base.json")  # no scheduler: no learning
    assert saving.result.ret == pytest.ExitCode.OK, saving.output
    assert overlap(spans(saving, "hungry"))
    baseline = json.loads((pytester.path / "base.json").read_text())
    assert baseline["tests"]["test_mem.py::test_1_hungry"]["tree_growth"][0] >= 390 * MiB
    fresh(pytester)
    run = run_memstream("-n", "2", "--memstream-compare=base.json", "--memstream-max-total=1G")
    assert run.result.ret == pytest.ExitCode.OK, run.output
    assert not overlap(spans(run, "hungry"))
    run.result.stdout.fnmatch_lines(["memstream: scheduled by memory: *, 2 hungry tests *"])


@NEEDS_XDIST_3_2
def test_x_and_maxschedchunk_end_the_run_as_without_the_scheduler(
    pytester: pytest.Pytester, run_memstream: RunMemstream
) -> None:
    failing = "def test_0_fails():\n    assert False\n\n\ndef test_1_hungry"
    pytester.makepyfile(test_mem=HUNGRY.replace("def test_1_hungry", failing))
    learning = run_memstream("-n", "2", "--memstream-max-total=100G")
    assert learning.result.ret == pytest.ExitCode.TESTS_FAILED, learning.output
    fresh(pytester)
    # xdist sends one test at a time and stops at the first failure, as it does without
    # the scheduler: held tests must not keep it waiting.
    args = ("-n", "2", "-x", "--maxschedchunk=1")
    plain = run_memstream(*args)
    fresh(pytester)
    run = run_memstream(*args, "--memstream-max-total=1G")
    assert run.result.ret == plain.result.ret == pytest.ExitCode.INTERRUPTED, run.output
    assert run.report["run"]["complete"] is False
    assert "test_mem.py::test_0_fails" in {t["nodeid"] for t in run.report["tests"]}
    assert len(run.report["tests"]) < 13
    fresh(pytester)
    # --lf runs the failed test alone, with the scheduler on.
    last_failed = run_memstream("-n", "2", "--lf", "--memstream-max-total=1G")
    assert last_failed.result.ret == pytest.ExitCode.TESTS_FAILED, last_failed.output
    assert [t["nodeid"] for t in last_failed.report["tests"]] == ["test_mem.py::test_0_fails"]


@pytest.mark.slow
def test_a_remote_host_in_a_container_has_a_budget_of_its_own(
    pytester: pytest.Pytester, run_memstream: RunMemstream
) -> None:
    """Two workers on another host (a network namespace) in a container of 1 GiB (a
    memory cgroup), this machine's memory untouched: the budget is the container's, as
    the far side reports it."""
    need_root_and_ip()
    pytester.makepyfile(test_mem=HUNGRY)
    network = Network()
    try:
        with memory_cgroup("remote", 1024 * MiB) as cgroup:
            host = network.add()
            home = pytester.path.parent / f"{host.name}-home"
            tx = [
                f"socket={host.address}:"
                f"{start_socketserver(host, home, prefix=inside_mounted(cgroup))}"
                for _ in range(2)
            ]
            args = [
                "--dist=load",
                f"--rsyncdir={pytester.path}",
                "-W",
                "ignore::DeprecationWarning",
            ]
            for spec in tx:
                args += ["--tx", spec]
            args.append(str(pytester.path))
            # Without a budget, they overlap (and the controller learns what each takes).
            control = run_memstream(*args, "--memstream-max-total=100G")
            assert control.result.ret == pytest.ExitCode.OK, control.output
            assert overlap(spans(control, "hungry"))
            for started in home.rglob("started"):
                fresh_markers(started)
            run = run_memstream(*args, "--memstream-max-total=auto")
            assert run.result.ret == pytest.ExitCode.OK, run.output
            assert not overlap(spans(run, "hungry"))
            assert {w["host"] for w in run.report["workers"]} == {host.hostname}
            run.result.stdout.fnmatch_lines(
                [
                    f"memstream: scheduled by memory: budget *M of *M free on {host.hostname} "
                    f"in cgroup v1 /*{cgroup.name}, 2 hungry tests (*); 1 held back *"
                ]
            )
    finally:
        network.close()
