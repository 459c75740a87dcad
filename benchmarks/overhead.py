"""Part 1: wall time of the same suites with the plugin off, --memstream and the peers.

Each (suite, -n) cell runs its contenders in rounds, every other round in reverse order
(off, memstream, [peers], then [peers], memstream, off, ...), and every ratio is taken
against the "off" run of its own round, so that a noisy neighbour shifts both sides of a
ratio alike; the table shows medians.
"""

from __future__ import annotations

import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import suites
from benchmarks.common import (
    RULE,
    RULE_PAIRS,
    RULE_REAL_WALL,
    RULE_TRIVIAL_WALL,
    RuleFigure,
    RunResult,
    Table,
    disable_except,
    median,
    pytest_command,
    run,
    show_command,
    verdict,
)

#: The wall-time budget of each suite (see common.RULE_*): the trivial suite's is a guard
#: against regressions under ``-n 2``; a real suite's is the cost a user sees.
BUDGETS = {
    ("trivial", 2): RULE_TRIVIAL_WALL,
    ("mixed", 0): RULE_REAL_WALL,
    ("mixed", 2): RULE_REAL_WALL,
    ("numpy", 2): RULE_REAL_WALL,
}
#: Arguments a suite needs besides its directory.
SUITE_ARGS = {"numpy": suites.NUMPY_ARGS}
_SUMMARY = re.compile(r"=*\s*((?:\d+ \w+(?:, )?)+) in [\d.]+s")


@dataclass(frozen=True)
class Contender:
    name: str
    label: str
    #: Arguments besides ``-n``; ``{tmp}`` is a fresh directory of this run.
    args: tuple[str, ...]


CONTENDERS = (
    Contender("off", "plugin off", tuple(disable_except())),
    # Installed but not asked for: what every run pays once pytest-memstream is installed.
    Contender("idle", "installed, no `--memstream`", tuple(disable_except("memstream"))),
    Contender("memstream", "`--memstream`", ("--memstream", *disable_except("memstream"))),
    Contender("memray", "`--memray` (pytest-memray)", ("--memray", *disable_except("memray"))),
    # pytest-monitor is active whenever it is installed; --db keeps its sqlite file
    # out of the suite directory (a fresh file each run).
    Contender("monitor", "pytest-monitor", (*disable_except("monitor"), "--db", "{tmp}/pymon.db")),
)


@dataclass
class Cell:
    suite: str
    workers: int
    times: dict[str, list[float]] = field(default_factory=dict)
    ratios: dict[str, list[float]] = field(default_factory=dict)
    cpu_ratios: dict[str, list[float]] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)


def _outcome(result: RunResult) -> str:
    """pytest's summary counts, e.g. ``228 passed, 3 errors``."""
    found = _SUMMARY.findall(result.output)
    return found[-1] if found else f"exit code {result.returncode}"


def _args(contender: Contender, workers: int, tmp: Path, suite: str = "") -> list[str]:
    args = [arg.replace("{tmp}", str(tmp)) for arg in contender.args]
    return ["-q", "-n", str(workers), *args, *SUITE_ARGS.get(suite, ())]


