"""Baselines: the per-test figures of a test suite's last few runs, to judge a new run by.

A baseline is a small JSON document (schema ``pytest-memstream-baseline/2``) built from
report documents: ``runs`` lists the runs it keeps, oldest first (the last five by
default), and ``tests`` maps each node id to its ``growth``, ``peak_rss``, ``kept`` and
``tree_growth`` (with the processes it started) in each of them, ``null`` in a run that
did not measure it.  A ``/1`` file, which held one run and no ``tree_growth``, is read as
a baseline of that one run, its growth standing for its tree's.

Comparing a report with it gives, per test in both, where its growth stands against the
range of its own history; only a growth that passes the top of that range by more than
twice the range's width (its own noise) and more than a floor counts as an increase:
with one run there is no width, and the floor alone keeps run-to-run jitter quiet
(docs/baselines.md has the figures).  Tests only in one of them are listed as new or
gone, never errors, and a file that lost one test and gained one is taken to have renamed
it (listed as such, never failed on).  Nothing here knows about pytest.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_memstream.collector.files import write_json
from pytest_memstream.counts import counted
from pytest_memstream.sizes import format_size

SCHEMA = "pytest-memstream-baseline/2"
#: The first schema: one run, ``tests`` mapping each node id to plain numbers.
SCHEMA_1 = "pytest-memstream-baseline/1"
SCHEMAS_READ = (SCHEMA_1, SCHEMA)
FIGURES = ("growth", "peak_rss", "kept", "tree_growth")
#: What a /1 baseline holds.
FIGURES_1 = ("growth", "peak_rss", "kept")
#: Runs a baseline keeps unless told otherwise (--memstream-baseline-runs).
DEFAULT_RUNS = 5
#: How far past the top of its range a test must grow, in widths of that range, to count:
#: with five runs a test whose growth is noise (uniform or normal) passes max + 2x its
#: range about once in 400 comparisons; max + 1x would be once in 80, and plain max once
#: in six.
SPREAD_MARGIN = 2
#: New and gone tests named one by one in the comparison, before "and N more".
NAMES_SHOWN = 10
#: Where pytest's cache (``config.cache``, or ``.pytest_cache/v/`` on disk) keeps baselines.
CACHE_KEY = "memstream/baselines/"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")

Baseline = dict[str, Any]


class BaselineError(ValueError):
    """A baseline that is not one (foreign, half-written or of another schema)."""


def is_baseline_path(name: str) -> bool:
    """A baseline named by a path (it has a separator or ends in ``.json``), not a name."""
    return "/" in name or os.sep in name or name.endswith(".json")


def is_test_path(name: str) -> bool:
    """A test file or a test's id, never a baseline: saving one would overwrite a test."""
    return name.endswith(".py") or "::" in name


def is_baseline_name(name: str) -> bool:
    """A name the pytest cache can keep: letters, digits, ``_ . -``, not starting with one of
    the last two."""
    return _NAME.fullmatch(name) is not None


def _measured(report: dict[str, Any]) -> dict[str, list[int]]:
    """Node id -> ``[growth, peak_rss, kept, tree_growth]`` of every test the report
    measured to its end (not one that crashed or was interrupted: it has no ``kept``).

    With ``--dist each`` (or a test in two merged shards) a test runs more than once; its
    largest growth stands for it.
    """
    tests: dict[str, list[int]] = {}
    for test in report["tests"]:
        if test["outcome"] == "crashed" or test["kept"] is None:
            continue
        known = tests.get(test["nodeid"])
        if known is None or test["growth"] > known[0]:
            # (A report of schema /1 has no tree_growth: its growth stands for it.)
            tree = test.get("tree_growth", test["growth"])
            tests[test["nodeid"]] = [*(int(test[name]) for name in FIGURES_1), int(tree)]
    return tests


def with_run(old: Baseline | None, report: dict[str, Any], keep: int) -> Baseline:
    """``old`` (a checked baseline, or None) with ``report`` as its newest run, keeping the
    last ``keep`` runs; a test no kept run measured is dropped."""
    runs = list(old["runs"]) if old else []
    tests: dict[str, dict[str, list[int | None]]] = {}
    for nodeid, figures in (old["tests"] if old else {}).items():
        tests[nodeid] = {name: list(values) for name, values in figures.items()}
    now = _measured(report)
    runs.append({"started": report["run"].get("started"), "tests": len(now)})
    for nodeid, figures in tests.items():
        for n, name in enumerate(FIGURES):
            figures[name].append(now[nodeid][n] if nodeid in now else None)
    for nodeid, values in now.items():
        if nodeid not in tests:
            before: list[int | None] = [None] * (len(runs) - 1)
            tests[nodeid] = {name: [*before, values[n]] for n, name in enumerate(FIGURES)}
    drop = max(0, len(runs) - keep)
    if drop:
        runs = runs[drop:]
        for figures in tests.values():
            for name in FIGURES:
                del figures[name][:drop]
        tests = {n: f for n, f in tests.items() if any(v is not None for v in f["growth"])}
    return {"schema": SCHEMA, "runs": runs, "tests": dict(sorted(tests.items()))}


