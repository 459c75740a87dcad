"""Part 1b: the plugin's cost in instructions, which a noisy machine cannot blur.

Wall and CPU times on a shared two-core machine move by ±25% from one run of the same
suite to the next (the host lends its cores out), more than the budget.  The number of
instructions a run executes hardly moves: valgrind (cachegrind, no cache simulation)
counts them in every process of the run, off and on, once each.

Valgrind runs the code ~40x slower, and what the plugin does per interval of wall time
(a frame to the sink, a look at the running test) would then fall on ~40x fewer tests
than in a real run.  The interval is therefore scaled by the slowdown measured here, so
that the stream does per test what it does at full speed.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks import suites
from benchmarks.common import (
    RULE,
    RULE_INSTRUCTIONS,
    RuleFigure,
    Table,
    disable_except,
    pytest_command,
    run,
    show_command,
    verdict,
)

BUDGET = RULE_INSTRUCTIONS

WORKERS = 2
#: The plugin's default --memstream-interval, which the valgrind run scales.
INTERVAL = 0.1
_SUMMARY = re.compile(r"^summary: (\d+)$", re.MULTILINE)
_CMD = re.compile(r"^cmd: (.*)$", re.MULTILINE)


@dataclass
class Count:
    controller: int = 0
    workers: int = 0
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return self.controller + self.workers


def _count(out: Path) -> Count:
    """Instructions of the controller and of the xdist workers, from cachegrind's files."""
    count = Count()
    for path in out.glob("cg.*"):
        text = path.read_text(encoding="utf-8", errors="replace")
        summary, cmd = _SUMMARY.search(text), _CMD.search(text)
        if summary is None or cmd is None:
            continue
        if "exec(eval(" in cmd.group(1):  # execnet's bootstrap: an xdist worker
            count.workers += int(summary.group(1))
        elif " -m pytest " in f"{cmd.group(1)} ":
            count.controller += int(summary.group(1))
    return count


def _args(on: bool, interval: float) -> list[str]:
    if on:
        extra = [
            "--memstream",
            f"--memstream-interval={interval:.2f}",
            *disable_except("memstream"),
        ]
    else:
        extra = disable_except()
    return ["-q", "-n", str(WORKERS), *extra]


def _valgrind(valgrind: str, args: list[str], root: Path, out: Path) -> Count:
    command = [
        valgrind,
        "--tool=cachegrind",
        "--cache-sim=no",
        "--trace-children=yes",
        f"--cachegrind-out-file={out}/cg.%p",
        *pytest_command(args),
    ]
    result = run(command, root)
    if result.returncode != 0:
        raise RuntimeError(f"valgrind run failed ({result.returncode}): {result.output[-2000:]}")
    count = _count(out)
    count.seconds = result.seconds
    return count


def run_part(long: bool) -> str:
    table = Table(
        "1b. Overhead in instructions: the same run counted by valgrind, off and on",
        ["process", "plugin off", "`--memstream`", "ratio", "more per test", f"budget ≤ {BUDGET}×"],
    )
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        table.notes.append("Not run: valgrind is not installed.")
        return table.markdown()
    tests = suites.trivial_count()
    with tempfile.TemporaryDirectory(prefix="memstream-bench-insn-") as tmp:
        base = Path(tmp)
        root = suites.write_trivial(base / "trivial")
        # Untimed runs first, so that neither counted run compiles and caches modules;
        # the plain off run also gives the slowdown that scales the interval.
        run(pytest_command(_args(True, INTERVAL)), root)
        plain = run(pytest_command(_args(False, INTERVAL)), root)
        (base / "off").mkdir()
        off = _valgrind(valgrind, _args(False, INTERVAL), root, base / "off")
        slowdown = off.seconds / plain.seconds
        interval = INTERVAL * slowdown
        print(f"  valgrind slowdown {slowdown:.0f}x: interval {interval:.2f} s", file=sys.stderr)
        (base / "on").mkdir()
        on = _valgrind(valgrind, _args(True, interval), root, base / "on")
    for label, a, b in (
        ("controller", off.controller, on.controller),
        (f"{WORKERS} workers", off.workers, on.workers),
        ("all", off.total, on.total),
    ):
        table.add(
            label,
            f"{a / 1e9:.3f} G",
            f"{b / 1e9:.3f} G",
            f"**{b / a:.3f}×**" if label == "all" else f"{b / a:.3f}×",
            f"{(b - a) / tests / 1000:,.0f} k",
            verdict(b / a <= BUDGET) if label == "all" else "",
        )
    RULE.append(
        RuleFigure(
            f"instructions, trivial suite, `-n {WORKERS}`",
            on.total / off.total,
            BUDGET,
            "part 1b, valgrind over every process",
        )
    )
    shown = show_command([valgrind, "--tool=cachegrind", "--cache-sim=no", "--trace-children=yes"])
    table.notes += [
        f"The trivial suite ({tests:,} tests) under `-n {WORKERS}`, one run each, the plugin "
        "off and on; instructions summed over every process of the run (the controller and "
        "its xdist workers, each from start to exit). Unlike the times of part 1, the count "
        "repeats to within a few tenths of a percent from run to run.",
        f"Valgrind ran {slowdown:.0f}× slower than the same run without it, so `--memstream` "
        f"ran with `--memstream-interval={interval:.2f}` (the default {INTERVAL:g} s × "
        f"{slowdown:.0f}): the stream then sends as many frames per test as at full speed.",
        "An instruction is not a unit of time (a system call or a cache miss costs many "
        "cycles and counts one), but on a machine that the run keeps busy, as two workers "
        "and their controller keep two cores, more instructions are more time.",
        f"Commands: `{shown} python -m pytest -q -n {WORKERS} [--memstream "
        "--memstream-interval=…] -p no:…`, in the suite's directory.",
    ]
    return table.markdown()
