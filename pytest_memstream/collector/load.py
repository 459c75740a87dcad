"""Reading a saved report back: checked against the schema, older schemas read as the current.

A half-written, foreign or damaged file is one :class:`BadReport` whose message says
what is wrong with it, never a traceback.  Every schema this project ever wrote is read
(docs/versioning.md), in the meaning of the current one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pytest_memstream.collector.report import Report
from pytest_memstream.collector.schema import (
    OUTCOMES,
    SCHEMA,
    SCHEMA_1,
    SCHEMAS_READ,
    CrashedTestEntry,
    EntryError,
    RunEntry,
    ShardEntry,
    WorkerEntry,
    check_entry,
    kind,
)


class BadReport(Exception):
    """The file is not a report this version can read; the message says why."""


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
        for n, shard in enumerate(document["run"].get("shards") or []):
            check_entry(shard, ShardEntry, f'"run".shards[{n}]')
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
    if not all(isinstance(s, list) and len(s) == 2 and all(map(is_number, s)) for s in samples):
        raise BadReport(f"{where}.samples is not a list of [time, rss] pairs")
    limit = test.get("limit")
    if limit is not None and not (
        isinstance(limit.get("size"), int) and isinstance(limit.get("on"), str)
    ):
        raise BadReport(f'{where}.limit is not {{"size": bytes, "on": "growth"|"peak"}}')


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
