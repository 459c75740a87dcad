"""The run's report: a JSON document (schema ``pytest-memstream/2``) and its text summary.

docs/versioning.md says when the schema changes, and what each version meant.

The terminal summary is rendered from the same document that ``--memstream-json``
writes, so that a saved report prints exactly what the run printed.
"""

from __future__ import annotations

import heapq
import json
import math
import operator
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_memstream import SORT_FIELDS
from pytest_memstream.collector.files import write_atomically, write_json
from pytest_memstream.collector.schema import (
    SCHEMA,
    ChildrenEntry,
    CrashedTestEntry,
    WorkerEntry,
)
from pytest_memstream.counts import counted
from pytest_memstream.protocol import SAMPLED
from pytest_memstream.sizes import format_size

if TYPE_CHECKING:
    from pytest_memstream.collector.records import TestRecord, WorkerState
    from pytest_memstream.collector.state import RunState

_SORT_TITLE = {
    "growth": "memory growth",
    "peak": "peak RSS",
    "kept": "memory kept",
    "tree": "growth of the process tree",
}

Report = dict[str, Any]
#: Tests a list names one by one before "and N more".
NAMES_SHOWN = 10
#: What a test known only by its id shows (a crashed test that xdist alone reported).
NO_FIGURES = "no figures reached the controller"
_INDEX = operator.attrgetter("index")
_WORKER = operator.attrgetter("worker")
_STARTED = operator.attrgetter("started")


def _test_json(record: TestRecord) -> CrashedTestEntry:
    out: CrashedTestEntry = {
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
        "tree_peak": record.tree_peak,
        "tree_growth": record.tree_growth,
        "tree_method": SAMPLED if record.tree else record.method,
        "children": _children_json(record.tree),
    }
    if record.outcome == "crashed":
        out["samples"] = list(record.samples)
        out["climb_rate"] = record.climb_rate
        if record.limit is not None:
            out["limit"] = {"size": record.limit[0], "on": record.limit[1]}
    return out


def _children_json(tree: dict[str, Any] | None) -> ChildrenEntry:
    if tree is None:
        return {"count": 0, "max_rss": 0, "method": None, "killed": []}
    return {
        "count": tree["count"],
        "max_rss": tree["max_rss"],
        "method": tree["method"] or None,
        "killed": [
            {"pid": pid, "name": name, "signal": signal, "last_rss": rss}
            for pid, name, signal, rss in tree["killed"]
        ],
    }


def _totals_json(state: RunState) -> dict[str, Any]:
    """The run's total memory at its peak, and who held it (under the state's lock)."""
    totals = state.totals
    held = []
    for part in totals.peak_running:
        record = state.tests.get((part.worker, part.index)) if part.index >= 0 else None
        nodeid = part.nodeid or (record.nodeid if record is not None else "")
        held.append({"nodeid": nodeid or None, "worker": part.worker, "rss": part.memory})
    return {
        "peak_total": totals.peak,
        "peak_total_at": totals.peak_at or None,
        "peak_total_tests": sorted(held, key=lambda h: -h["rss"]),
        "available_min": totals.available_min,
        "total_timeline": [[when, memory] for when, memory in totals.timeline],
    }


def _worker_json(worker: WorkerState, tests: int) -> WorkerEntry:
    return {
        "id": worker.id,
        "host": worker.host,
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
        "killed_by": worker.killed_by,
    }