def measure(
    suite: str,
    root: Path,
    workers: int,
    rounds: int,
    peer_rounds: dict[str, int],
    log: list[str],
) -> Cell:
    """Run the contenders on ``root`` in ``rounds`` rounds; peers in their first rounds only."""
    cell = Cell(suite, workers)
    # One untimed run first: the first run of a fresh suite also compiles and caches its
    # modules, which would count against whichever contender happened to go first.
    with tempfile.TemporaryDirectory(prefix="memstream-bench-") as tmp:
        run(pytest_command(_args(CONTENDERS[0], workers, Path(tmp), suite)), root)
    for r in range(rounds):
        contenders = [c for c in CONTENDERS if r < peer_rounds.get(c.name, rounds)]
        # Every other round runs in reverse, so that off and --memstream do not always
        # run in the same place: a position in the round is worth a few percent on a
        # shared machine, as much as the budget.  (A peer that runs in one round only
        # runs in the first, forward.)
        if r % 2:
            contenders.reverse()
        results: dict[str, RunResult] = {}
        for contender in contenders:
            with tempfile.TemporaryDirectory(prefix="memstream-bench-") as tmp:
                result = run(pytest_command(_args(contender, workers, Path(tmp), suite)), root)
            results[contender.name] = result
            cell.times.setdefault(contender.name, []).append(result.seconds)
            if result.returncode != 0:
                cell.problems[contender.name] = _outcome(result)
        off = results["off"]
        for name, result in results.items():
            if name != "off":
                cell.ratios.setdefault(name, []).append(result.seconds / off.seconds)
                cell.cpu_ratios.setdefault(name, []).append(result.cpu / off.cpu)
        ran = ", ".join(f"{name} {result.seconds:.2f}s" for name, result in results.items())
        log.append(f"  {suite} -n {workers} round {r + 1}/{rounds}: {ran}")
        print(log[-1], file=sys.stderr, flush=True)
    return cell


def commands() -> list[str]:
    """The exact command of each contender, run in the suite's directory."""
    out = []
    for contender in CONTENDERS:
        args = _args(contender, 0, Path("$TMP"))
        args[2] = "{0,2}"
        out.append(f"- {contender.label}: `{show_command(pytest_command(args))}`")
    return out


def run_part(long: bool) -> str:
    rounds = 20 if long else 10
    # The rule wants at least RULE_PAIRS pairs of the trivial suite under -n 2; numpy's
    # suite takes half a minute a run, so fewer pairs unless --long.
    pairs = {
        ("trivial", 0): rounds,
        ("trivial", 2): max(RULE_PAIRS, rounds),
        ("mixed", 0): rounds,
        ("mixed", 2): rounds,
        ("numpy", 2): 16 if long else 8,
    }
    with tempfile.TemporaryDirectory(prefix="memstream-bench-suites-") as tmp:
        base = Path(tmp)
        roots = {
            "trivial": suites.write_trivial(base / "trivial"),
            "mixed": suites.write_mixed(base / "mixed"),
            "numpy": suites.write_numpy(base / "numpy"),
        }
        # The peers cost 10-100x per trivial test: a few rounds are plenty for ratios that
        # large, and the default run leaves out the slowest cells (up to 95 s a run).  The
        # installed-but-off figure is one import's cost: half the rounds pin it down.
        few = 3 if long else 1
        idle = rounds // 2
        peer_rounds = {
            ("trivial", 0): {
                "idle": idle,
                "memray": few if long else 0,
                "monitor": few if long else 0,
            },
            ("trivial", 2): {"idle": idle, "memray": few, "monitor": few},
            ("mixed", 0): {"idle": idle, "memray": few, "monitor": few},
            ("mixed", 2): {"idle": idle, "memray": few, "monitor": few},
            ("numpy", 2): {"idle": 0, "memray": 1 if long else 0, "monitor": 1 if long else 0},
        }
        cells_wanted = list(pairs)
        if not suites.numpy_available():
            cells_wanted.remove(("numpy", 2))
        log: list[str] = []
        cells = [
            measure(
                suite,
                roots[suite],
                workers,
                pairs[suite, workers],
                peer_rounds[suite, workers],
                log,
            )
            for suite, workers in cells_wanted
        ]
    for cell in cells:
        budget = BUDGETS.get((cell.suite, cell.workers))
        if budget is not None and "memstream" not in cell.problems:
            RULE.append(
                RuleFigure(
                    f"wall time, {cell.suite} suite, `-n {cell.workers}`",
                    median(cell.ratios["memstream"]),
                    budget,
                    f"part 1, median of {len(cell.ratios['memstream'])} alternating pairs",
                )
            )
    return render(cells, rounds)


