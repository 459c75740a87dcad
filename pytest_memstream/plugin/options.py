"""Command-line flags, ini keys and the marker, and the resolver that turns them into Settings.

Every flag is ``--memstream-*`` with dest ``memstream_*``, mirrored by an ini key of the
same name.  The command line wins over the ini file; a bad value is a usage error that
names the value and where it came from.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import pytest

from pytest_memstream import SORT_KEYS

# Loaded by every pytest run that has the plugin installed, on or off: it imports only
# what declaring the flags needs (each module costs pytest's import hook ~0.5 ms), and
# compiles its patterns when a flag needs them.

DEFAULT_TOP = 5
DEFAULT_SORT = "growth"
DEFAULT_INTERVAL = 0.1
DEFAULT_BIND = "tcp://127.0.0.1"
DEFAULT_BASELINE = "default"
#: The floor of an increase that fails a run: identical runs of attrs' suite moved a test's
#: growth by up to 1.8 MiB (docs/baselines.md).
DEFAULT_MIN_INCREASE = "3M"
#: Runs a baseline keeps (collector/baseline.py's DEFAULT_RUNS, not imported: see above).
DEFAULT_BASELINE_RUNS = 5

T = TypeVar("T")

MARKER = "memstream_limit"


def memstream_limit(size: str | int, on: str = "growth") -> None:
    """fail the test when its memory growth (peak RSS minus RSS at the start of setup)
    exceeds size, e.g. "200M"; with on="peak", when its absolute peak RSS does; with
    on="tree", when its growth counting the processes it started does.  Closest marker
    (test, class, module) wins over --memstream-limit.  Only with --memstream.
    """


def marker_line() -> str:
    """The marker's line for ``pytest --markers``, from the docstring above (the marker
    itself is read in limits.py)."""
    doc = " ".join((memstream_limit.__doc__ or "").split())
    return f'{MARKER}(size, on="growth"): {doc}'


class Settings(NamedTuple):
    enabled: bool
    top: int
    sort: str
    json_path: Path | None
    interval: float
    bind: str
    #: Announce a running test whose growth passes this many bytes (None: never).
    warn: int | None = None
    #: Fail every test whose growth (or peak, or tree growth) passes this many bytes,
    #: unless a marker says else: ``[size, on]``.
    limit: list[Any] | None = None
    #: Baselines: where to save this run's figures and which to compare against (a name
    #: in the pytest cache, or a path), and the increase (percent, bytes) that fails the
    #: run.  See plugin/baselines.py and collector/baseline.py.
    save: str | Path | None = None
    compare: str | Path | None = None
    fail_on_increase: tuple[float, int] | None = None
    #: Where to write the HTML report (collector/html.py), if anywhere.
    html_path: Path | None = None
    #: Where to write the session file for viewers (default: in the pytest cache).
    session_path: Path | None = None
    #: Measure the processes the tests start (plugin/tree.py).
    children: bool = True
    #: Schedule hungry tests by memory (plugin/schedule.py): bytes, or "auto".
    max_total: int | str | None = None
    #: How many runs a saved baseline keeps, the newest last.
    baseline_runs: int = DEFAULT_BASELINE_RUNS
    #: Where to write the Markdown summary (collector/markdown.py), if anywhere.
    markdown_path: Path | None = None
    #: pytest's own JUnit XML file (--junitxml), which gets each test's figures
    #: (plugin/ci.py).
    junit_path: Path | None = None
    #: ``--memstream-bind`` was given: the sink listens there and nowhere else.
    bind_given: bool = False
    #: The host that workers on other hosts, and the session file, name for this run
    #: instead of the address found for each (plugin/remote.py).
    advertise: str | None = None

    @property
    def baselines_wanted(self) -> bool:
        return (
            self.save is not None or self.compare is not None or self.fail_on_increase is not None
        )

    @property
    def every_test_wanted(self) -> bool:
        """Whether a report needs every test's entry, not only the summary's rows."""
        return bool(self.html_path or self.baselines_wanted or self.junit_path)


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("memstream", "memory of every test, streamed live (pytest-memstream)")

    def option(flag: str, help: str, ini_type: Any = "string", **kwargs: Any) -> None:
        name = "memstream" + (f"_{flag}" if flag else "")
        group.addoption("--" + name.replace("_", "-"), dest=name, default=None, help=help, **kwargs)
        parser.addini(name, help, type=ini_type, default=None)

    option(
        "",
        "measure the memory of every test and report the top tests.",
        ini_type="bool",
        action="store_true",
    )
    option("top", f"rows in the summary, 0 for all (default {DEFAULT_TOP}).", metavar="N")
    option(
        "sort",
        f"order of the summary: {', '.join(SORT_KEYS)} (default {DEFAULT_SORT}).",
        metavar="KEY",
    )
    option("json", "write the JSON report to PATH.", metavar="PATH")
    option(
        "html",
        "write a self-contained HTML report (a timeline per worker, the top tests) to PATH.",
        metavar="PATH",
    )
    option(
        "max_total",
        "under xdist (--dist load or worksteal), hand a test that took much memory before "
        "to a worker only while the run's predicted total stays under SIZE; auto: the "
        "memory the run's cgroup (or the machine) allows (default: off).",
        metavar="SIZE|auto",
    )
    option(
        "markdown",
        "write a short Markdown summary (the top tests, crashed workers, the baseline "
        "comparison) to PATH, e.g. for $GITHUB_STEP_SUMMARY.",
        metavar="PATH",
    )
    option(
        "children",
        "on: also measure the processes each test starts (its process tree); off: the "
        "worker alone (default on).",
        metavar="on|off",
    )
    option(
        "session",
        "write the session file, which viewers attach with (memstream watch --session PATH), "
        "to PATH (default: in the pytest cache); it holds the run's secret (mode 0600).",
        metavar="PATH",
    )
    option(
        "interval",
        f"seconds between live RSS samples (default {DEFAULT_INTERVAL}).",
        metavar="SECONDS",
    )
    option(
        "bind",
        f"ZeroMQ endpoint of the sink (default {DEFAULT_BIND} on a free port, and for "
        "workers on other hosts the address each reaches this machine at).",
        metavar="ENDPOINT",
    )
    option(
        "advertise",
        "the host name or address that workers on other hosts, and viewers on other "
        "machines (the session file), connect to (default: the address found for each "
        "worker); the sink listens there unless --memstream-bind says where.",
        metavar="HOST",
    )
    option(
        "warn",
        "print a line as soon as a running test has grown by SIZE, and again each time "
        "its growth doubles; e.g. 500M, 1.5GiB, 2GB (default: never).",
        metavar="SIZE",
    )
    option(
        "limit",
        "fail every test whose memory growth passes SIZE (a memstream_limit marker "
        "overrides it); e.g. 200M, or 500M,tree for the growth of its process tree, "
        "or 1G,peak for its peak RSS (default: no limit).",
        metavar="SIZE[,growth|peak|tree]",
    )
    option(
        "save",
        "add this run's per-test figures to baseline NAME (in the pytest cache; a NAME "
        "with a path separator or ending in .json is a file), which keeps the last few "
        f"runs; write --memstream-save=NAME (without =, a test path after it stays a test "
        f"path and the name is {DEFAULT_BASELINE}).",
        metavar="NAME",
        nargs="?",
        const=DEFAULT_BASELINE,
    )
    option(
        "compare",
        "print each test's growth against its range in baseline NAME, the tests that "
        "changed most first; write --memstream-compare=NAME.",
        metavar="NAME",
        nargs="?",
        const=DEFAULT_BASELINE,
    )
    option(
        "baseline_runs",
        f"runs a saved baseline keeps, the oldest dropped first (default {DEFAULT_BASELINE_RUNS}).",
        metavar="N",
    )
    option(
        "fail_on_increase",
        "fail the run when a test grew by more than PCT percent and more than MIN_SIZE "
        f"(default {DEFAULT_MIN_INCREASE}) against the compared baseline.",
        metavar="PCT[,MIN_SIZE]",
    )


def _parse_max_total(text: str) -> int | str:
    return "auto" if text == "auto" else _parse_size(text)


#: The flags whose value is optional: a value after a space may be a test path instead.
_OPTIONAL_VALUE = ("--memstream-save", "--memstream-compare")


def keep_test_paths(args: list[str], invocation_dir: Path) -> None:
    """Give ``--memstream-save`` and ``--memstream-compare`` their default name, in ``args``
    (in place), where the word after the flag names something pytest would collect: an
    existing directory or file (not a ``.json`` one, which is a baseline), a ``.py`` file,
    or a test id with ``::``.  Without this, argparse takes that word for the baseline's
    name and pytest runs the whole suite.  ``--memstream-save=NAME`` is always a name."""
    for n, arg in enumerate(args[:-1]):
        if arg in _OPTIONAL_VALUE and _is_test_path(args[n + 1], invocation_dir):
            args[n] = f"{arg}={DEFAULT_BASELINE}"


def _is_test_path(word: str, invocation_dir: Path) -> bool:
    if not word or word.startswith("-") or word.endswith(".json"):
        return False
    if "::" in word or word.endswith(".py"):
        return True
    try:
        return (invocation_dir / word).exists()
    except (OSError, ValueError):  # a name too long for a path, or with a NUL in it
        return False


def _parse_on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise ValueError
    return text == "on"


def _parse_runs(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 100:
        raise ValueError
    return value


def _parse_top(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError
    return value


def _parse_sort(text: str) -> str:
    if text not in SORT_KEYS:
        raise ValueError
    return text


def _parse_interval(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and 0.001 <= value <= 3600):
        raise ValueError
    return value


_ENDPOINT = r"tcp://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+|\*)(:([0-9]{1,5}|\*))?|ipc://.+"


def _parse_limit(text: str) -> list[Any]:
    """``[size, on]`` from ``SIZE[,growth|peak|tree]``."""
    size, _, on = text.partition(",")
    on = on.strip() or "growth"
    if on not in ("growth", "peak", "tree"):
        raise ValueError
    return [_parse_size(size.strip()), on]


def _parse_size(text: str) -> int:
    """A size above 0 (``--memstream-warn``, ``--memstream-limit``)."""
    from pytest_memstream.sizes import parse_size

    value = parse_size(text)
    if value <= 0:
        raise ValueError
    return value


def _parse_baseline(text: str) -> str:
    """A cache name (letters, digits, ``_.-``) or a path (has a separator or ends in .json)."""
    from pytest_memstream.collector.baseline import (
        is_baseline_name,
        is_baseline_path,
        is_test_path,
    )

    if is_test_path(text) or not (is_baseline_path(text) or is_baseline_name(text)):
        raise ValueError
    return text


def _parse_increase(text: str) -> tuple[float, int]:
    from pytest_memstream.sizes import parse_size

    percent, _, min_size = text.partition(",")
    value = float(percent.strip().rstrip("%"))
    if not (math.isfinite(value) and value >= 0):
        raise ValueError
    return value, parse_size(min_size.strip() or DEFAULT_MIN_INCREASE)


_HOST = r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}"


def _parse_host(text: str) -> str:
    """A host name or an IPv4 address, without a port (workers connect over IPv4)."""
    if re.fullmatch(_HOST, text) is None:
        raise ValueError
    if re.fullmatch(r"[0-9.]+", text):
        import ipaddress

        # "10.1" is no host name either (inet_aton would read it as 10.0.0.1).
        return str(ipaddress.IPv4Address(text))
    return text


def _parse_bind(text: str) -> str:
    endpoint = re.fullmatch(_ENDPOINT, text)
    if endpoint is None:
        raise ValueError
    # ZeroMQ would bind a port above 65535 modulo 65536, and a plain socket refuses it
    # with an OverflowError: neither may be handed one.
    port = endpoint.group(3)
    if port not in (None, "*") and int(port) > 65535:
        raise ValueError
    return text


class _Resolver:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def raw(self, name: str) -> tuple[Any, str] | None:
        """The value given for ``name`` and where it came from, or None if not given."""
        value = self.config.getoption(name)
        if value is not None:
            return value, "--" + name.replace("_", "-")
        where = f"ini key {name} in {self.config.inipath or 'the ini file'}"
        try:
            value = self.config.getini(name)
        except (TypeError, ValueError, pytest.UsageError) as exc:  # pytest 8, pytest 9
            # pytest's message names neither the key nor the file for an ini value
            # ("invalid truth value 'maybe'"), and for a TOML value not as ours do.
            reason = str(exc).removeprefix(f"{self.config.inipath}: ")
            # A TOML value of the wrong type is told what pytest expects; an ini one is not.
            expected = "" if " expects " in reason else _INI_EXPECTED.get(name, "")
            raise pytest.UsageError(f"memstream: {where}: {reason}{expected}") from None
        if value is None or value == "" or value == []:  # unset (pytest 8 and 9 differ)
            return None
        return value, where

    def get(self, name: str, parse: Callable[[str], T], default: T, expected: str) -> T:
        given = self.raw(name)
        if given is None:
            return default
        value, where = given
        try:
            return parse(str(value).strip())
        except ValueError:
            raise pytest.UsageError(
                f"memstream: {where} got {str(value)!r}; expected {expected}"
            ) from None

    def path(self, name: str) -> Path | None:
        given = self.raw(name)
        if given is None:
            return None
        value, where = given
        if not str(value).strip():  # Path("") is ".", the directory itself
            raise pytest.UsageError(f"memstream: {where} got {str(value)!r}; expected a file path")
        if where.startswith("--"):
            base = self.config.invocation_params.dir
        else:
            base = self.config.inipath.parent if self.config.inipath else self.config.rootpath
        return base / Path(str(value))

    def baseline(self, name: str) -> str | Path | None:
        """A baseline's name in the cache, or its path (relative as for ``path``)."""
        text = self.get(name, _parse_baseline, None, _BASELINE_EXPECTED)
        if text is None:
            return None
        from pytest_memstream.collector.baseline import is_baseline_path

        return self.path(name) if is_baseline_path(text) else text

    def junit_path(self) -> Path | None:
        """Where pytest's junitxml writes (its --junitxml), resolved as it resolves it."""
        # Absent with -p no:junitxml: the option is then not declared at all.
        given = self.config.getoption("xmlpath", None)
        if not given:
            return None
        expanded = os.path.expanduser(os.path.expandvars(str(given)))
        return Path(os.path.normpath(self.config.invocation_params.dir / expanded))


