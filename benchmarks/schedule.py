"""Part 5: scheduling by memory in a cgroup the OOM killer guards (issue 19's proof).

A cgroup v1 ``memory`` cgroup of 2.5 GiB made for the part (and removed after it), ``-n 4
--dist worksteal``, 400 tests of 20 ms and 8 that each hold 700 MiB for a second, two at
the head of each worker's share of worksteal's first split: without help, four of them
run at once (2.8 GiB) and the OOM killer ends workers.

- plugin off, and ``--memstream`` alone, in the cgroup: workers are killed;
- ``--memstream --memstream-max-total auto`` in the cgroup, with a baseline saved by an
  earlier run outside it: no crash, wall time against the unconstrained ``-n 4`` run
  (outside the cgroup, plugin off) and the one-process run a user would fall back to.

Root and cgroup v1's memory controller are needed; without them the part says so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from benchmarks.common import (
    RunResult,
    Table,
    disable_except,
    median,
    pytest_command,
    run,
    show_command,
    verdict,
)

MiB = 1 << 20
LIMIT = 2560 * MiB
WORKERS = 4
SMALL = 400
HUNGRY_SIZE = 700
#: At most this much slower than the unconstrained run (the issue's bound).
BOUND = 1.3
V1_MEMORY = Path("/sys/fs/cgroup/memory")

SUITE = """
import time
import pytest

SHARE = {share}
# Two hungry tests at the head of each worker's share of worksteal's first split.
HUNGRY = {{w * SHARE + k for w in range({workers}) for k in (0, 1)}}


@pytest.mark.parametrize("i", range({count}))
def test_case(i):
    if i in HUNGRY:
        data = b"x" * ({size} << 20)  # every page touched
        time.sleep(1.0)
        del data
    else:
        time.sleep(0.02)
"""


class Unavailable(Exception):
    """The part cannot run here (it says why)."""


def _own_cgroup() -> Path:
    if os.geteuid() != 0:
        raise Unavailable("needs root, to make a memory cgroup")
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            directory = V1_MEMORY / path.lstrip("/")
            if (directory / "memory.limit_in_bytes").exists():
                return directory
    raise Unavailable("needs cgroup v1's memory controller mounted at /sys/fs/cgroup/memory")


@contextmanager
def memory_cgroup(limit: int) -> Iterator[Path]:
    path = _own_cgroup() / f"memstream-bench-{os.getpid()}"
    path.mkdir()
    try:
        (path / "memory.limit_in_bytes").write_text(str(limit))
        yield path
    finally:
        deadline = time.monotonic() + 30
        while pids := (path / "cgroup.procs").read_text().split():
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes {pids} stay in {path}")
            for pid in pids:
                with suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            time.sleep(0.05)  # a killed process leaves once it is reaped
        path.rmdir()


def _inside(cgroup: Path | None, command: Sequence[str]) -> list[str]:
    if cgroup is None:
        return list(command)
    return ["sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec "$@"', "sh", *command]


def _kills(cgroup: Path) -> int:
    for line in (cgroup / "memory.oom_control").read_text().splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    return 0


def _crashed(result: RunResult) -> int:
    return len(re.findall(r"\[gw\d+\] node down", result.output))


def _outcome_line(result: RunResult) -> str:
    """pytest's last line: how many passed, failed, errors."""
    found = re.findall(r"^=*\s*(\d+ (?:passed|failed|errors?)\b.*?)\s*=*$", result.output, re.M)
    return found[-1] if found else f"exit {result.returncode}"


