"""``memstream report RUN.json``: the terminal summary of a saved run, or its HTML page.

The file is checked before it is used: a half-written, foreign or damaged report is one
clear line naming the file and what is wrong with it (exit status 2), never a traceback.
Every schema this project ever wrote is read (docs/versioning.md), as the current one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pytest_memstream import SORT_KEYS
from pytest_memstream.collector.html import write_html
from pytest_memstream.collector.report import Report, summary_lines, summary_title
from pytest_memstream.collector.schema import (
    OUTCOMES,
    SCHEMA,
    SCHEMA_1,
    SCHEMAS_READ,
    CrashedTestEntry,
    EntryError,
    RunEntry,
    WorkerEntry,
    check_entry,
    kind,
)

EXIT_OK, EXIT_BAD_FILE = 0, 2


class BadReport(Exception):
    """The file is not a report this version can read; the message says why."""


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report",
        help="print the summary of a saved run (--memstream-json), or render its HTML",
        description=(
            "Print the terminal summary of a run saved with --memstream-json, as the run "
            "printed it; with --html, also write its self-contained HTML report."
        ),
    )
    parser.add_argument("path", type=Path, metavar="RUN.json", help="a saved JSON report")
    parser.add_argument(
        "--top", type=_top, default=5, metavar="N", help="rows in the summary, 0 for all (5)"
    )
    parser.add_argument(
        "--sort", choices=SORT_KEYS, default="growth", help="order of the summary (growth)"
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="add a line per worker")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="one short line per test")
    parser.add_argument("--html", type=Path, metavar="PATH", help="write the HTML report to PATH")
    parser.set_defaults(func=main)


def _top(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def main(args: argparse.Namespace) -> int:
    try:
        report = load_report(args.path)
    except BadReport as exc:
        print(f"memstream report: {args.path}: {exc}", file=sys.stderr)
        return EXIT_BAD_FILE
    verbosity = args.verbose - args.quiet
    print(summary_title(report, args.sort, args.top))
    for line in summary_lines(report, args.sort, args.top, verbosity):
        print(line)
    if args.html is not None:
        try:
            write_html(report, args.html, args.sort, args.top)
        except OSError as exc:
            print(f"memstream report: could not write {args.html}: {exc}", file=sys.stderr)
            return EXIT_BAD_FILE
        print(f"memstream: HTML report written to {args.html}")
    return EXIT_OK


def load_report(path: Path) -> Report:
    """The report in ``path``, checked to have the shape the summary and HTML rely on."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadReport(f"cannot read it ({exc.__class__.__name__}: {exc})") from None
    if not text.strip():
        raise BadReport("the file is empty")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        stripped = text.strip()
        if stripped.startswith(("{", "[")) and not stripped.endswith(("}", "]")):
            raise BadReport("the JSON ends early: the file is truncated (half-written?)") from None
        raise BadReport(f"not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    check_report(document)
    report: Report = document
    if report["schema"] == SCHEMA_1:
        _read_as_2(report)
    for test in report["tests"]:
        if "tree_peak" not in test:  # before child processes were measured: none were
            _without_children(test)
    return report


def _without_children(test: dict[str, Any]) -> None:
    """A test's tree fields where its report has none: the worker's own figures."""
    test["tree_peak"], test["tree_growth"] = test["peak_rss"], test["growth"]
    test["tree_method"] = test["peak_method"]
    test["children"] = {"count": 0, "max_rss": 0, "method": None, "killed": []}


def _read_as_2(report: Report) -> None:
    """A ``pytest-memstream/1`` report in the meaning of ``/2``: the ``kept`` of a test that
    never finished its teardown (crashed or interrupted) was a number that meant nothing,
    and a crashed test that only xdist's crash report named said it came from the
    ``fallback``."""
    for test in report["tests"]:
        if test["outcome"] == "crashed" or "teardown" not in test["phases"]:
            test["kept"] = None
        if test["outcome"] == "crashed" and not test["phases"] and test["source"] == "fallback":
            test["source"] = "xdist"
    report["schema"] = SCHEMA


def check_report(document: Any) -> None:
    """Raise BadReport unless ``document`` is a report of a schema in SCHEMAS_READ."""
    if not isinstance(document, dict):
        raise BadReport(f"not a pytest-memstream report (the JSON is {kind(document)})")
    schema = document.get("schema")
    if schema is None:
        raise BadReport('not a pytest-memstream report (no "schema" field)')
    if schema not in SCHEMAS_READ:
        raise BadReport(
            f"schema {schema!r:.80} is not one this version of pytest-memstream reads "
            f"({', '.join(SCHEMAS_READ)})"
        )
    try:
        check_entry(document.get("run"), RunEntry, '"run"')
        for name, declared in (("workers", WorkerEntry), ("tests", CrashedTestEntry)):
            entries = document.get(name)
            if not isinstance(entries, list):
                raise BadReport(f'"{name}" is {kind(entries)}, expected a list')
            for n, entry in enumerate(entries):
                check_entry(entry, declared, f'"{name}"[{n}]')
    except EntryError as exc:
        raise BadReport(str(exc)) from None
    for n, test in enumerate(document["tests"]):
        _check_test(test, f'"tests"[{n}]', schema)


def _check_test(test: dict[str, Any], where: str, schema: str) -> None:
    """What a type cannot say: the outcomes, the samples' shape, a /1 file's kept."""
    if test["outcome"] not in OUTCOMES[schema]:
        raise BadReport(f"{where}.outcome {test['outcome']!r:.40} is not an outcome of {schema}")
    if schema == SCHEMA_1 and test["kept"] is None:
        raise BadReport(f"{where}.kept is null, not what a report holds")
    samples = test.get("samples", [])
    if not all(isinstance(s, list) and len(s) == 2 and all(map(_is_number, s)) for s in samples):
        raise BadReport(f"{where}.samples is not a list of [time, rss] pairs")
    limit = test.get("limit")
    if limit is not None and not (
        isinstance(limit.get("size"), int) and isinstance(limit.get("on"), str)
    ):
        raise BadReport(f'{where}.limit is not {{"size": bytes, "on": "growth"|"peak"}}')


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
