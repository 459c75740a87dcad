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
from pytest_memstream.collector.report import SCHEMA, Report, summary_lines, summary_title

EXIT_OK, EXIT_BAD_FILE = 0, 2
#: The first schema; what changed since is in docs/versioning.md.
SCHEMA_1 = "pytest-memstream/1"
SCHEMAS_READ = (SCHEMA_1, SCHEMA)


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
    return report


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


_NUMBER = (int, float)
_RUN_FIELDS: dict[str, tuple[type, ...]] = {
    "started": _NUMBER,
    "duration": _NUMBER,
    "messages": (int,),
    "not_run": (int,),
}
#: What only a crashed test has.
_CRASH_FIELDS: dict[str, tuple[type, ...]] = {
    "climb_rate": (*_NUMBER, type(None)),
    "limit": (dict, type(None)),
}
_WORKER_FIELDS: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "pid": (int, type(None)),
    "status": (str,),
    "tests": (int,),
    "messages": (int,),
    "lost": (int,),
    "dropped": (int,),
    "recovered": (int,),
    "unrecoverable": (int,),
    "max_rss": (int,),
}
_TEST_FIELDS: dict[str, tuple[type, ...]] = {
    "nodeid": (str,),
    "worker": (str,),
    "outcome": (str,),
    "rss_start": (int,),
    "rss_end": (int,),
    "peak_rss": (int,),
    "growth": (int,),
    "kept": (int, type(None)),  # /1: always a number (see _TEST_FIELDS_1)
    "peak_phase": (str, type(None)),
    "peak_method": (str,),
    "source": (str,),
    "started": _NUMBER,
    "finished": _NUMBER,
    "phases": (dict,),
}
_TEST_FIELDS_1 = dict(_TEST_FIELDS, kept=(int,))
_OUTCOMES_1 = ("passed", "failed", "skipped", "error", "crashed")
_OUTCOMES = {SCHEMA_1: _OUTCOMES_1, SCHEMA: (*_OUTCOMES_1, "xfailed", "xpassed")}


def check_report(document: Any) -> None:
    """Raise BadReport unless ``document`` is a report of a schema in SCHEMAS_READ."""
    if not isinstance(document, dict):
        raise BadReport(f"not a pytest-memstream report (the JSON is {_kind(document)})")
    schema = document.get("schema")
    if schema is None:
        raise BadReport('not a pytest-memstream report (no "schema" field)')
    if schema not in SCHEMAS_READ:
        raise BadReport(
            f"schema {schema!r:.80} is not one this version of pytest-memstream reads "
            f"({', '.join(SCHEMAS_READ)})"
        )
    run, workers, tests = document.get("run"), document.get("workers"), document.get("tests")
    if not isinstance(run, dict):
        raise BadReport(f'"run" is {_kind(run)}, expected an object')
    _check_fields(run, _RUN_FIELDS, '"run"', optional=True)
    if not isinstance(run.get("rejected", {}), dict):
        raise BadReport('"run.rejected" is not an object')
    for name, value, fields in (
        ("workers", workers, _WORKER_FIELDS),
        ("tests", tests, _TEST_FIELDS_1 if schema == SCHEMA_1 else _TEST_FIELDS),
    ):
        if not isinstance(value, list):
            raise BadReport(f'"{name}" is {_kind(value)}, expected a list')
        for n, item in enumerate(value):
            where = f'"{name}"[{n}]'
            if not isinstance(item, dict):
                raise BadReport(f"{where} is {_kind(item)}, expected an object")
            _check_fields(item, fields, where)
    assert isinstance(tests, list)
    for n, test in enumerate(tests):
        if test["outcome"] not in _OUTCOMES[schema]:
            raise BadReport(
                f'"tests"[{n}].outcome {test["outcome"]!r:.40} is not an outcome of {schema}'
            )
        samples = test.get("samples", [])
        if not isinstance(samples, list) or not all(
            isinstance(s, list) and len(s) == 2 and all(_is_number(v) for v in s) for s in samples
        ):
            raise BadReport(f'"tests"[{n}].samples is not a list of [time, rss] pairs')
        _check_fields(test, _CRASH_FIELDS, f'"tests"[{n}]', optional=True)
        limit = test.get("limit")
        if limit is not None and not (
            isinstance(limit.get("size"), int) and isinstance(limit.get("on"), str)
        ):
            raise BadReport(f'"tests"[{n}].limit is not {{"size": bytes, "on": "growth"|"peak"}}')


def _check_fields(
    item: dict[str, Any], fields: dict[str, tuple[type, ...]], where: str, optional: bool = False
) -> None:
    for key, types in fields.items():
        if key not in item:
            if optional:
                continue
            raise BadReport(f'{where} has no "{key}"')
        value = item[key]
        if isinstance(value, bool) or not isinstance(value, types):
            raise BadReport(f"{where}.{key} is {_kind(value)}, not what a report holds")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return names.get(type(value), type(value).__name__)