class Snapshot:
    """Everything a report shows, taken from the run's state at one moment.

    The terminal summary and the JSON file are made from the same snapshot, so they
    agree even if a late message reaches the state in between.
    """

    def __init__(self, state: RunState, run: dict[str, Any]) -> None:
        with state.cond:
            records = list(state.tests.values())
            # By start, then worker, then index: three stable sorts on one plain key
            # each are several times faster than one on a tuple.
            records.sort(key=_INDEX)
            records.sort(key=_WORKER)
            records.sort(key=_STARTED)
            per_worker = Counter(map(_WORKER, records))
            workers = [_worker_json(w, per_worker[w.id]) for w in state.workers.values()]
            self.run: dict[str, Any] = dict(
                run,
                tests=len(records),
                messages=state.messages,
                frames=state.frames,
                rejected=dict(state.rejects),
                **_totals_json(state),
            )
        self.workers = workers
        self.records = records

    def document(self, top: tuple[str, int] | None = None) -> Report:
        """The report document; with ``top`` = ``(sort, n)``, only what the terminal
        summary shows of the tests (the top ``n`` by ``sort``, and any crashed test).
        ``run["tests"]`` still counts them all.  Every test's entry costs the controller
        ~8 µs at the very end of the run, and creates objects that cost a full collection.
        """
        records = self.records
        if top is not None and top[1] > 0:
            figure = operator.attrgetter(SORT_FIELDS[top[0]])
            key = figure if top[0] != "kept" else (lambda r: _ranked(figure(r)))
            # nlargest is sorted(..., reverse=True)[:n]: ties rank as in the full report.
            shown = {id(r) for r in heapq.nlargest(top[1], records, key=key)}
            records = [r for r in records if id(r) in shown or r.outcome == "crashed"]
        tests = [_test_json(record) for record in records]
        return {"schema": SCHEMA, "run": self.run, "workers": self.workers, "tests": tests}

    def write_json(self, path: Path) -> None:
        """Write the whole report to ``path`` atomically, as :func:`write_report` would
        write :meth:`document` (byte for byte), a test at a time instead of the whole
        document at once: for a large run that is most of the memory the report costs."""
        dumps = json.JSONEncoder(separators=(",", ":")).encode
        head = dumps({"schema": SCHEMA, "run": self.run, "workers": self.workers, "tests": []})
        assert head.endswith("[]}")

        def chunks() -> Iterator[str]:
            yield head[:-2]
            records = self.records
            for first in range(0, len(records), _CHUNK):
                piece = records[first : first + _CHUNK]
                text = ",".join([dumps(_test_json(record)) for record in piece])
                yield text if first == 0 else "," + text
            yield "]}\n"

        write_atomically(path, chunks())


#: Tests encoded per write: the file is written in pieces of about a megabyte.
_CHUNK = 2000


def write_report(report: Report, path: Path) -> None:
    """Write ``report`` to ``path`` atomically: readers see the old file or the whole new one."""
    write_json(path, report)


def top_tests(report: Report, sort: str, top: int) -> list[dict[str, Any]]:
    field = SORT_FIELDS[sort]
    ranked = sorted(report["tests"], key=lambda t: _ranked(t[field]), reverse=True)
    return ranked if top == 0 else ranked[:top]


def _ranked(figure: int | None) -> float:
    """A figure to sort by; a test without one (``kept`` of an unfinished test) comes last."""
    return -math.inf if figure is None else figure


def figure_text(test: dict[str, Any], name: str, signed: bool = False) -> str:
    """A test's figure as the tables show it: blank where there is none."""
    value = test[name]
    return "" if value is None or not test["phases"] else format_size(value, signed=signed)


def summary_title(report: Report, sort: str, top: int) -> str:
    count = report["run"].get("tests", len(report["tests"]))
    shown = count if top == 0 else min(top, count)
    return f"memstream: top {counted(shown, 'test')} by {_SORT_TITLE[sort]}"


def summary_lines(report: Report, sort: str, top: int, verbosity: int = 0) -> list[str]:
    """The body of the terminal summary: the top tests, workers, and a footer line."""
    lines = _table_lines(report, top_tests(report, sort, top), verbosity)
    killed_by = {w["id"]: w.get("killed_by") for w in report["workers"]}
    for t in report["tests"]:
        if t["outcome"] == "crashed":
            lines.append(_crash_line(t, killed_by.get(t["worker"])))
    lines.extend(shard_lines(report))
    if verbosity > 0:
        lines.extend(_verbose_lines(report))
    peak = run_peak_line(report) if verbosity >= 0 else None
    if peak is not None:
        lines.append(peak)
    lines.append(footer_line(report))
    return lines


def _table_lines(report: Report, rows: list[dict[str, Any]], verbosity: int) -> list[str]:
    """The top tests: their growth alone under ``-q``, else a table with a heading."""
    if verbosity < 0:
        return [f"{figure_text(t, 'growth', signed=True):>8} {t['nodeid']}{_mark(t)}" for t in rows]
    # The tree's column only where a test started processes: most runs have none.
    tree = any(t["children"]["count"] for t in report["tests"])
    tree_head = f"{'tree':>8}  " if tree else ""
    # Wide enough for a merged report's workers (``shard2/gw0``).
    wide = max([6, *(len(t["worker"]) for t in rows)])
    lines = [
        f"{'growth':>8}  {'peak':>8}  {'kept':>8}  {tree_head}{'worker':<{wide}}  "
        f"{'phase':<8}  test"
    ]
    for t in rows:
        tree_cell = f"{figure_text(t, 'tree_growth', signed=True):>8}  " if tree else ""
        lines.append(
            f"{figure_text(t, 'growth', signed=True):>8}  {figure_text(t, 'peak_rss'):>8}  "
            f"{figure_text(t, 'kept', signed=True):>8}  {tree_cell}{t['worker']:<{wide}}  "
            f"{t['peak_phase'] or '?':<8}  {t['nodeid']}{_mark(t)}{_children(t)}"
        )
    return lines