def check_report_paths(config: pytest.Config, settings: Settings) -> None:
    """A usage error for a report or baseline path that cannot be written, now: not at
    the end of the run, after every test ran for a report that cannot be kept."""
    from pytest_memstream.collector.files import unusable

    for name, path in (
        ("memstream_json", settings.json_path),
        ("memstream_html", settings.html_path),
        ("memstream_markdown", settings.markdown_path),
        ("memstream_save", settings.save),
    ):
        reason = unusable(path) if isinstance(path, Path) else None
        given = _Resolver(config).raw(name) if reason else None
        if given is not None:
            value, where = given
            raise pytest.UsageError(f"memstream: {where} got {str(value)!r}: {reason}")


def resolve(config: pytest.Config) -> Settings:
    """Settings for this run; raises UsageError for a bad value."""
    r = _Resolver(config)
    enabled = r.raw("memstream")
    return Settings(
        enabled=bool(enabled and enabled[0]),
        top=r.get("memstream_top", _parse_top, DEFAULT_TOP, "a whole number >= 0 (0 = all)"),
        sort=r.get("memstream_sort", _parse_sort, DEFAULT_SORT, f"one of {', '.join(SORT_KEYS)}"),
        json_path=r.path("memstream_json"),
        html_path=r.path("memstream_html"),
        markdown_path=r.path("memstream_markdown"),
        junit_path=r.junit_path(),
        session_path=r.path("memstream_session"),
        children=r.get("memstream_children", _parse_on_off, True, "on or off"),
        max_total=r.get(
            "memstream_max_total", _parse_max_total, None, f"auto, or a size such as {_SIZES}"
        ),
        interval=r.get(
            "memstream_interval",
            _parse_interval,
            DEFAULT_INTERVAL,
            "a number of seconds between 0.001 and 3600",
        ),
        bind_given=r.raw("memstream_bind") is not None,
        advertise=r.get(
            "memstream_advertise",
            _parse_host,
            None,
            "a host name or an IPv4 address, without a port, such as build-controller or 10.0.0.5",
        ),
        bind=r.get(
            "memstream_bind",
            _parse_bind,
            DEFAULT_BIND,
            "a ZeroMQ endpoint such as tcp://127.0.0.1, tcp://127.0.0.1:5555 (a port from "
            "0 to 65535) or ipc:///tmp/memstream.sock",
        ),
        warn=r.get(
            "memstream_warn",
            _parse_size,
            None,
            "a size above 0 such as 500M, 1.5GiB or 2GB (K/M/G/T and KiB/MiB/GiB/TiB are "
            "powers of 1024, KB/MB/GB/TB powers of 1000)",
        ),
        limit=r.get(
            "memstream_limit",
            _parse_limit,
            None,
            f"a size above 0 such as {_SIZES}, and optionally ,growth ,peak or ,tree",
        ),
        save=r.baseline("memstream_save"),
        compare=r.baseline("memstream_compare"),
        baseline_runs=r.get(
            "memstream_baseline_runs",
            _parse_runs,
            DEFAULT_BASELINE_RUNS,
            "a whole number of runs from 1 to 100",
        ),
        fail_on_increase=r.get(
            "memstream_fail_on_increase",
            _parse_increase,
            None,
            "PCT[,MIN_SIZE], a percentage >= 0 and an optional size, such as 20 or 20,5M",
        ),
    )


_SIZES = (
    "200M, 1.5GiB or 2GB (K/M/G/T and KiB/MiB/GiB/TiB are powers of 1024, KB/MB/GB/TB "
    "powers of 1000)"
)
#: What pytest's complaint about an ini value leaves out.
_INI_EXPECTED = {"memstream": "; expected true or false (or yes/no, on/off, 1/0)"}
_BASELINE_EXPECTED = (
    "a baseline name (letters, digits, _ . -) or a path that contains a separator or ends in "
    ".json, not a test file (.py) or a test id (::)"
)