def check_baseline(raw: Any) -> Baseline:
    """``raw`` as a ``/2`` baseline if it is one of a schema this version reads (a ``/1``
    baseline is one run); BaselineError saying what is wrong if not."""
    if type(raw) is not dict or raw.get("schema") not in SCHEMAS_READ:
        schema = raw.get("schema") if type(raw) is dict else type(raw).__name__
        raise BaselineError(
            f"not a memstream baseline (schema {schema!r:.60}, not one of "
            f"{', '.join(SCHEMAS_READ)})"
        )
    tests = raw.get("tests")
    if type(tests) is not dict:
        raise BaselineError("its 'tests' is not a map of node ids")
    if raw["schema"] == SCHEMA_1:
        return _from_schema_1(raw, tests)
    runs = raw.get("runs")
    if type(runs) is not list or not runs or any(type(r) is not dict for r in runs):
        raise BaselineError("its 'runs' is not a list of runs")
    for nodeid, figures in tests.items():
        if (
            type(figures) is not dict
            or not all(_history(figures.get(f), len(runs)) for f in FIGURES)
            or all(v is None for v in figures["growth"])
        ):
            raise BaselineError(
                f"test {nodeid!r:.200} lacks {', '.join(FIGURES)} as lists of "
                f"{len(runs)} whole numbers or nulls, not all null"
            )
    return raw


def _from_schema_1(raw: dict[str, Any], tests: dict[str, Any]) -> Baseline:
    """A checked ``/1`` baseline as a ``/2`` one of one run (its tree growth is its growth:
    ``/1`` measured the worker alone)."""
    for nodeid, figures in tests.items():
        if type(figures) is not dict or any(type(figures.get(f)) is not int for f in FIGURES_1):
            raise BaselineError(f"test {nodeid!r:.200} lacks whole-number {', '.join(FIGURES_1)}")
    return {
        "schema": SCHEMA,
        "runs": [{"started": raw.get("started"), "tests": len(tests)}],
        "tests": {
            n: {**{f: [figures[f]] for f in FIGURES_1}, "tree_growth": [figures["growth"]]}
            for n, figures in tests.items()
        },
    }


def _history(values: Any, runs: int) -> bool:
    return (
        type(values) is list
        and len(values) == runs
        and all(v is None or type(v) is int for v in values)
    )


def run_count(baseline: Baseline) -> int:
    return len(baseline["runs"])


@dataclass(frozen=True)
class Change:
    """Where a test's growth now stands against the range of its growth in a baseline."""

    nodeid: str
    low: int
    high: int
    after: int

    @property
    def spread(self) -> int:
        return self.high - self.low

    @property
    def delta(self) -> int:
        """How far past its range it is now: above the top, below the bottom, or 0 within."""
        if self.after > self.high:
            return self.after - self.high
        if self.after < self.low:
            return self.after - self.low
        return 0

    @property
    def percent(self) -> float:
        """``delta`` relative to the end of the range it passed; infinite from nothing."""
        bound = self.high if self.delta >= 0 else self.low
        if bound <= 0:
            return math.inf if self.delta > 0 else -math.inf if self.delta < 0 else 0.0
        return 100.0 * self.delta / bound


def _change(nodeid: str, history: list[int | None], after: int) -> Change:
    values = [v for v in history if v is not None]
    return Change(nodeid, min(values), max(values), after)


@dataclass(frozen=True)
class Comparison:
    #: Tests in both, the largest change (either way) first.
    changes: list[Change]
    new: list[str]
    gone: list[str]
    #: A guess, so listed but never failed on: ``Change(new id, ...)`` and the old id,
    #: for each file that lost exactly one test and gained exactly one.
    renamed: list[tuple[str, Change]] = field(default_factory=list)
    #: How many runs the baseline held.
    runs: int = 1

    def increases(self, percent: float, min_size: int) -> list[Change]:
        """Tests that grew past the top of their range by more than ``percent`` percent,
        more than ``min_size`` (the floor) and more than twice the range's width."""
        return [
            c
            for c in self.changes
            if c.delta > max(min_size, SPREAD_MARGIN * c.spread) and c.percent > percent
        ]


def compare(baseline: Baseline, report: dict[str, Any]) -> Comparison:
    """Where the growth of each test in ``report`` stands against ``baseline``'s runs."""
    before: dict[str, dict[str, list[int | None]]] = baseline["tests"]
    now = _measured(report)
    present = {test["nodeid"] for test in report["tests"]}
    changes = [
        _change(nodeid, before[nodeid]["growth"], figures[0])
        for nodeid, figures in now.items()
        if nodeid in before
    ]
    changes.sort(key=lambda c: (-abs(c.delta), c.nodeid))
    new = sorted(nodeid for nodeid in now if nodeid not in before)
    gone = sorted(nodeid for nodeid in before if nodeid not in present)
    renamed = []
    for old_id, new_id in _renames(gone, new):
        renamed.append((old_id, _change(new_id, before[old_id]["growth"], now[new_id][0])))
        gone.remove(old_id)
        new.remove(new_id)
    return Comparison(changes, new, gone, renamed, run_count(baseline))