def _fmt_ratio(cell: Cell, name: str) -> str:
    ratios = cell.ratios.get(name)
    if not ratios:
        return "not run (`--long`)"
    pairs = f"{len(ratios)} pair" + ("s" if len(ratios) != 1 else "")
    text = f"{median(ratios):.2f}× ({median(cell.times[name]):.2f} s, {pairs})"
    if name in cell.problems:
        text += f" — error: {cell.problems[name]}"
    return text


def render(cells: list[Cell], rounds: int) -> str:
    table = Table(
        "1. Overhead: wall time against the plugin off (median ratio of alternating pairs)",
        [
            "suite",
            "-n",
            "plugin off",
            "installed, no `--memstream`",
            "`--memstream`",
            "budget",
            "`--memstream` CPU time",
            "`--memray`",
            "pytest-monitor",
        ],
    )
    for cell in cells:
        ratio = median(cell.ratios.get("memstream", []))
        budget = BUDGETS.get((cell.suite, cell.workers))
        if "memstream" in cell.problems:
            status = "**MISS** (run failed)"
        elif budget is None:
            status = "— (no budget)"
        else:
            status = f"≤ {budget}×: {verdict(ratio <= budget)}"
        off = f"{median(cell.times['off']):.2f} s"
        if "off" in cell.problems:
            off += f" — error: {cell.problems['off']}"
        table.add(
            f"{cell.suite} ({_count(cell.suite)})",
            cell.workers,
            off,
            _fmt_ratio(cell, "idle"),
            _fmt_ratio(cell, "memstream"),
            status,
            f"{median(cell.cpu_ratios.get('memstream', [])):.2f}×",
            _fmt_ratio(cell, "memray"),
            _fmt_ratio(cell, "monitor"),
        )
    table.notes += [
        f"Each cell: {rounds} rounds ({RULE_PAIRS} or more for the trivial suite under `-n 2`, "
        "fewer for numpy's unless `--long`); a round runs off, `--memstream` and (where shown) "
        "the peers one after another, every other round in reverse order (a position in the "
        "round is worth a few percent here; the peers, run in the first rounds only, are not "
        "balanced that way), and each ratio divides by the off run of its own round. Times are "
        "whole `python -m pytest` invocations (start-up, collection, run, report), median of "
        "the rounds. The CPU column is the median ratio of user + system time of the whole "
        "process tree (the xdist workers included): less sensitive to neighbours on a shared "
        "machine, but not what the budget is about.",
        "Off means `-p no:memstream -p no:memray -p no:monitor`; each contender disables the "
        "other two the same way, since pytest-monitor measures whenever it is installed. "
        '"Installed, no `--memstream`" is the plugin loaded but not enabled: what every '
        "run pays once pytest-memstream is installed.",
        "The trivial suite is 2,000 `def test_NNNN(): pass` in 20 modules; the mixed suite is "
        f"{suites.mixed_count()} tests: the memory tests of part 2, "
        f"{suites.MIXED_SLEEPERS} tests that sleep {suites.SLEEP * 1000:.0f} ms and "
        f"{suites.MIXED_PLAIN} plain tests; the numpy suite is numpy's own tests of "
        f"{', '.join(suites.NUMPY_PACKAGES)} (`--pyargs`), as installed with numpy "
        "(with hypothesis, which numpy's conftest needs).",
        "An `error:` entry quotes pytest's own summary for a contender whose run did not pass.",
        "The plugins are installed as users get them (compiled bytecode), and "
        "`PYTHONDONTWRITEBYTECODE` is unset, so that pytest caches its assertion-rewritten "
        "copy of each plugin module as it does on a developer's machine; with it set, every "
        "process parses and compiles every plugin module again (15–20 ms for this one).",
        "",
        "Commands (in the suite's directory; `$TMP` is a fresh directory per run):",
        "",
        *commands(),
    ]
    return table.markdown()


def _count(suite: str) -> str:
    if suite == "numpy":
        return "numpy's"
    count = suites.trivial_count() if suite == "trivial" else suites.mixed_count()
    return f"{count:,} tests"