def _verbose_lines(report: Report) -> list[str]:
    """What ``-v`` adds: the workers by host, rejected input and the viewers served."""
    lines = _worker_lines(report["workers"], report["run"].get("host") or "")
    rejected = report["run"].get("rejected") or {}
    if rejected:
        detail = ", ".join(f"{n} {reason}" for reason, n in sorted(rejected.items()))
        lines.append(f"memstream: rejected input: {detail}")
    viewers = report["run"].get("viewers") or {}
    if viewers.get("snapshots") or viewers.get("rejected") or viewers.get("dropped"):
        refused = sum(viewers["rejected"].values())
        lines.append(
            f"memstream: viewers: {counted(viewers['snapshots'], 'snapshot')} served, "
            f"{refused} requests refused, {viewers['dropped']} messages dropped"
        )
    return lines


def shard_lines(report: Report) -> list[str]:
    """A merged report's shards, one line each, and the tests that ran in more than one."""
    shards = report["run"].get("shards")
    if not shards:
        return []
    lines = [f"memstream: merged {counted(len(shards), 'shard')}:"]
    label_width = max(len(s["label"]) for s in shards)
    for s in shards:
        state = "" if s["complete"] else f"  [{s['stopped']}]"
        lines.append(
            f"  {s['label']:<{label_width}}  {counted(s['tests'], 'test'):>11}  {s['file']}{state}"
        )
    repeated = repeated_tests(report)
    if repeated:
        lines.append(
            f"memstream: {counted(len(repeated), 'test')} ran in more than one shard "
            "(each is listed under its own worker):"
        )
        for nodeid, labels in list(repeated.items())[:NAMES_SHOWN]:
            lines.append(f"  {nodeid} ({', '.join(labels)})")
        if len(repeated) > NAMES_SHOWN:
            lines.append(f"  ... and {len(repeated) - NAMES_SHOWN} more")
    return lines


def repeated_tests(report: Report) -> dict[str, list[str]]:
    """Node id -> the labels of the shards it ran in, for each test of a merged report
    that ran in more than one (a test on several workers of one shard is ``--dist each``)."""
    shards = report["run"].get("shards") or []
    # The longest label first: a label may itself hold a "/" (``linux/shard1``).
    labels = sorted((s["label"] for s in shards), key=len, reverse=True)
    found: dict[str, list[str]] = {}
    for t in report["tests"]:
        label = next((x for x in labels if t["worker"].startswith(x + "/")), None)
        if label is not None:
            where = found.setdefault(t["nodeid"], [])
            if label not in where:
                where.append(label)
    return {nodeid: where for nodeid, where in sorted(found.items()) if len(where) > 1}


def _children(test: dict[str, Any]) -> str:
    """``  (2 children, 300.2M)``: how many processes, and the biggest one's peak."""
    children = test["children"]
    if not children["count"]:
        return ""
    biggest = f", {format_size(children['max_rss'])}" if children["max_rss"] else ""
    killed = children["killed"]
    died = "; " + ", ".join(
        f"{k['name']} {k['pid']} killed by {_signal(k['signal'])}" for k in killed
    )
    return f"  ({counted(children['count'], 'child', 'children')}{biggest}{died if killed else ''})"