def _renames(gone: list[str], new: list[str]) -> list[tuple[str, str]]:
    """``(old, new)`` for each file that lost exactly one test and gained exactly one."""

    def by_file(nodeids: list[str]) -> dict[str, list[str]]:
        files: dict[str, list[str]] = {}
        for nodeid in nodeids:
            files.setdefault(nodeid.partition("::")[0], []).append(nodeid)
        return files

    gone_in, new_in = by_file(gone), by_file(new)
    return [
        (gone_in[path][0], new_in[path][0])
        for path in sorted(gone_in.keys() & new_in.keys())
        if len(gone_in[path]) == 1 and len(new_in[path]) == 1
    ]


def range_text(change: Change) -> str:
    """``+1.0M`` for one value, ``+0B..+1.4M`` for a range."""
    low = format_size(change.low, signed=True)
    return low if not change.spread else f"{low}..{format_size(change.high, signed=True)}"


def percent_text(change: Change) -> str:
    if not change.delta:
        return "within" if change.spread else "0%"
    bound = change.high if change.delta > 0 else change.low
    if bound <= 0:
        # No percentage of nothing.  Not "new": that is a test the baseline does not have.
        return "from 0" if bound == 0 else "n/a"
    rounded = round(change.percent)
    return f"{rounded:+d}%" if rounded else "0%"  # never "-0%" or "+0%"


def comparison_title(name: str, runs: int = 1) -> str:
    return f"memstream: growth against baseline {name} ({counted(runs, 'run')})"


def comparison_lines(comparison: Comparison, top: int) -> list[str]:
    """The rows of the comparison (``top`` largest changes, 0 for all), new and gone."""
    rows = comparison.changes if top == 0 else comparison.changes[:top]
    ranges = [range_text(change) for change in rows]
    wide = max([8, *map(len, ranges)])
    lines = [f"{'baseline':>{wide}}  {'now':>8}  {'change':>8}  {'%':>6}  test"]
    for change, text in zip(rows, ranges, strict=True):
        lines.append(
            f"{text:>{wide}}  {format_size(change.after, signed=True):>8}  "
            f"{format_size(change.delta, signed=True):>8}  {percent_text(change):>6}  "
            f"{change.nodeid}"
        )
    lines.append(
        f"memstream: {counted(len(comparison.changes), 'test')} compared, "
        f"{len(comparison.new)} new, {len(comparison.gone)} gone"
        + (f", {len(comparison.renamed)} renamed" if comparison.renamed else "")
    )
    for old_id, change in comparison.renamed[:NAMES_SHOWN]:
        lines.append(
            f"  renamed: {old_id} -> {change.nodeid}: growth "
            f"{range_text(change)} -> {format_size(change.after, signed=True)}"
        )
    if len(comparison.renamed) > NAMES_SHOWN:
        lines.append(f"  ... and {len(comparison.renamed) - NAMES_SHOWN} more renamed")
    for label, names in (("new", comparison.new), ("gone", comparison.gone)):
        for nodeid in names[:NAMES_SHOWN]:
            lines.append(f"  {label}: {nodeid}")
        if len(names) > NAMES_SHOWN:
            lines.append(f"  ... and {len(names) - NAMES_SHOWN} more {label}")
    return lines


def increase_title(count: int, percent: float, min_size: int, name: str) -> str:
    return (
        f"memstream: FAILED: {counted(count, 'test')} grew by more than {percent:g}% and more "
        f"than {format_size(min_size)} against baseline {name}:"
    )


def increase_text(change: Change) -> str:
    return (
        f"{change.nodeid}: growth {range_text(change)} -> "
        f"{format_size(change.after, signed=True)} "
        f"({format_size(change.delta, signed=True)}, {percent_text(change)})"
    )


def increase_lines(offenders: list[Change], percent: float, min_size: int, name: str) -> list[str]:
    """Why ``--memstream-fail-on-increase`` fails the run, one line per test."""
    lines = [increase_title(len(offenders), percent, min_size, name)]
    lines.extend(f"  {increase_text(change)}" for change in offenders)
    return lines


def save_baseline_file(path: Path, report: dict[str, Any], keep: int) -> tuple[int, str]:
    """Add ``report`` to the baseline file at ``path`` (made if missing), keeping ``keep``
    runs; ``(runs it now keeps, a problem to warn of or "")``.  A file there that is not a
    baseline this version reads is replaced by one of this run alone, and said so."""
    old, problem = None, ""
    try:
        if path.exists() and not path.is_file():  # a FIFO would block the read; the write
            raise FileNotFoundError  # refuses it and says so
        old = check_baseline(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:  # BaselineError and bad JSON are ValueErrors
        kind = "" if isinstance(exc, BaselineError) else f"{type(exc).__name__}: "
        problem = f"cannot read baseline {path}: {kind}{exc}; it is saved anew, with this run alone"
    baseline = with_run(old, report, keep)
    write_json(path, baseline)
    return run_count(baseline), problem
