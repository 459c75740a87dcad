"""Flags, their ini keys, and the summary they shape."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from runs import MEMORY_TESTS, RunMemstream, table_rows

from pytest_memstream import SORT_KEYS


@pytest.fixture(autouse=True)
def memory_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_memory=MEMORY_TESTS)


def summary_rows(output: str) -> list[str]:
    return table_rows(output, "memstream: top")


def test_every_ini_key_works(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        """
        [pytest]
        memstream = true
        memstream_top = 2
        memstream_sort = kept
        memstream_json = out/report.json
        memstream_interval = 0.05
        memstream_bind = tcp://127.0.0.1
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    rows = summary_rows(result.stdout.str())
    assert len(rows) == 2
    assert rows[0].endswith("test_memory.py::test_keeps")  # sorted by what it kept
    result.stdout.fnmatch_lines(["*memstream: top 2 tests by memory kept*"])
    result.stdout.fnmatch_lines(["memstream: sink tcp://127.0.0.1:*"])
    report = json.loads((pytester.path / "out" / "report.json").read_text())
    assert report["schema"] == "pytest-memstream/2"
    assert report["run"]["endpoint"].startswith("tcp://127.0.0.1:")
    interval = {w["id"]: w for w in report["workers"]}
    assert set(interval) == {"main"}


def test_command_line_beats_ini(pytester: pytest.Pytester, run_memstream: RunMemstream) -> None:
    pytester.makeini("[pytest]\nmemstream_top = 1\nmemstream_sort = kept\n")
    run = run_memstream("--memstream-top=3", "--memstream-sort=peak")
    rows = summary_rows(run.output)
    assert len(rows) == 3
    assert rows[0].endswith("::test_spike")
    run.result.stdout.fnmatch_lines(["*memstream: top 3 tests by peak RSS*"])


def test_top_zero_shows_all(run_memstream: RunMemstream) -> None:
    run = run_memstream("--memstream-top=0")
    assert len(summary_rows(run.output)) == 6


def test_sort_orders(run_memstream: RunMemstream) -> None:
    run = run_memstream("--memstream-sort=growth", "--memstream-top=0")
    rows = summary_rows(run.output)
    order = [re.search(r"test_memory\.py::\S+", row).group() for row in rows]  # type: ignore[union-attr]
    by_growth = sorted(run.report["tests"], key=lambda t: t["growth"], reverse=True)
    assert order == [t["nodeid"] for t in by_growth]


