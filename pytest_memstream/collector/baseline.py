"""Baselines: one run's per-test figures, kept to compare a later run against.

A baseline is a small JSON document (schema ``pytest-memstream-baseline/1``) built from a
report document: ``tests`` maps each node id to its ``growth``, ``peak_rss`` and ``kept``.
Comparing a report with it gives, per test in both, the change in growth; tests only in
one of them are listed as new or gone, never errors, and a file that lost one test and
gained one is taken to have renamed it (listed as such, never failed on).  Nothing here
knows about pytest or where a baseline is stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pytest_memstream.counts import counted
from pytest_memstream.sizes import format_size

SCHEMA = "pytest-memstream-baseline/1"
FIGURES = ("growth", "peak_rss", "kept")
#: New and gone tests named one by one in the comparison, before "and N more".
NAMES_SHOWN = 10

Baseline = dict[str, Any]


class BaselineError(ValueError):
    """A baseline that is not one (foreign, half-written or of another schema)."""


def _measured(report: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Node id -> figures of every test the report measured to its end (not one that
    crashed or was interrupted: it has no ``kept``).

    With ``--dist each`` a test runs on every worker; the largest growth stands for it.
    """
    tests: dict[str, dict[str, int]] = {}
    for test in report["tests"]:
        if test["outcome"] == "crashed" or test["kept"] is None:
            continue
        known = tests.get(test["nodeid"])
        if known is None or test["growth"] > known["growth"]:
            tests[test["nodeid"]] = {name: int(test[name]) for name in FIGURES}
    return tests


def baseline_of(report: dict[str, Any]) -> Baseline:
    """The baseline document of a report document."""
    return {
        "schema": SCHEMA,
        "started": report["run"].get("started"),
        "tests": _measured(report),
    }


def check_baseline(raw: Any) -> Baseline:
    """``raw`` if it is a baseline document; BaselineError saying what is wrong if not."""
    if type(raw) is not dict or raw.get("schema") != SCHEMA:
        schema = raw.get("schema") if type(raw) is dict else type(raw).__name__
        raise BaselineError(f"not a memstream baseline (schema {schema!r:.60}, not {SCHEMA!r})")
    tests = raw.get("tests")
    if type(tests) is not dict:
        raise BaselineError("its 'tests' is not a map of node ids")
    for nodeid, figures in tests.items():
        if type(figures) is not dict or any(type(figures.get(f)) is not int for f in FIGURES):
            raise BaselineError(f"test {nodeid!r:.200} lacks whole-number {', '.join(FIGURES)}")
    return raw


@dataclass(frozen=True)
class Change:
    nodeid: str
    before: int
    after: int

    @property
    def delta(self) -> int:
        return self.after - self.before

    @property
    def percent(self) -> float:
        """Change in growth relative to the baseline's; infinite from nothing (or less)."""
        if self.before <= 0:
            return math.inf if self.delta > 0 else -math.inf if self.delta < 0 else 0.0
        return 100.0 * self.delta / self.before


@dataclass(frozen=True)
class Comparison:
    #: Tests in both, the largest change (either way) first.
    changes: list[Change]
    new: list[str]
    gone: list[str]
    #: A guess, so listed but never failed on: ``Change(new id, ...)`` and the old id,
    #: for each file that lost exactly one test and gained exactly one.
    renamed: list[tuple[str, Change]] = field(default_factory=list)

    def increases(self, percent: float, min_size: int) -> list[Change]:
        """Tests that grew by more than ``percent`` percent and more than ``min_size``."""
        return [c for c in self.changes if c.delta > min_size and c.percent > percent]


def compare(baseline: Baseline, report: dict[str, Any]) -> Comparison:
    """How the growth of each test in ``report`` changed since ``baseline``."""
    before: dict[str, dict[str, int]] = baseline["tests"]
    now = _measured(report)
    present = {test["nodeid"] for test in report["tests"]}
    changes = [
        Change(nodeid, before[nodeid]["growth"], figures["growth"])
        for nodeid, figures in now.items()
        if nodeid in before
    ]
    changes.sort(key=lambda c: (-abs(c.delta), c.nodeid))
    new = sorted(nodeid for nodeid in now if nodeid not in before)
    gone = sorted(nodeid for nodeid in before if nodeid not in present)
    renamed = []
    for old_id, new_id in _renames(gone, new):
        renamed.append((old_id, Change(new_id, before[old_id]["growth"], now[new_id]["growth"])))
        gone.remove(old_id)
        new.remove(new_id)
    return Comparison(changes=changes, new=new, gone=gone, renamed=renamed)


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


def _percent(change: Change) -> str:
    if change.before <= 0 and change.delta:
        # No percentage of nothing.  Not "new": that is a test the baseline does not have.
        return "from 0" if change.before == 0 else "n/a"
    rounded = round(change.percent)
    return f"{rounded:+d}%" if rounded else "0%"  # never "-0%" or "+0%"


def comparison_title(name: str) -> str:
    return f"memstream: growth against baseline {name}"


def comparison_lines(comparison: Comparison, top: int) -> list[str]:
    """The rows of the comparison (``top`` largest changes, 0 for all), new and gone."""
    rows = comparison.changes if top == 0 else comparison.changes[:top]
    lines = [f"{'before':>8}  {'now':>8}  {'change':>8}  {'%':>6}  test"]
    for change in rows:
        lines.append(
            f"{format_size(change.before, signed=True):>8}  "
            f"{format_size(change.after, signed=True):>8}  "
            f"{format_size(change.delta, signed=True):>8}  {_percent(change):>6}  "
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
            f"{format_size(change.before, signed=True)} -> "
            f"{format_size(change.after, signed=True)}"
        )
    if len(comparison.renamed) > NAMES_SHOWN:
        lines.append(f"  ... and {len(comparison.renamed) - NAMES_SHOWN} more renamed")
    for label, names in (("new", comparison.new), ("gone", comparison.gone)):
        for nodeid in names[:NAMES_SHOWN]:
            lines.append(f"  {label}: {nodeid}")
        if len(names) > NAMES_SHOWN:
            lines.append(f"  ... and {len(names) - NAMES_SHOWN} more {label}")
    return lines


def increase_lines(offenders: list[Change], percent: float, min_size: int, name: str) -> list[str]:
    """Why ``--memstream-fail-on-increase`` fails the run, one line per test."""
    lines = [
        f"memstream: FAILED: {counted(len(offenders), 'test')} grew "
        f"by more than {percent:g}% and more than {format_size(min_size)} against "
        f"baseline {name}:"
    ]
    for change in offenders:
        lines.append(
            f"  {change.nodeid}: growth {format_size(change.before, signed=True)} -> "
            f"{format_size(change.after, signed=True)} "
            f"({format_size(change.delta, signed=True)}, {_percent(change)})"
        )
    return lines
