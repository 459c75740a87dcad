"""What ``memstream watch`` draws: workers, the top tests, crashes and totals, with rich.

Everything here is a pure function of the viewer's ``Mirror`` and a few figures the
watcher keeps (messages per second, notices), so that it can be drawn at any size.  It
fits the width it is given: the test id column takes what is left and is cut with an
ellipsis; the sparkline narrows on small terminals; the top list shortens to the height.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from pytest_memstream import SORT_FIELDS
from pytest_memstream.cli.client import Mirror
from pytest_memstream.counts import counted
from pytest_memstream.sizes import format_size

SPARK_CHARS = "▁▂▃▄▅▆▇█"


@dataclass
class Status:
    """What the watcher knows beyond the mirror."""

    endpoint: str
    rate: float = 0.0
    notice: str = ""
    stay: bool = False
    finished: bool = False
    lost: str = ""
    resyncs: int = 0


def sparkline(values: list[int], width: int) -> str:
    """``values`` (oldest first) as block characters, the last ``width`` of them."""
    values = values[-width:] if width > 0 else []
    if not values:
        return ""
    low, high = min(values), max(values)
    if high == low:
        return SPARK_CHARS[0] * len(values)
    scale = (len(SPARK_CHARS) - 1) / (high - low)
    return "".join(SPARK_CHARS[round((v - low) * scale)] for v in values)


def _elapsed(seconds: float) -> str:
    seconds = max(0, int(seconds))
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def header(mirror: Mirror, status: Status) -> Text:
    totals = mirror.totals()
    run = mirror.run
    if status.lost:
        state = Text("connection lost", style="bold red")
    elif mirror.finished:
        state = Text("finished", style="bold green")
    else:
        state = Text("running", style="bold")
    started = run.get("started")
    elapsed = _elapsed(time.time() - started) if started and not mirror.finished else ""
    text = Text("memstream ", style="bold", no_wrap=True, overflow="ellipsis")
    text.append_text(state)
    if elapsed:
        text.append(f" {elapsed}")
    # The least useful last: a narrow terminal cuts the line short rather than wrap it.
    text.append(f" · {counted(totals['tests'], 'test')} done")
    if run.get("total"):
        # What the OOM killer counts: every worker's tree, and what is left.
        text.append(f" · total {format_size(run['total'])}")
        headroom = run.get("headroom")
        if headroom is not None:
            low = run.get("limit") and headroom < run["limit"] // 10
            text.append(f", {format_size(headroom)} free", style="bold red" if low else "")
    text.append(f" · {status.rate:,.0f} msg/s")
    text.append(f" · {totals['lost']} lost", style="red" if totals["lost"] else "")
    text.append(f" · {totals['messages']:,} msgs · pid {run.get('pid', '?')}")
    return text


def shorten(nodeid: str, room: int) -> str:
    """``nodeid`` in ``room`` characters, keeping its end: the test's name matters most."""
    if len(nodeid) <= room:
        return nodeid
    return "…" + nodeid[len(nodeid) - max(room, 2) + 1 :]


def workers_table(mirror: Mirror, width: int) -> Table:
    workers = sorted(mirror.workers().items(), key=lambda kv: _natural(kv[0]))
    # The tree's column only while some test runs child processes.
    tree = any((w["running"] or {}).get("tree") is not None for _, w in workers)
    spark_width = 8 if width < 100 else 16
    room = width - 38 - spark_width - (9 if tree else 0)  # what is left to the test id
    table = Table(box=None, expand=True, padding=(0, 1), pad_edge=False, header_style="bold")
    table.add_column("worker", no_wrap=True, min_width=6)
    table.add_column("phase", no_wrap=True, min_width=8)
    table.add_column("RSS", justify="right", no_wrap=True, min_width=6)
    table.add_column("growth", justify="right", no_wrap=True, min_width=7)
    if tree:
        table.add_column("tree", justify="right", no_wrap=True, min_width=8)
    table.add_column("recent", no_wrap=True, min_width=spark_width, max_width=spark_width)
    table.add_column("test", no_wrap=True, overflow="ellipsis", ratio=1)
    for worker_id, worker in workers:
        running = worker["running"]
        if running is not None:
            growth = running["rss"] - running["rss_start"]
            cells: list[Any] = [
                worker_id,
                running["phase"],
                format_size(running["rss"]),
                Text(format_size(growth, signed=True), style="yellow" if growth > 0 else ""),
            ]
            if tree:
                total = running.get("tree")
                cells.append("" if total is None else format_size(total))
            cells += [
                Text(sparkline(running["recent_rss"], spark_width), style="cyan"),
                shorten(running["nodeid"], room),
            ]
            table.add_row(*cells)
        elif worker["status"] == "crashed":
            note = Text(shorten(worker["crashed_test"] or worker["error"], room), style="red")
            table.add_row(
                Text(worker_id, style="bold red"),
                Text("crashed", style="bold red"),
                format_size(worker["max_rss"]),
                *[""] * (3 if tree else 2),
                note,
            )
        else:
            table.add_row(
                worker_id,
                Text(_idle(worker["status"]), style="dim"),
                format_size(worker["max_rss"]) if worker["max_rss"] else "",
                *[""] * (4 if tree else 3),
            )
    return table