def test_sort_keys_are_listed_in_one_order_everywhere(pytester: pytest.Pytester) -> None:
    assert SORT_KEYS == ("growth", "peak", "kept", "tree")
    words = " ".join(pytester.runpytest_subprocess("--help").stdout.str().split())
    assert "order of the summary: growth, peak, kept, tree (default growth)" in words
    bad = pytester.runpytest_subprocess("--memstream", "--memstream-sort=size")
    bad.stderr.fnmatch_lines(["*expected one of growth, peak, kept, tree"])
    for command in ("report", "watch"):
        done = subprocess.run(
            [sys.executable, "-m", "pytest_memstream.cli", command, "--help"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "--sort {growth,peak,kept,tree}" in done.stdout, command


def test_quiet_and_verbose_forms(run_memstream: RunMemstream) -> None:
    quiet = run_memstream("-q", "-n", "2")
    assert "growth      peak" not in quiet.output
    quiet.result.stdout.re_match_lines([r"\s*\+\d+\.\dM test_memory.py::test_spike$"])
    verbose = run_memstream("-v", "-n", "2")
    verbose.result.stdout.re_match_lines(
        [r"  gw0 +pid \d+ +complete +\d+ tests, \d+ messages, 0 lost, .*max RSS .*"]
    )
    verbose.result.stdout.re_match_lines([r"  gw1 +pid \d+ +complete .*"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--memstream-top=-1"], "--memstream-top got '-1'; expected a whole number >= 0"),
        (["--memstream-top=lots"], "--memstream-top got 'lots'"),
        (["--memstream-sort=size"], "--memstream-sort got 'size'; expected one of growth, peak"),
        (["--memstream-interval=0"], "--memstream-interval got '0'; expected a number of seconds"),
        (["--memstream-interval=nan"], "--memstream-interval got 'nan'"),
        (["--memstream-bind=http://x"], "--memstream-bind got 'http://x'; expected a ZeroMQ"),
    ],
)
def test_bad_flag_values_are_rejected(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    result = pytester.runpytest_subprocess("--memstream", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*memstream: {message}*"])


def test_bad_ini_value_names_the_file(pytester: pytest.Pytester) -> None:
    ini = pytester.makeini("[pytest]\nmemstream = true\nmemstream_sort = biggest\n")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"*memstream: ini key memstream_sort in {ini} got 'biggest'; expected one of*"]
    )


@pytest.mark.parametrize(
    "endpoint",
    ["tcp://127.0.0.1:99999", "tcp://*:65536", "tcp://localhost:70000", "tcp://[::1]:99999"],
)
def test_a_port_out_of_range_is_one_usage_line(pytester: pytest.Pytester, endpoint: str) -> None:
    result = pytester.runpytest_subprocess("--memstream", f"--memstream-bind={endpoint}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert [line for line in result.stderr.lines if line.strip()] == [
        f"ERROR: memstream: --memstream-bind got {endpoint!r}; expected a ZeroMQ endpoint such "
        "as tcp://127.0.0.1, tcp://127.0.0.1:5555 (a port from 0 to 65535) or "
        "ipc:///tmp/memstream.sock"
    ]
    assert "INTERNALERROR" not in result.stdout.str()


def test_a_port_out_of_range_in_the_ini_file_names_it(pytester: pytest.Pytester) -> None:
    ini = pytester.makeini("[pytest]\nmemstream = true\nmemstream_bind = tcp://127.0.0.1:99999\n")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"ERROR: memstream: ini key memstream_bind in {ini} got 'tcp://127.0.0.1:99999'; *"]
    )
    assert "INTERNALERROR" not in result.stdout.str()


NATIVE_TOML = pytest.mark.skipif(
    int(pytest.__version__.split(".")[0]) < 9, reason="[tool.pytest] is pytest 9's"
)


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        ("pytest.ini", "[pytest]\nmemstream = maybe\n", "invalid truth value 'maybe'; expected*"),
        (
            "pyproject.toml",
            '[tool.pytest.ini_options]\nmemstream = "maybe"\n',
            "invalid truth value 'maybe'; expected true or false*",
        ),
        pytest.param(
            "pyproject.toml",
            '[tool.pytest]\nmemstream = "maybe"\n',
            "*expects a bool, got str: 'maybe'",
            marks=NATIVE_TOML,
        ),
    ],
    ids=["ini", "toml-ini-options", "toml-native"],
)
def test_a_bad_boolean_names_the_key_and_the_file(
    pytester: pytest.Pytester, name: str, text: str, reason: str
) -> None:
    path = pytester.path / name
    path.write_text(text)
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: memstream: ini key memstream in {path}: {reason}"])
    assert "INTERNALERROR" not in result.stdout.str()


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("pytest.ini", "[pytest]\nmemstream = yes\n"),
        pytest.param("pyproject.toml", "[tool.pytest]\nmemstream = true\n", marks=NATIVE_TOML),
    ],
    ids=["ini", "toml-native"],
)
def test_a_boolean_in_either_syntax_turns_it_on(
    pytester: pytest.Pytester, name: str, text: str
) -> None:
    (pytester.path / name).write_text(text)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-k", "keeps")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*memstream: top 1 test by memory growth*"])


def test_unbindable_endpoint_is_a_clear_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--memstream", "--memstream-bind=tcp://192.0.2.1:1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*memstream: cannot bind the sink to 'tcp://192.0.2.1:1'*"])


def test_unwritable_json_path_warns_and_keeps_the_outcome(pytester: pytest.Pytester) -> None:
    os.mkfifo(pytester.path / "report.json")  # found only once the report is written
    result = pytester.runpytest_subprocess(
        "--memstream", "--memstream-json=report.json", "-k", "not fails", timeout=120
    )
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*memstream: warning: could not write the JSON report*"])
    result.stdout.fnmatch_lines(["*memstream: top 5 tests by memory growth*"])
