"""Memory limits: ``@pytest.mark.memstream_limit`` and ``--memstream-limit``.

A limit is checked where the test runs (the xdist worker, or the one pytest process), from
the figures the Recorder already took, so a limited test costs nothing extra to measure
and an unlimited one costs one dictionary lookup per phase report.

A test over its limit fails like an assertion would: when the setup and call phases took
it over, its ``call`` report turns failed (pytest shows ``FAILED``, as pytest-memray's
``limit_memory`` does); when only the teardown took it over, the teardown report turns
failed (pytest shows an error at teardown).  Growth is measured from the start of setup,
so a fixture's memory counts against the test that asked for it.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import pytest

from pytest_memstream.plugin.options import MARKER
from pytest_memstream.protocol import LIMIT_ON
from pytest_memstream.sizes import format_size, parse_size

#: Live samples of a phase shown in a failure message, the latest ones.
SAMPLES_SHOWN = 12


class Limit(NamedTuple):
    size: int
    on: str
    #: Where it came from, for the failure message.
    source: str

    def as_wire(self) -> list[Any]:
        return [self.size, self.on]


DefaultLimit = Sequence[Any]


def _flag_limit(default: DefaultLimit | None) -> Limit | None:
    """``--memstream-limit``'s ``[size, on]`` as a limit."""
    return None if default is None else Limit(int(default[0]), str(default[1]), "--memstream-limit")


def limit_of(item: pytest.Item, default: DefaultLimit | None) -> Limit | None:
    """The limit that applies to ``item``: its closest marker, else ``default``.

    Raises ValueError with a message that names the test for bad marker arguments.
    """
    marker = item.get_closest_marker(MARKER)
    if marker is None:
        return _flag_limit(default)
    try:
        return _from_marker(marker.args, marker.kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"memstream: bad {MARKER} marker on {item.nodeid}: {exc}") from None


def limits_of(
    items: Sequence[pytest.Item], default: DefaultLimit | None
) -> tuple[dict[str, Limit], dict[str, str]]:
    """``(limits, problems)``: the limit of each test that has one, by node id, and the
    message of each test whose marker cannot be read.

    An xdist worker collects every test of the run: whether a node or one of its parents
    carries the marker is known once per parent, and only the tests that do are asked
    for their closest marker (asking every test walks its parents every time).
    """
    limits: dict[str, Limit] = {}
    problems: dict[str, str] = {}
    marked: dict[int, bool] = {}  # id(node) -> it or one of its parents has the marker

    def has_marker(node: Any) -> bool:  # a pytest node (not public as a type), or None
        if node is None:
            return False
        known = marked.get(id(node))
        if known is None:
            own = any(mark.name == MARKER for mark in node.own_markers)
            known = marked[id(node)] = own or has_marker(node.parent)
        return known

    flag = _flag_limit(default)
    for item in items:
        if not has_marker(item):
            if flag is not None:
                limits[item.nodeid] = flag
            continue
        try:
            limit = limit_of(item, default)
        except ValueError as exc:
            problems[item.nodeid] = str(exc)
            continue
        if limit is not None:
            limits[item.nodeid] = limit
    return limits, problems


