"""The JSON report's contract, declared once: what the writer makes and the reader checks.

Each entry is a TypedDict; :func:`check_entry` checks a decoded entry against the same
declaration (a ``float`` field takes an int too, as JSON does not tell them apart).
docs/versioning.md says what may change without a new schema.
"""

from __future__ import annotations

import types
import typing
from typing import Any, TypedDict, Union

SCHEMA = "pytest-memstream/2"
#: The first schema; what changed since is in docs/versioning.md.
SCHEMA_1 = "pytest-memstream/1"
SCHEMAS_READ = (SCHEMA_1, SCHEMA)
OUTCOMES_1 = ("passed", "failed", "skipped", "error", "crashed")
OUTCOMES = {SCHEMA_1: OUTCOMES_1, SCHEMA: (*OUTCOMES_1, "xfailed", "xpassed")}


class PhaseEntry(TypedDict):
    rss_before: int
    rss_after: int
    peak_rss: int
    duration: float


class LimitEntry(TypedDict):
    size: int
    on: str


class KilledEntry(TypedDict):
    pid: int
    name: str
    signal: int
    last_rss: int


class ChildrenEntry(TypedDict):
    #: Processes the test's tree held during the test (at a reading, or reaped).
    count: int
    #: The largest peak of any one of them, and how it was known.
    max_rss: int
    method: str | None
    #: Children a signal ended during the test.
    killed: list[KilledEntry]


class TreeFields(TypedDict, total=False):
    """A test's process tree (written since child processes are measured)."""

    tree_peak: int
    tree_growth: int
    tree_method: str
    children: ChildrenEntry


class TestEntry(TreeFields):
    nodeid: str
    worker: str
    index: int
    outcome: str
    rss_start: int
    rss_end: int
    peak_rss: int
    growth: int
    #: None for a test that never finished its teardown (crashed or interrupted).
    kept: int | None
    peak_phase: str
    peak_method: str
    #: ``stream``, ``fallback`` (the worker's own copy) or ``xdist`` (no figures).
    source: str
    started: float
    finished: float
    phases: dict[str, PhaseEntry]


class CrashedTestEntry(TestEntry, total=False):
    """A crashed test also has its last ``[time, rss]`` samples, how fast it was
    climbing, and its memory limit if it had one."""

    samples: list[list[float]]
    climb_rate: float
    limit: LimitEntry | None


class WorkerEnd(TypedDict, total=False):
    """What ended a worker that did not finish, where known: ``oom-killer`` (the run's
    cgroup counted a kill), or the signal's name (``SIGKILL``)."""

    killed_by: str | None


class WorkerHost(TypedDict, total=False):
    """The host a worker ran on (written since workers on other hosts stream live)."""

    host: str


class WorkerEntry(WorkerEnd, WorkerHost):
    id: str
    pid: int
    status: str
    tests: int
    messages: int
    lost: int
    dropped: int
    recovered: int
    unrecoverable: int
    max_rss: int
    peak_method: str
    crashed_test: str | None
    error: str | None


class ViewersEntry(TypedDict):
    #: Snapshots served; requests refused, by reason; updates or replies a viewer's full
    #: queue (or its going away) cost.
    snapshots: int
    rejected: dict[str, int]
    dropped: int


class HeldEntry(TypedDict):
    nodeid: str | None
    worker: str
    rss: int


class ShardEntry(TypedDict):
    """One report a merged report was made of (``memstream report A.json B.json``)."""

    #: What its workers' ids start with (``shard2`` in ``shard2/gw0``).
    label: str
    #: The file it was read from, as given.
    file: str
    tests: int
    complete: bool
    #: Why it is not complete, or why it could not be read (then ``tests`` is 0).
    stopped: str | None


class RunEntry(TypedDict, total=False):
    started: float
    duration: float
    endpoint: str
    #: The controller's host (written since workers on other hosts stream live).
    host: str
    platform: str
    python: str
    pytest: str
    peak_method: str | None
    complete: bool
    stopped: str | None
    not_run: int
    #: Tests that ran but whose figures died with their worker (xdist saw them start).
    figures_lost: list[str]
    tests: int
    messages: int
    frames: int
    rejected: dict[str, int]
    viewers: ViewersEntry | None
    #: The total of every worker's process tree at its highest, when, and who held it.
    peak_total: int
    peak_total_at: float | None
    peak_total_tests: list[HeldEntry]
    #: The memory the run could have (its cgroup's limit, else the machine's), where
    #: that comes from, and the least headroom seen.
    limit: int
    limit_source: str
    available_min: int | None
    #: ``[[time, {worker: memory}], ...]``: what each worker's tree held, over the run.
    total_timeline: list[list[Any]]
    #: Only in a merged report: the reports it was made of, in the order given.
    shards: list[ShardEntry]


class Document(TypedDict):
    schema: str
    run: RunEntry
    workers: list[WorkerEntry]
    tests: list[TestEntry]


class EntryError(ValueError):
    """An entry that is not what the schema declares; the message names the field."""


def check_entry(entry: Any, declared: type, where: str) -> None:
    """EntryError unless ``entry`` is a map with the fields ``declared`` requires, each of
    its declared type (and its optional fields, where present, too)."""
    if not isinstance(entry, dict):
        raise EntryError(f"{where} is {kind(entry)}, expected an object")
    required: frozenset[str] = getattr(declared, "__required_keys__", frozenset())
    for name, accepted in _fields(declared).items():
        if name not in entry:
            if name in required:
                raise EntryError(f'{where} has no "{name}"')
            continue
        value = entry[name]
        # A JSON true is no number: bool is an int to isinstance.
        is_bool = value is True or value is False
        if (bool not in accepted) if is_bool else not isinstance(value, accepted):
            raise EntryError(f"{where}.{name} is {kind(value)}, not what a report holds")


_cache: dict[type, dict[str, tuple[type, ...]]] = {}


def _fields(declared: type) -> dict[str, tuple[type, ...]]:
    """``name -> the Python types a JSON value of it may have``."""
    found = _cache.get(declared)
    if found is None:
        hints = typing.get_type_hints(declared)
        found = _cache[declared] = {name: _accepted(hint) for name, hint in hints.items()}
    return found


def _accepted(hint: Any) -> tuple[type, ...]:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return tuple(t for arg in typing.get_args(hint) for t in _accepted(arg))
    if hint is type(None):
        return (type(None),)
    if hint is float:
        return (int, float)
    if origin is not None:
        return (origin,)
    if isinstance(hint, type) and issubclass(hint, dict):  # a TypedDict
        return (dict,)
    return (hint,)


def kind(value: Any) -> str:
    """What a JSON value is, in words."""
    names: dict[type, str] = {dict: "an object", list: "a list", str: "a string"}
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return names.get(type(value), type(value).__name__)
