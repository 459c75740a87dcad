"""The run as a short Markdown summary: for ``$GITHUB_STEP_SUMMARY`` or a merge request.

Rendered from the report document (``collector/report.py``), as the terminal summary is:
the top tests as a GitHub-flavoured table, crashed workers, a merged report's shards, and
the baseline comparison when there is one.  What a test or a worker names comes from
outside (node ids, process names): it is shown in code spans, with ``|`` escaped for the
table and a fence longer than any run of backticks in it, and a control character is
written as a visible escape, never raw.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from pytest_memstream.collector.baseline import (
    Change,
    Comparison,
    increase_text,
    increase_title,
    percent_text,
    range_text,
)
from pytest_memstream.collector.files import write_atomically
from pytest_memstream.collector.report import (
    NAMES_SHOWN,
    Report,
    figure_text,
    footer_line,
    repeated_tests,
    summary_title,
    top_tests,
)
from pytest_memstream.counts import counted
from pytest_memstream.sizes import format_size

#: Punctuation that could start Markdown or HTML syntax in running text (a ">" only could,
#: at the start of a line, where this text never is).
_SPECIAL = re.compile(r"([\\`*_\[\]<|~&#!])")


def render_markdown(
    report: Report,
    sort: str = "growth",
    top: int = 5,
    comparison: Comparison | None = None,
    baseline: str = "",
    offenders: Iterable[Change] = (),
    fail_on: tuple[float, int] | None = None,
) -> str:
    """The summary as Markdown: a heading, the top tests' table, crashes, shards, the
    comparison with ``baseline`` (and which tests failed the run on it), the footer."""
    blocks = [f"### {text(summary_title(report, sort, top))}", _top_table(report, sort, top)]
    blocks.extend(_crashes(report))
    blocks.extend(_shards(report))
    if comparison is not None:
        blocks.extend(_comparison(comparison, baseline, top))
    offenders = list(offenders)
    if offenders and fail_on is not None:
        lines = [f"**{text(increase_title(len(offenders), *fail_on, baseline))}**", ""]
        for c in offenders:
            lines.append(f"- {_code(c.nodeid)}: {text(_after_id(increase_text(c), c))}")
        blocks.append("\n".join(lines))
    blocks.append(text(footer_line(report)))
    return "\n\n".join(block for block in blocks if block) + "\n"


def write_markdown(markdown: str, path: Path) -> None:
    """Write ``markdown`` to ``path`` atomically."""
    write_atomically(path, [markdown])


def _top_table(report: Report, sort: str, top: int) -> str:
    tree = any(t.get("children", {}).get("count") for t in report["tests"])
    head = ["growth", "peak", "kept", *(["tree"] if tree else []), "worker", "phase", "test"]
    lines = [_row(head), _row(["---:"] * (len(head) - 3) + ["---"] * 3)]
    for t in top_tests(report, sort, top):
        figures = [
            figure_text(t, "growth", signed=True),
            figure_text(t, "peak_rss"),
            figure_text(t, "kept", signed=True),
            *([figure_text(t, "tree_growth", signed=True)] if tree else []),
        ]
        note = _note(t)
        test = _code(t["nodeid"], table=True) + (f" {text(note)}" if note else "")
        worker = _code(t["worker"], table=True)
        lines.append(_row([*figures, worker, t["peak_phase"] or "?", test]))
    return "\n".join(lines)


def _note(test: dict[str, object]) -> str:
    """What the terminal's row says after the node id: outcome, method, source, children."""
    extra = [] if test["outcome"] == "passed" else [str(test["outcome"])]
    if test["peak_method"] == "sampled" and test["outcome"] != "crashed":
        extra.append("sampled peak")
    if test["source"] == "fallback":
        extra.append("recovered")
    if not test["phases"]:
        extra.append("no figures")
    children = test.get("children")
    if isinstance(children, dict) and children.get("count"):
        extra.append(f"{counted(children['count'], 'child', 'children')}")
    return f"({', '.join(extra)})" if extra else ""


def _crashes(report: Report) -> list[str]:
    items = []
    for t in report["tests"]:
        if t["outcome"] != "crashed":
            continue
        figures = (
            f"last RSS {format_size(t['rss_end'])}, peak {format_size(t['peak_rss'])}"
            if t["phases"]
            else "no figures reached the controller"
        )
        rate = t.get("climb_rate") or 0.0
        climbing = f", climbing {format_size(rate)}/s" if rate > 0 and t["phases"] else ""
        items.append(
            f"- worker {_code(t['worker'])} crashed while running {_code(t['nodeid'])} "
            f"(phase {text(t['peak_phase'] or '?')}, {figures}{climbing})"
        )
    return ["**Crashed workers**\n\n" + "\n".join(items)] if items else []


def _shards(report: Report) -> list[str]:
    shards = report["run"].get("shards")
    if not shards:
        return []
    items = [
        f"- {_code(s['label'])}: {counted(s['tests'], 'test')} from {_code(s['file'])}"
        + ("" if s["complete"] else f", **incomplete**: {text(s['stopped'] or '')}")
        for s in shards
    ]
    blocks = [f"**{counted(len(shards), 'shard')} merged**\n\n" + "\n".join(items)]
    repeated = repeated_tests(report)
    if repeated:
        named = list(repeated.items())[:NAMES_SHOWN]
        lines = [f"**{counted(len(repeated), 'test')} ran in more than one shard**", ""]
        lines.extend(f"- {_code(n)} ({text(', '.join(labels))})" for n, labels in named)
        if len(repeated) > NAMES_SHOWN:
            lines.append(f"- and {len(repeated) - NAMES_SHOWN} more")
        blocks.append("\n".join(lines))
    return blocks


def _comparison(comparison: Comparison, baseline: str, top: int) -> list[str]:
    title = f"#### Growth against baseline {text(baseline)} ({counted(comparison.runs, 'run')})"
    rows = comparison.changes if top == 0 else comparison.changes[:top]
    lines = [_row(["baseline", "now", "change", "%", "test"]), _row(["---:"] * 4 + ["---"])]
    for c in rows:
        lines.append(
            _row(
                [
                    range_text(c),
                    format_size(c.after, signed=True),
                    format_size(c.delta, signed=True),
                    percent_text(c),
                    _code(c.nodeid, table=True),
                ]
            )
        )
    counts = (
        f"{counted(len(comparison.changes), 'test')} compared, {len(comparison.new)} new, "
        f"{len(comparison.gone)} gone"
        + (f", {len(comparison.renamed)} renamed" if comparison.renamed else "")
    )
    return [title, "\n".join(lines) if rows else "", text(counts)]


def _after_id(line: str, change: Change) -> str:
    """An increase's line without the node id it starts with (shown as code instead)."""
    return line.removeprefix(f"{change.nodeid}: ")


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def text(value: str) -> str:
    """``value`` as running Markdown text: its punctuation shown, not taken as syntax."""
    return _SPECIAL.sub(r"\\\1", _visible(value))


def _code(value: str, table: bool = False) -> str:
    """``value`` as a code span that shows it as it is (in a table cell, its ``|`` too)."""
    value = _visible(value)
    longest = max((len(run) for run in re.findall(r"`+", value)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    span = f"{fence}{pad}{value}{pad}{fence}"
    # GitHub's tables split cells at a bare "|" even inside a code span; "\|" is a "|".
    return span.replace("|", "\\|") if table else span


def _visible(value: str) -> str:
    """``value`` with each control or line-separating character written as an escape."""
    return "".join(
        ch if unicodedata.category(ch) not in ("Cc", "Zl", "Zp") else _escape(ch) for ch in value
    )


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"
