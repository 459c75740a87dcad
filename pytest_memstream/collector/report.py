"""The run's report: a JSON document (schema ``pytest-memstream/1``) and its text summary.

The terminal summary is rendered from the same document that ``--memstream-json``
writes, so that a saved report prints exactly what the run printed.
"""

from __future__ import annotations

import heapq
import json
import operator
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_memstream.sizes import format_size

if TYPE_CHECKING:
    from pytest_memstream.collector.state import RunState, TestRecord, WorkerState

SCHEMA = "pytest-memstream/1"
#: The field to sort by, in a report's tests and on a TestRecord alike.
_SORT_FIELD = {"growth": "growth", "peak": "peak_rss", "kept": "kept"}
_SORT_TITLE = {"growth": "memory growth", "peak": "peak RSS", "kept": "memory kept"}

Report = dict[str, Any]


def _test_json(record: TestRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "nodeid": record.nodeid,
        "worker": record.worker,
        "index": record.index,
        "outcome": record.outcome,
        "rss_start": record.rss_start,
        "rss_end": record.rss_end,
        "peak_rss": record.peak_rss,
        "growth": record.growth,
        "kept": record.kept,
        "peak_phase": record.peak_phase,
        "peak_method": record.method,
        "source": record.source,
        "started": record.started,
        "finished": record.finished,
        "phases": {
            name: {"rss_before": f[0], "rss_after": f[1], "peak_rss": f[2], "duration": f[3]}
            for name, f in record.phases.items()
        },
    }
    if record.outcome == "crashed":
        out["samples"] = record.samples
        out["climb_rate"] = record.climb_rate
        if record.limit is not None:
            out["limit"] = {"size": record.limit[0], "on": record.limit[1]}
    return out


def _worker_json(worker: WorkerState, tests: int) -> dict[str, Any]:
    return {
        "id": worker.id,
        "pid": worker.pid,
        "status": worker.status,
        "tests": tests,
        "messages": worker.received,
        "lost": worker.lost,
        "dropped": worker.dropped,
        "recovered": worker.recovered,
        "unrecoverable": worker.unrecoverable,
        "max_rss": worker.max_rss,
        "peak_method": worker.method,
        "crashed_test": worker.crashed or None,
        "error": worker.error or None,
    }


def build_report(
    state: RunState, run: dict[str, Any], top: tuple[str, int] | None = None
) -> Report:
    """The report document for everything ``state`` holds, plus ``run``'s facts.

    With ``top`` = ``(sort, n)`` the document holds only what the terminal summary shows
    of the tests (the top ``n`` by ``sort``, and any crashed test); ``run["tests"]``
    still counts them all.  Building every test's entry costs the controller ~8 µs a
    test at the very end of the run, and creates objects that cost a full collection.
    """
    with state.cond:
        records = sorted(state.tests.values(), key=lambda r: (r.started, r.worker, r.index))
        per_worker: dict[str, int] = {}
        for record in records:
            per_worker[record.worker] = per_worker.get(record.worker, 0) + 1
        workers = [_worker_json(w, per_worker.get(w.id, 0)) for w in state.workers.values()]
        run = dict(
            run,
            tests=len(records),
            messages=state.messages,
            frames=state.frames,
            rejected=dict(state.rejects),
        )
    if top is not None and top[1] > 0:
        key = operator.attrgetter(_SORT_FIELD[top[0]])
        # nlargest is sorted(..., reverse=True)[:n]: ties rank as in the full report.
        shown = {id(r) for r in heapq.nlargest(top[1], records, key=key)}
        records = [r for r in records if id(r) in shown or r.outcome == "crashed"]
    tests = [_test_json(record) for record in records]
    return {"schema": SCHEMA, "run": run, "workers": workers, "tests": tests}