def _signal(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _mark(test: dict[str, Any]) -> str:
    extra = [] if test["outcome"] == "passed" else [test["outcome"]]
    if test["peak_method"] == "sampled" and test["outcome"] != "crashed":
        extra.append("sampled peak")
    if test["source"] == "fallback":
        extra.append("recovered")
    if not test["phases"]:
        extra.append(NO_FIGURES)
    return f"  [{', '.join(extra)}]" if extra else ""


def _crash_line(test: dict[str, Any], killed_by: str | None = None) -> str:
    rate = test.get("climb_rate") or 0.0
    climbing = f", climbing {format_size(rate)}/s" if rate > 0 else ""
    figures = (
        f"last RSS {format_size(test['rss_end'])}, peak {format_size(test['peak_rss'])}{climbing}"
        if test["phases"]
        else NO_FIGURES
    )
    samples = test.get("samples") or []
    tail = ""
    if samples:
        tail = "; last samples " + " ".join(format_size(rss) for _, rss in samples[-5:])
    return (
        f"memstream: worker {test['worker']} {_ended(killed_by)} while running {test['nodeid']} "
        f"(phase {test['peak_phase'] or '?'}, {figures}{tail}){_over_limit(test)}"
    )


def _ended(killed_by: str | None) -> str:
    if killed_by == "oom-killer":
        return "was killed by the OOM killer"
    return f"crashed ({killed_by})" if killed_by else "crashed"


def _over_limit(test: dict[str, Any]) -> str:
    limit = test.get("limit")
    if not limit:
        return ""
    figure = test[{"growth": "growth", "peak": "peak_rss", "tree": "tree_growth"}[limit["on"]]]
    if figure <= limit["size"]:
        return f"; within its limit of {format_size(limit['size'])} on {limit['on']}"
    return (
        f"; OVER its limit of {format_size(limit['size'])} on {limit['on']} ({format_size(figure)})"
    )


def _worker_lines(workers: list[dict[str, Any]], here: str) -> list[str]:
    """A line per worker; by host, each host's under a line naming it, where any worker
    ran on a host other than ``here`` (the controller's)."""
    hosts: dict[str, list[dict[str, Any]]] = {}
    for w in workers:
        hosts.setdefault(w.get("host") or "", []).append(w)
    if set(hosts) <= {here, ""}:
        return [_worker_line(w) for w in workers]
    lines = []
    for host, on_it in sorted(hosts.items()):
        lines.append(f"  on {host or 'an unknown host'}: {counted(len(on_it), 'worker')}")
        lines.extend(_worker_line(w, "  ") for w in on_it)
    return lines


def _worker_line(w: dict[str, Any], indent: str = "") -> str:
    return (
        f"  {indent}{w['id']:<6} pid {w['pid']:<7} {w['status']:<10} "
        f"{counted(w['tests'], 'test')}, "
        f"{counted(w['messages'], 'message')}, {w['lost']} lost, {w['dropped']} dropped, "
        f"{w['recovered']} recovered, {w['unrecoverable']} unrecoverable, "
        f"max RSS {format_size(w['max_rss'])}"
    )


def footer_line(report: Report) -> str:
    workers = report["workers"]
    run = report["run"]
    parts = [
        f"{counted(run.get('tests', len(report['tests'])), 'test')} on "
        f"{counted(len(workers), 'worker')}",
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
    lost = run.get("figures_lost")
    if lost:
        shown = ", ".join(lost[:3]) + (", ..." if len(lost) > 3 else "")
        parts.append(
            f"{counted(len(lost), 'test')} ran but their figures died with their worker ({shown})"
        )
    if not run.get("complete", True):
        parts.append(f"INCOMPLETE run ({incomplete_reason(run)})")
    return "memstream: " + ", ".join(parts)


def run_peak_line(report: Report) -> str | None:
    """``memstream: run peak 3.1G total (4 workers) at 0:42 while test_a (1.2G, gw0) ran;
    limit 8.0G``: the run's total at its highest, as the OOM killer counts."""
    run = report["run"]
    peak = run.get("peak_total")
    if not peak:
        return None
    at = ""
    if run.get("peak_total_at") and run.get("started"):
        seconds = max(0, int(run["peak_total_at"] - run["started"]))
        at = f" at {seconds // 60}:{seconds % 60:02d}"
    held = run.get("peak_total_tests") or []
    tests = [h for h in held if h["nodeid"]]
    workers = counted(len(held), "worker")
    ran = ""
    if tests:
        shown = ", ".join(
            f"{h['nodeid'].rpartition('::')[2] or h['nodeid']} ({format_size(h['rss'])}, "
            f"{h['worker']})"
            for h in tests[:4]
        )
        ran = f" while {shown}{', ...' if len(tests) > 4 else ''} ran"
    limit = f"; limit {format_size(run['limit'])}" if run.get("limit") else ""
    headroom = ""
    if run.get("available_min") is not None:
        headroom = f", least headroom seen {format_size(run['available_min'])}"
    return f"memstream: run peak {format_size(peak)} total ({workers}){at}{ran}{limit}{headroom}"


def incomplete_reason(run: dict[str, Any]) -> str:
    """Why a run is not complete, and how many of its tests never ran."""
    reason = run.get("stopped") or "stopped early"
    not_run = run.get("not_run")
    return f"{reason}; {counted(not_run, 'test')} never ran" if not_run else reason
