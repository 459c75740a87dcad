"""Several reports as one: the shards of a suite that CI split across jobs.

Each shard's file is read as ``memstream report`` reads one (collector/load.py), and the
merged document is a report of the current schema like any other: the summary, the JSON
and HTML files, the Markdown summary and a baseline are made from it as from one run.
Each worker is named after its shard (``shard2/gw0``), the shard labelled by its position
or as the caller says (CI artefacts often share a file name).  A test that ran in more
than one shard stays in each, under its own worker, and the summary lists it
(``repeated_tests`` in report.py).  A file that cannot be read is one shard that says why,
and makes the merged run incomplete; the others merge all the same.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_memstream.collector.load import BadReport, is_number, load_report
from pytest_memstream.collector.report import Report, incomplete_reason
from pytest_memstream.collector.schema import SCHEMA, ShardEntry


@dataclass(frozen=True)
class Shard:
    label: str
    file: str
    #: None when the file could not be read; ``problem`` says why.
    report: Report | None
    problem: str = ""


def default_labels(count: int) -> list[str]:
    return [f"shard{n}" for n in range(1, count + 1)]


def read_shards(paths: Sequence[Path], labels: Sequence[str]) -> list[Shard]:
    """Each file as a shard, labelled in order; a file that cannot be read says why."""
    shards = []
    for path, label in zip(paths, labels, strict=True):
        try:
            shards.append(Shard(label, str(path), load_report(path)))
        except BadReport as exc:
            shards.append(Shard(label, str(path), None, str(exc)))
    return shards


def merge(shards: Sequence[Shard]) -> Report:
    """One report of every shard's workers and tests, its run the shards' runs summed."""
    read = [(s.label, s.report) for s in shards if s.report is not None]
    workers: list[dict[str, Any]] = []
    tests: list[dict[str, Any]] = []
    for label, report in read:
        workers.extend(dict(w, id=f"{label}/{w['id']}") for w in report["workers"])
        tests.extend(dict(t, worker=f"{label}/{t['worker']}") for t in report["tests"])
    # As a run's report orders them: by start; a stable sort keeps each shard's ties.
    tests.sort(key=lambda t: t["started"])
    return {
        "schema": SCHEMA,
        "run": _run(shards, [r["run"] for _, r in read]),
        "workers": workers,
        "tests": tests,
    }


def _run(shards: Sequence[Shard], runs: list[dict[str, Any]]) -> dict[str, Any]:
    entries = [_shard_entry(s) for s in shards]
    stopped = [f"{e['label']}: {e['stopped']}" for e in entries if not e["complete"]]
    started, duration = _span(runs)
    methods = sorted({m for r in runs for m in str(r.get("peak_method") or "").split(",") if m})
    return {
        "started": started,
        "duration": duration,
        "platform": _same(runs, "platform"),
        "python": _same(runs, "python"),
        "pytest": _same(runs, "pytest"),
        "peak_method": ",".join(methods) or None,
        "complete": not stopped,
        "stopped": "; ".join(stopped) or None,
        "not_run": _sum(runs, "not_run"),
        "tests": sum(e["tests"] for e in entries),
        "messages": _sum(runs, "messages"),
        "frames": _sum(runs, "frames"),
        "rejected": _counts(runs, "rejected"),
        "viewers": _viewers(runs),
        "shards": entries,
    }


def _span(runs: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    """When the first shard started, and how long until the last one ended."""
    starts = [r["started"] for r in runs if is_number(r.get("started"))]
    ends = [
        r["started"] + r["duration"]
        for r in runs
        if is_number(r.get("started")) and is_number(r.get("duration"))
    ]
    if not starts:
        return None, None
    return min(starts), (max(ends) - min(starts) if ends else None)


def _sum(entries: list[dict[str, Any]], name: str) -> int:
    return sum(int(e.get(name) or 0) for e in entries)


def _counts(entries: list[dict[str, Any]], name: str) -> dict[str, int]:
    """The entries' maps of reason to count, added up."""
    total: Counter[str] = Counter()
    for e in entries:
        total.update(e.get(name) or {})
    return dict(total)


def _shard_entry(shard: Shard) -> ShardEntry:
    if shard.report is None:
        return {
            "label": shard.label,
            "file": shard.file,
            "tests": 0,
            "complete": False,
            "stopped": f"not read: {shard.problem}",
        }
    run = shard.report["run"]
    complete = bool(run.get("complete", True))
    return {
        "label": shard.label,
        "file": shard.file,
        "tests": int(run.get("tests", len(shard.report["tests"]))),
        "complete": complete,
        "stopped": None if complete else incomplete_reason(run),
    }


def _same(runs: list[dict[str, Any]], name: str) -> str | None:
    """The shards' common value of ``name``, or their different values in order."""
    values = list(dict.fromkeys(str(r[name]) for r in runs if r.get(name) is not None))
    return ", ".join(values) or None


def _viewers(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    seen = [r["viewers"] for r in runs if isinstance(r.get("viewers"), dict)]
    if not seen:
        return None
    return {
        "snapshots": _sum(seen, "snapshots"),
        "rejected": _counts(seen, "rejected"),
        "dropped": _sum(seen, "dropped"),
    }