def write_report(report: Report, path: Path) -> None:
    """Write ``report`` to ``path`` atomically: readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # One dumps and one write: json.dump's many small writes are 3x slower.
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(json.dumps(report, separators=(",", ":")) + "\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def top_tests(report: Report, sort: str, top: int) -> list[dict[str, Any]]:
    field = _SORT_FIELD[sort]
    ranked = sorted(report["tests"], key=lambda t: t[field], reverse=True)
    return ranked if top == 0 else ranked[:top]


def summary_title(report: Report, sort: str, top: int) -> str:
    count = report["run"].get("tests", len(report["tests"]))
    shown = count if top == 0 else min(top, count)
    return f"memstream: top {shown} tests by {_SORT_TITLE[sort]}"


def summary_lines(report: Report, sort: str, top: int, verbosity: int = 0) -> list[str]:
    """The body of the terminal summary: the top tests, workers, and a footer line."""
    rows = top_tests(report, sort, top)
    lines = []
    if verbosity < 0:
        for t in rows:
            lines.append(f"{format_size(t['growth'], signed=True):>8} {t['nodeid']}{_mark(t)}")
    else:
        lines.append(f"{'growth':>8}  {'peak':>8}  {'kept':>8}  {'worker':<6}  {'phase':<8}  test")
        for t in rows:
            lines.append(
                f"{format_size(t['growth'], signed=True):>8}  {format_size(t['peak_rss']):>8}  "
                f"{format_size(t['kept'], signed=True):>8}  {t['worker']:<6}  "
                f"{t['peak_phase'] or '?':<8}  {t['nodeid']}{_mark(t)}"
            )
    for t in report["tests"]:
        if t["outcome"] == "crashed":
            lines.append(_crash_line(t))
    if verbosity > 0:
        lines.extend(_worker_line(w) for w in report["workers"])
        rejected = report["run"].get("rejected") or {}
        if rejected:
            detail = ", ".join(f"{n} {reason}" for reason, n in sorted(rejected.items()))
            lines.append(f"memstream: rejected input: {detail}")
    lines.append(footer_line(report))
    return lines


def _mark(test: dict[str, Any]) -> str:
    extra = [] if test["outcome"] == "passed" else [test["outcome"]]
    if test["peak_method"] == "sampled" and test["outcome"] != "crashed":
        extra.append("sampled peak")
    if test["source"] == "fallback":
        extra.append("recovered")
    return f"  [{', '.join(extra)}]" if extra else ""


def _crash_line(test: dict[str, Any]) -> str:
    rate = test.get("climb_rate") or 0.0
    climbing = f", climbing {format_size(rate)}/s" if rate > 0 else ""
    figures = (
        f"last RSS {format_size(test['rss_end'])}, peak {format_size(test['peak_rss'])}{climbing}"
        if test["phases"]
        else "no figures reached the sink"
    )
    samples = test.get("samples") or []
    tail = ""
    if samples:
        tail = "; last samples " + " ".join(format_size(rss) for _, rss in samples[-5:])
    return (
        f"memstream: worker {test['worker']} crashed while running {test['nodeid']} "
        f"(phase {test['peak_phase'] or '?'}, {figures}{tail}){_over_limit(test)}"
    )


def _over_limit(test: dict[str, Any]) -> str:
    limit = test.get("limit")
    if not limit:
        return ""
    figure = test["growth"] if limit["on"] == "growth" else test["peak_rss"]
    if figure <= limit["size"]:
        return f"; within its limit of {format_size(limit['size'])} on {limit['on']}"
    return (
        f"; OVER its limit of {format_size(limit['size'])} on {limit['on']} ({format_size(figure)})"
    )


def _worker_line(w: dict[str, Any]) -> str:
    return (
        f"  {w['id']:<6} pid {w['pid']:<7} {w['status']:<10} {w['tests']} tests, "
        f"{w['messages']} messages, {w['lost']} lost, {w['dropped']} dropped, "
        f"{w['recovered']} recovered, {w['unrecoverable']} unrecoverable, "
        f"max RSS {format_size(w['max_rss'])}"
    )


def footer_line(report: Report) -> str:
    workers = report["workers"]
    run = report["run"]
    parts = [
        f"{run.get('tests', len(report['tests']))} tests on {len(workers)} "
        f"worker{'s' if len(workers) != 1 else ''}",
        f"{run.get('messages', 0):,} messages",
        f"{sum(w['lost'] for w in workers)} lost",
        f"{sum(w['recovered'] for w in workers)} recovered",
    ]
    unrecoverable = sum(w["unrecoverable"] for w in workers)
    if unrecoverable:
        parts.append(f"{unrecoverable} unrecoverable")
    if workers:
        biggest = max(workers, key=lambda w: w["max_rss"])
        parts.append(f"peak worker RSS {format_size(biggest['max_rss'])} ({biggest['id']})")
    crashed = [w["id"] for w in workers if w["status"] == "crashed"]
    if crashed:
        parts.append(f"crashed: {', '.join(crashed)}")
    if not run.get("complete", True):
        parts.append(f"INCOMPLETE run ({run.get('stopped') or 'stopped early'})")
    return "memstream: " + ", ".join(parts)