def _from_marker(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Limit:
    unknown = sorted(set(kwargs) - {"size", "on"})
    if unknown:
        raise TypeError(f"unknown argument {unknown[0]!r}; use {MARKER}(size, on='growth')")
    if len(args) > 2 or (args and "size" in kwargs) or (len(args) == 2 and "on" in kwargs):
        raise TypeError(f"too many arguments; use {MARKER}(size, on='growth')")
    values = dict(zip(("size", "on"), args, strict=False), **kwargs)
    if "size" not in values:
        raise TypeError(f"a size is required, e.g. {MARKER}('200M')")
    size, on = values["size"], values.get("on", "growth")
    if type(size) is int:
        bytes_ = size
    elif isinstance(size, str):
        bytes_ = parse_size(size)
    else:
        raise TypeError(f"size must be a string such as '200M' or a number of bytes, not {size!r}")
    if bytes_ <= 0:
        raise ValueError(f"size must be above 0, got {size!r}")
    if on not in LIMIT_ON:
        raise ValueError(f"on must be 'growth' or 'peak', got {on!r}")
    return Limit(bytes_, on, f"@pytest.mark.{MARKER}")


class SetupFailures:
    """Fails the tests it is given in their setup, each with its own message: a limit
    marker that cannot be read, or a limit that cannot be checked, must not pass."""

    def __init__(self, problems: dict[str, str]) -> None:
        self._problems = problems

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        problem = self._problems.get(item.nodeid)
        if problem is not None:
            pytest.fail(problem, pytrace=False)


class Measuring(Protocol):
    """What a limit check needs of the recorder, which imports this module."""

    def measure_so_far(self) -> dict[str, tuple[int, int, int, float]]: ...

    def tree_so_far(self) -> tuple[int, int] | None: ...

    def samples(self) -> list[tuple[str, float, int]]: ...


class LimitCheck(SetupFailures):
    """Fails the tests that went over their limit; registered only when a limit exists."""

    def __init__(self, recorder: Measuring, limits: dict[str, Limit], bad: dict[str, str]) -> None:
        super().__init__(bad)
        self._recorder = recorder
        self.limits = limits
        #: The current test has already failed for its limit (once is enough).
        self._reported = False

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if report.when == "setup":
            self._reported = False  # per run of the test: a rerun is checked afresh
            return report
        limit = self.limits.get(item.nodeid)
        if limit is None or self._reported:
            return report
        phases = self._recorder.measure_so_far()
        if limit.on == "tree":
            over = _over_tree(self._recorder.tree_so_far(), phases, limit, report.when)
        else:
            over = _over(phases, limit)
        if over is None or report.skipped:
            return report
        self._reported = True
        samples = self._recorder.samples()
        message = failure_message(item.nodeid, limit, phases, *over, samples=samples)
        if report.passed:
            report.outcome = "failed"
            report.longrepr = message
        else:  # already failing for its own reason: say it was over the limit too
            report.sections.append(("memstream limit", message))
        return report


def check_unmeasured(
    config: pytest.Config, items: list[pytest.Item], default: DefaultLimit | None, failure: str
) -> None:
    """Where no recorder runs, fail the tests whose limit (or limit marker) needs one."""
    limits, problems = limits_of(items, default)
    for nodeid, limit in limits.items():
        problems[nodeid] = (
            f"memstream: {nodeid} has a memory limit ({limit.source}) that could "
            f"not be checked: this process {failure}"
        )
    if problems:
        config.pluginmanager.register(SetupFailures(problems), "memstream-limits")


def _over(phases: Mapping[str, Sequence[Any]], limit: Limit) -> tuple[int, str] | None:
    """``(figure, phase)`` if ``phases`` went over ``limit``, else None."""
    if not phases:
        return None
    start = phases["setup"][0] if "setup" in phases else min(f[0] for f in phases.values())
    peak = max(f[2] for f in phases.values())
    figure = peak - start if limit.on == "growth" else peak
    if figure <= limit.size:
        return None
    phase = next(name for name, f in phases.items() if f[2] == peak)
    return figure, phase


def _over_tree(
    tree: tuple[int, int] | None,
    phases: Mapping[str, Sequence[Any]],
    limit: Limit,
    phase: str,
) -> tuple[int, str] | None:
    """``(tree growth, phase)`` if the test's process tree (the worker alone, when it
    started no process) grew past ``limit`` by the end of ``phase``."""
    if tree is None:
        over = _over(phases, Limit(limit.size, "growth", limit.source))
        return None if over is None else (over[0], phase)
    growth, _ = tree
    return (growth, phase) if growth > limit.size else None


def failure_message(
    nodeid: str,
    limit: Limit,
    phases: Mapping[str, Sequence[Any]],
    figure: int,
    phase: str,
    samples: Sequence[tuple[str, float, int]] = (),
) -> str:
    what = {
        "growth": "grew by",
        "peak": "reached a peak RSS of",
        "tree": "grew, with the processes it started, by",
    }[limit.on]
    signed = limit.on != "peak"
    lines = [
        f"memstream: {nodeid} {what} {format_size(figure, signed=signed)} in {phase}, "
        f"over its limit of {format_size(limit.size)} on {limit.on} ({limit.source})",
    ]
    start = phases.get("setup", next(iter(phases.values())))[0]
    for name, (before, after, peak, duration) in phases.items():
        lines.append(
            f"  {name:<8} RSS {format_size(before)} -> {format_size(after)}, "
            f"peak {format_size(peak)} ({format_size(peak - start, signed=True)} "
            f"from the start of setup), {duration:.3f}s"
        )
        seen = [rss for ph, _, rss in samples if ph == name][-SAMPLES_SHOWN:]
        if seen:
            lines.append(f"  {'':<8} samples {' '.join(format_size(rss) for rss in seen)}")
    return "\n".join(lines)