def _idle(status: str) -> str:
    return {"running": "idle", "expected": "starting"}.get(status, status)


def _natural(worker_id: str) -> tuple[str, int]:
    digits = worker_id.lstrip("abcdefghijklmnopqrstuvwxyz")
    prefix = worker_id[: len(worker_id) - len(digits)]
    return (prefix, int(digits)) if digits.isdigit() else (worker_id, -1)


def top_tests(mirror: Mirror, sort: str, count: int) -> list[dict[str, Any]]:
    key = SORT_FIELDS[sort]
    # A test that never finished has no ``kept``: last when sorted by it.
    ranked = sorted(
        mirror.tests(), key=lambda t: -math.inf if t[key] is None else t[key], reverse=True
    )
    return ranked[: max(0, count)]


def top_table(mirror: Mirror, sort: str, count: int, width: int) -> Table:
    tests = top_tests(mirror, sort, count)
    tree = any(test["children"] for test in mirror.tests())
    room = width - 36 - (9 if tree else 0)  # what the other columns leave to the test id
    table = Table(box=None, expand=True, padding=(0, 1), pad_edge=False, header_style="bold")
    table.add_column("growth", justify="right", no_wrap=True, min_width=7)
    table.add_column("peak", justify="right", no_wrap=True, min_width=6)
    table.add_column("kept", justify="right", no_wrap=True, min_width=7)
    if tree:
        table.add_column("tree", justify="right", no_wrap=True, min_width=8)
    table.add_column("worker", no_wrap=True, min_width=6)
    table.add_column("test", no_wrap=True, overflow="ellipsis", ratio=1)
    for test in tests:
        outcome = test["outcome"]
        mark = "" if outcome == "passed" else f" [{outcome}]"
        kept = test["kept"]
        cells: list[Any] = [
            format_size(test["growth"], signed=True),
            format_size(test["peak_rss"]),
            "" if kept is None else format_size(kept, signed=True),
        ]
        if tree:
            cells.append(format_size(test["tree_growth"], signed=True))
        cells += [
            test["worker"],
            Text(
                shorten(test["nodeid"], room - len(mark)) + mark,
                style="red" if outcome in ("crashed", "failed") else "",
            ),
        ]
        table.add_row(*cells)
    return table


def crash_lines(mirror: Mirror) -> list[Text]:
    lines = []
    for worker_id, worker in sorted(mirror.workers().items()):
        if worker["status"] == "crashed":
            test = worker["crashed_test"] or "an unknown test"
            error = f": {worker['error']}" if worker["error"] else ""
            lines.append(Text(f"{worker_id} crashed while running {test}{error}", style="red"))
    return lines


def render(
    mirror: Mirror, status: Status, width: int, height: int, top: int, sort: str
) -> RenderableType:
    """The whole screen for a terminal of ``width`` x ``height``."""
    parts: list[RenderableType] = [header(mirror, status)]
    workers = workers_table(mirror, width)
    crashes = crash_lines(mirror)
    footer = _footer(mirror, status)
    # Header, blank, workers header + rows, blank, top title + header, crashes, footer.
    used = 1 + 1 + 1 + len(mirror.workers()) + 1 + 2 + len(crashes) + 1
    rows = min(top, max(1, height - used - 1))
    parts += [Text(""), workers, Text("")]
    parts.append(Text(f"top {counted(rows, 'test')} by {sort}", style="bold underline"))
    parts.append(top_table(mirror, sort, rows, width))
    parts += crashes
    parts.append(footer)
    return Group(*parts)


def _footer(mirror: Mirror, status: Status) -> Text:
    if status.lost:
        return Text(f"lost contact with the run: {status.lost}", style="bold red")
    if status.notice:
        return Text(status.notice, style="yellow")
    if mirror.finished:
        return Text("the run finished" + (" — q quits" if status.stay else ""), style="green")
    return Text("q quits", style="dim")