def run_part(long: bool) -> str:
    table = Table(
        "6. Scheduling by memory: a 2.5 GiB cgroup, -n 4 --dist worksteal",
        ["run", "where", "wall (median)", "OOM kills", "workers lost", "outcome"],
    )
    try:
        _own_cgroup()
    except Unavailable as exc:
        table.notes.append(f"Not run: {exc}.")
        return table.markdown()
    rounds = 5 if long else 3
    root = Path(tempfile.mkdtemp(prefix="memstream-bench-schedule-"))
    try:
        return _measure(root, table, rounds)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _measure(root: Path, table: Table, rounds: int) -> str:
    count = SMALL + 2 * WORKERS
    share = count // WORKERS
    (root / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    suite = SUITE.format(share=share, workers=WORKERS, count=count, size=HUNGRY_SIZE)
    (root / "test_schedule.py").write_text(suite, encoding="utf-8")
    xdist = ["-q", "-n", str(WORKERS), "--dist", "worksteal", "-p", "no:randomly"]
    off = pytest_command([*xdist, *disable_except()])
    plain = pytest_command([*xdist, "--memstream", *disable_except("memstream")])
    report = root / "scheduled.json"
    scheduled = pytest_command(
        [*xdist, "--memstream", "--memstream-max-total", "auto", f"--memstream-json={report}",
         *disable_except("memstream")]
    )  # fmt: skip
    one = pytest_command(["-q", "-p", "no:xdist", "-p", "no:randomly", *disable_except()])
    # The baseline the scheduler predicts from: an earlier run, outside the cgroup.
    saved = run(
        pytest_command([*xdist, "--memstream", "--memstream-save", *disable_except("memstream")]),
        root,
    )
    if saved.returncode != 0:
        raise RuntimeError(f"saving the baseline failed:\n{saved.output[-2000:]}")

    walls: dict[str, list[float]] = {"free": [], "scheduled": []}
    faults: dict[str, tuple[RunResult, int]] = {}
    with memory_cgroup(LIMIT) as cgroup:
        for name, command in (("off", off), ("plain", plain)):
            before = _kills(cgroup)
            result = run(_inside(cgroup, command), root)
            faults[name] = (result, _kills(cgroup) - before)
        last: RunResult | None = None
        kills = 0
        for _ in range(rounds):  # alternating: the machine's noise falls on both
            walls["free"].append(run(off, root).seconds)
            before = _kills(cgroup)
            last = run(_inside(cgroup, scheduled), root)
            kills += _kills(cgroup) - before
            if last.returncode != 0:
                break
            walls["scheduled"].append(last.seconds)
        before = _kills(cgroup)
        alone = run(_inside(cgroup, one), root)
        alone_kills = _kills(cgroup) - before
    assert last is not None
    free = median(walls["free"])
    for name, what in (("off", "plugin off"), ("plain", "`--memstream` alone")):
        result, oom = faults[name]
        table.add(what, "cgroup", f"{result.seconds:.1f} s", oom, _crashed(result),
                  _outcome_line(result))  # fmt: skip
    table.add("plugin off", "no limit", f"{free:.1f} s", 0, 0, "reference")
    ok_run = last.returncode == 0 and kills == 0 and _crashed(last) == 0
    wall = median(walls["scheduled"]) if walls["scheduled"] else float("nan")
    table.add(
        "`--memstream --memstream-max-total auto`",
        "cgroup",
        f"{wall:.1f} s ({wall / free:.2f}×)",
        kills,
        _crashed(last),
        _outcome_line(last),
    )
    table.add("one process (`-p no:xdist`)", "cgroup", f"{alone.seconds:.1f} s", alone_kills,
              "—", _outcome_line(alone))  # fmt: skip
    summary = ""
    if report.exists():
        data = json.loads(report.read_text())
        peak = data["run"].get("peak_total", 0)
        summary = f"Scheduled run's peak total: {peak / MiB:,.0f} MiB of {LIMIT / MiB:,.0f} MiB. "
    scheduler_line = next(
        (line for line in last.output.splitlines() if "scheduled by memory" in line), ""
    )
    faults_ok = all(oom > 0 for _, oom in faults.values())
    table.notes += [
        f"Wall: median of {len(walls['scheduled'])} alternating rounds of the unconstrained "
        f"run and the scheduled one. {summary}",
        f"`{scheduler_line.strip()}`" if scheduler_line else "",
        f"Without the scheduler the OOM killer ends workers: {verdict(faults_ok)}. "
        f"With it, no crash and every test passes: {verdict(ok_run)}; at most {BOUND}× the "
        f"unconstrained run: {verdict(wall <= BOUND * free)}; under the one-process run: "
        f"{verdict(wall < alone.seconds)}.",
        f"Commands (in `{root.name}`, a suite of {SMALL} tests of 20 ms and {2 * WORKERS} of "
        f"{HUNGRY_SIZE} MiB for 1 s): `{show_command(scheduled).replace(str(root), '$TMP')}`; "
        f"the baseline from `python -m pytest {' '.join(xdist)} --memstream --memstream-save`.",
    ]
    return table.markdown()
