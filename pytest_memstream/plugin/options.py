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
DEFAULT_MIN_INCREASE = "1M"

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
        "save this run's per-test figures as baseline NAME (in the pytest cache; a NAME "
        "with a path separator or ending in .json is a file).",
        metavar="NAME",
        nargs="?",
        const=DEFAULT_BASELINE,
    )
    option(
        "compare",
        "print the tests whose growth changed most against baseline NAME.",
        metavar="NAME",
        nargs="?",
        const=DEFAULT_BASELINE,
    )
    option(
        "fail_on_increase",
        "fail the run when a test grew by more than PCT percent and more than MIN_SIZE "
        f"(default {DEFAULT_MIN_INCREASE}) against the compared baseline.",
        metavar="PCT[,MIN_SIZE]",
    )


def _parse_on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise ValueError
    return text == "on"


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


_BASELINE_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}"


def _parse_baseline(text: str) -> str:
    """A cache name (letters, digits, ``_.-``) or a path (has a separator or ends in .json)."""
    if is_baseline_path(text):
        return text
    if not re.fullmatch(_BASELINE_NAME, text):
        raise ValueError
    return text


def is_baseline_path(name: str) -> bool:
    return "/" in name or os.sep in name or name.endswith(".json")


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
        if text is None or not is_baseline_path(text):
            return text
        return self.path(name)


def check_report_paths(config: pytest.Config, settings: Settings) -> None:
    """A usage error for a report or baseline path that cannot be written, now: not at
    the end of the run, after every test ran for a report that cannot be kept."""
    from pytest_memstream.collector.files import unusable

    for name, path in (
        ("memstream_json", settings.json_path),
        ("memstream_html", settings.html_path),
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
        session_path=r.path("memstream_session"),
        children=r.get("memstream_children", _parse_on_off, True, "on or off"),
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
    "a baseline name (letters, digits, _ . -) or a path that contains a separator or ends in .json"
)
