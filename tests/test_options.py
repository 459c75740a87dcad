"""Flags, their ini keys, and the summary they shape."""

from __future__ import annotations

import json
import re

import pytest
from conftest import MEMORY_TESTS, RunMemstream, table_rows


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


def test_unbindable_endpoint_is_a_clear_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--memstream", "--memstream-bind=tcp://192.0.2.1:1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*memstream: cannot bind the sink to 'tcp://192.0.2.1:1'*"])


def test_unwritable_json_path_warns_and_keeps_the_outcome(pytester: pytest.Pytester) -> None:
    (pytester.path / "blocker").write_text("a file where a directory should be")
    result = pytester.runpytest_subprocess(
        "--memstream", "--memstream-json=blocker/report.json", "-k", "not fails"
    )
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*memstream: warning: could not write the JSON report*"])
    result.stdout.fnmatch_lines(["*memstream: top 5 tests by memory growth*"])
