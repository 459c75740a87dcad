"""Part 1c: where the trivial suite's overhead goes, in wall time.

The overhead part says how much slower a run is; this one says which part of the plugin
makes it so.  The same 2,000 trivial tests under ``-n 2`` run in alternating rounds as in
part 1, with the plugin off, on, on with the RSS probe taken out (no system call at a
boundary), and on with nothing at all run per test (the recorder unregistered in each
worker just before its tests: what is left is ZeroMQ, the sink, the threads, the hello
and the bye).  ``benchmarks/knockout_plugin.py`` takes the parts out and notes when each
worker's first test started and its last one ended, so that each run splits into
start-up, the tests, and exit.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import suites
from benchmarks.common import ROOT, Table, disable_except, median, pytest_command, run
from benchmarks.knockout_plugin import KNOCKOUT, TIMELINE


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    args: tuple[str, ...]
    knockout: str = ""


VARIANTS = (
    Variant("off", "plugin off", tuple(disable_except())),
    Variant("on", "`--memstream`", ("--memstream", *disable_except("memstream"))),
    Variant(
        "probe",
        "`--memstream`, no RSS probe",
        ("--memstream", *disable_except("memstream")),
        "probe",
    ),
    Variant(
        "recorder",
        "`--memstream`, nothing per test",
        ("--memstream", *disable_except("memstream")),
        "recorder",
    ),
)


@dataclass
class Split:
    """A run in three parts, in seconds: until the first test, the tests, and after."""

    wall: float
    start: float
    tests: float
    end: float


@dataclass
class Results:
    splits: dict[str, list[Split]] = field(default_factory=dict)
    #: Per round, each variant's figure over the plugin-off run of the same round.
    ratios: dict[str, dict[str, list[float]]] = field(default_factory=dict)


def _run(variant: Variant, root: Path, tmp: Path) -> Split:
    timeline = tmp / f"{variant.name}.jsonl"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env[TIMELINE] = str(timeline)
    env[KNOCKOUT] = variant.knockout
    args = ["-q", "-n", "2", "-p", "benchmarks.knockout_plugin", *variant.args]
    started = time.time()
    result = run(pytest_command(args), root, env)
    if result.returncode != 0:
        raise RuntimeError(f"{variant.name}: exit code {result.returncode}\n{result.output}")
    lines = [json.loads(line) for line in timeline.read_text().splitlines()]
    timeline.unlink()
    workers = [line for line in lines if line["role"] != "main" and line["first"]]
    first = min(line["first"] for line in workers)
    last = max(line["last"] for line in workers)
    return Split(result.seconds, first - started, last - first, started + result.seconds - last)


def measure(root: Path, rounds: int) -> Results:
    results = Results()
    with tempfile.TemporaryDirectory(prefix="memstream-bench-") as tmp:
        _run(VARIANTS[0], root, Path(tmp))  # compiles and caches the suite's modules
        for r in range(rounds):
            variants = list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS))
            splits = {v.name: _run(v, root, Path(tmp)) for v in variants}
            off = splits["off"]
            for name, split in splits.items():
                results.splits.setdefault(name, []).append(split)
                ratios = results.ratios.setdefault(name, {})
                ratios.setdefault("wall", []).append(split.wall / off.wall)
                ratios.setdefault("tests", []).append(split.tests / off.tests)
            ran = ", ".join(f"{name} {split.wall:.2f}s" for name, split in splits.items())
            print(f"  breakdown round {r + 1}/{rounds}: {ran}", file=sys.stderr, flush=True)
    return results


def run_part(long: bool) -> str:
    rounds = 24 if long else 12
    with tempfile.TemporaryDirectory(prefix="memstream-bench-suites-") as tmp:
        root = suites.write_trivial(Path(tmp) / "trivial")
        results = measure(root, rounds)
    return render(results, rounds)


def render(results: Results, rounds: int) -> str:
    count = suites.trivial_count()
    table = Table(
        f"1c. Breakdown: {count:,} trivial tests, `-n 2`, parts of the plugin taken out "
        f"(medians of {rounds} alternating rounds)",
        [
            "variant",
            "wall",
            "wall against off",
            "until the first test",
            "the tests",
            "the tests against off",
            "after the last test",
        ],
    )
    for variant in VARIANTS:
        splits = results.splits[variant.name]
        ratios = results.ratios[variant.name]
        table.add(
            variant.label,
            f"{median([s.wall for s in splits]):.3f} s",
            f"{median(ratios['wall']):.3f}×",
            f"{1000 * median([s.start for s in splits]):.0f} ms",
            f"{1000 * median([s.tests for s in splits]):.0f} ms",
            f"{median(ratios['tests']):.3f}×",
            f"{1000 * median([s.end for s in splits]):.0f} ms",
        )
    table.notes += [
        "The tests run from the first test's start in either worker to the last test's "
        "end; start-up and exit are what comes before and after (pytest's, xdist's and "
        "the plugin's, ZeroMQ's import and the sink's start among them).",
        "*No RSS probe*: every boundary returns a constant instead of reading "
        "`/proc/self/statm` and calling `getrusage` (six system calls a test); all else "
        "runs. *Nothing per test*: the recorder is unregistered in each worker once it "
        "has started streaming, so no hook of the plugin runs for a test.",
        f"Command (in the suite's directory, with `PYTHONPATH={ROOT}`, "
        f"`{TIMELINE}=out.jsonl` and `{KNOCKOUT}=probe|recorder` or empty): "
        "`python -m pytest -q -n 2 -p benchmarks.knockout_plugin --memstream "
        "-p no:memray -p no:monitor`.",
    ]
    return table.markdown()
