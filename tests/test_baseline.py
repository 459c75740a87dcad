"""Baselines: save a run's figures, compare a later run with them, fail on an increase."""

from __future__ import annotations

import json

import pytest
from runs import RunMemstream, table_rows

from pytest_memstream.collector.baseline import (
    SCHEMA,
    BaselineError,
    baseline_of,
    check_baseline,
    compare,
    comparison_lines,
    increase_lines,
)

MiB = 1 << 20


def suite(hungry_mib: int, extra: str = "test_old") -> str:
    return f"""
MiB = 1 << 20


def test_hungry():
    data = b"x" * ({hungry_mib} * MiB)
    del data


def test_steady():
    data = b"x" * (30 * MiB)
    del data


def {extra}():
    pass
"""


def comparison_rows(output: str) -> list[str]:
    return table_rows(output, "growth against baseline")


@pytest.mark.parametrize("xdist", [["-n", "0"], ["-n", "2"]], ids=["single", "xdist"])
def test_save_then_compare_across_two_runs(
    pytester: pytest.Pytester, run_memstream: RunMemstream, xdist: list[str]
) -> None:
    pytester.makepyfile(test_suite=suite(20), test_gone="def test_a():\n    pass\n")
    first = run_memstream(*xdist, "--memstream-save")
    assert first.result.ret == pytest.ExitCode.OK
    assert "growth against baseline" not in first.output
    first.result.stdout.fnmatch_lines(
        [
            "memstream: JSON report written to *",
            "memstream: baseline saved as 'default' in the pytest cache",
        ]
    )

    # One test more hungry, one renamed, one file gone and one new.
    (pytester.path / "test_gone.py").unlink()
    pytester.makepyfile(
        test_suite=suite(150, extra="test_new"), test_fresh="def test_b():\n    pass\n"
    )
    second = run_memstream(*xdist, "--memstream-compare")
    assert second.result.ret == pytest.ExitCode.OK  # comparing alone never fails a run
    second.result.stdout.fnmatch_lines(["*memstream: growth against baseline 'default'*"])
    rows = comparison_rows(second.output)
    # The hungrier test changed most and comes first, with its change and percent.
    assert rows[0].endswith("test_suite.py::test_hungry")
    before, now, change, percent = (cell.lstrip("+").rstrip("M%") for cell in rows[0].split()[:4])
    first_growth = first.test("test_hungry")["growth"]
    second_growth = second.test("test_hungry")["growth"]
    assert float(before) == pytest.approx(first_growth / MiB, abs=0.06)
    assert float(now) == pytest.approx(second_growth / MiB, abs=0.06)
    assert float(change) == pytest.approx((second_growth - first_growth) / MiB, abs=0.11)
    assert int(percent) > 400
    assert rows[1].endswith("test_suite.py::test_steady")
    assert len(rows) == 2
    second.result.stdout.fnmatch_lines(
        [
            "memstream: 2 tests compared, 1 new, 1 gone, 1 renamed",
            "  renamed: test_suite.py::test_old -> test_suite.py::test_new: growth +* -> +*",
            "  new: test_fresh.py::test_b",
            "  gone: test_gone.py::test_a",
        ]
    )


def test_fail_on_increase_sets_the_exit_status_and_names_the_test(
    pytester: pytest.Pytester, run_memstream: RunMemstream
) -> None:
    pytester.makepyfile(test_suite=suite(20))
    assert run_memstream("-n", "2", "--memstream-save=ci").result.ret == pytest.ExitCode.OK
    pytester.makepyfile(test_suite=suite(150))

    failed = run_memstream("-n", "2", "--memstream-compare=ci", "--memstream-fail-on-increase=50")
    assert failed.result.ret == pytest.ExitCode.TESTS_FAILED
    failed.result.assert_outcomes(passed=3)  # every test passed; the run failed on memory
    failed.result.stdout.re_match_lines(
        [
            r"memstream: FAILED: 1 test grew by more than 50% and more than 1\.0M against "
            r"baseline 'ci':",
            r"  test_suite.py::test_hungry: growth \+\d+\.\dM -> \+1\d\d\.\dM "
            r"\(\+1\d\d\.\dM, \+\d+%\)",
        ]
    )
    assert "test_steady: growth" not in failed.output

    # The same increase below MIN_SIZE does not fail the run.
    tolerant = run_memstream("--memstream-compare=ci", "--memstream-fail-on-increase=50,500M")
    assert tolerant.result.ret == pytest.ExitCode.OK
    assert "memstream: FAILED" not in tolerant.output


def test_ini_keys_and_a_baseline_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=suite(20))
    pytester.makeini("[pytest]\nmemstream = true\nmemstream_save = base/run.json\n")
    saving = pytester.runpytest_subprocess("-p", "no:randomly")
    assert saving.ret == pytest.ExitCode.OK
    saving.stdout.fnmatch_lines([f"memstream: baseline saved to {pytester.path / 'base/run.json'}"])
    saved = json.loads((pytester.path / "base" / "run.json").read_text())
    assert saved["schema"] == SCHEMA
    assert set(saved["tests"]) == {
        "test_suite.py::test_hungry",
        "test_suite.py::test_steady",
        "test_suite.py::test_old",
    }
    assert saved["tests"]["test_suite.py::test_hungry"]["growth"] > 15 * MiB
    assert not (pytester.path / ".pytest_cache" / "v" / "memstream" / "baselines").exists()

    pytester.makepyfile(test_suite=suite(150))
    pytester.makeini(
        """
        [pytest]
        memstream = true
        memstream_compare = base/run.json
        memstream_fail_on_increase = 100,10M
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [f"*memstream: growth against baseline {pytester.path / 'base' / 'run.json'}*"]
    )
    result.stdout.fnmatch_lines(["memstream: FAILED: 1 test grew by more than 100% and more*"])


def test_missing_or_foreign_baseline_is_a_warning(
    pytester: pytest.Pytester, run_memstream: RunMemstream
) -> None:
    pytester.makepyfile(test_suite=suite(20))
    missing = run_memstream("--memstream-compare=nothing", "--memstream-fail-on-increase=1")
    assert missing.result.ret == pytest.ExitCode.OK
    missing.result.stdout.fnmatch_lines(
        ["memstream: warning: no baseline 'nothing' to compare with yet; save one with*"]
    )
    (pytester.path / "foreign.json").write_text('{"schema": "something-else"}')
    foreign = run_memstream("--memstream-compare=foreign.json")
    assert foreign.result.ret == pytest.ExitCode.OK
    foreign.result.stdout.fnmatch_lines(
        ["memstream: warning: cannot read baseline */foreign.json: not a memstream baseline*"]
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--memstream-fail-on-increase=lots"], "--memstream-fail-on-increase got 'lots'"),
        (["--memstream-fail-on-increase=10,big"], "--memstream-fail-on-increase got '10,big'"),
        (["--memstream-fail-on-increase=-5"], "--memstream-fail-on-increase got '-5'"),
        (["--memstream-save=..bad"], "--memstream-save got '..bad'; expected a baseline name"),
        (["--memstream-compare", "a b"], "--memstream-compare got 'a b'"),
    ],
)
def test_bad_baseline_flags_are_rejected(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    result = pytester.runpytest_subprocess("--memstream", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*memstream: {message}*"])


def _report(*tests: tuple[str, int, str]) -> dict[str, object]:
    return {
        "run": {"started": 1.0},
        "tests": [
            {"nodeid": n, "growth": g, "peak_rss": g + 100, "kept": 0, "outcome": o}
            for n, g, o in tests
        ],
    }


def test_comparison_logic() -> None:
    base = baseline_of(
        _report(("a", 10 * MiB, "passed"), ("b", 0, "passed"), ("gone", 1, "passed"))
    )
    assert check_baseline(json.loads(json.dumps(base))) == base
    now = _report(
        ("a", 12 * MiB, "passed"),
        ("a", 30 * MiB, "passed"),  # --dist each: the largest growth stands for the test
        ("b", 5 * MiB, "failed"),
        ("new", 1, "passed"),
        ("c", 9 * MiB, "crashed"),
    )
    comparison = compare(base, now)
    assert [(c.nodeid, c.delta) for c in comparison.changes] == [("a", 20 * MiB), ("b", 5 * MiB)]
    assert comparison.changes[0].percent == pytest.approx(200.0)
    assert comparison.changes[1].percent == float("inf")  # grew from nothing
    assert comparison.new == ["new"]
    assert comparison.gone == ["gone"]
    assert comparison.renamed == []
    assert [c.nodeid for c in comparison.increases(150, MiB)] == ["a", "b"]
    assert [c.nodeid for c in comparison.increases(250, MiB)] == ["b"]
    assert comparison.increases(0, 6 * MiB) == [comparison.changes[0]]


def test_a_test_that_never_finished_is_left_out_of_a_baseline() -> None:
    report = _report(("done", MiB, "passed"), ("interrupted", MiB, "passed"))
    report["tests"][1]["kept"] = None  # type: ignore[index]
    base = baseline_of(report)
    assert list(base["tests"]) == ["done"]
    assert check_baseline(json.loads(json.dumps(base))) == base
    # Nor is it compared, nor listed as gone: it is in the run, without figures to compare.
    comparison = compare(baseline_of(_report(("interrupted", MiB, "passed"))), report)
    assert (comparison.changes, comparison.new, comparison.gone) == ([], ["done"], [])


@pytest.mark.parametrize(
    "raw",
    [[], {"schema": "pytest-memstream/1"}, {"schema": SCHEMA, "tests": {"a": {"growth": 1}}}],
)
def test_foreign_baselines_are_refused(raw: object) -> None:
    with pytest.raises(BaselineError):
        check_baseline(raw)


def test_a_run_that_stopped_early_is_not_saved(
    pytester: pytest.Pytester, run_memstream: RunMemstream
) -> None:
    pytester.makepyfile(test_suite=suite(20), test_zz="def test_fails():\n    assert False\n")
    run = run_memstream("-x", "--memstream-save", "-p", "no:xdist")
    assert run.result.ret == pytest.ExitCode.TESTS_FAILED
    run.result.stdout.fnmatch_lines(
        [
            "memstream: warning: baseline 'default' not saved: the run is not complete "
            "(stopping after 1 failures)"
        ]
    )
    assert "baseline saved" not in run.output
    later = run_memstream("--memstream-compare", "-k", "not fails")
    later.result.stdout.fnmatch_lines(["memstream: warning: no baseline 'default' to compare*"])


def test_without_the_cache_a_name_cannot_be_saved_but_a_path_can(
    pytester: pytest.Pytester, run_memstream: RunMemstream
) -> None:
    pytester.makepyfile(test_suite=suite(20))
    named = run_memstream("-p", "no:cacheprovider", "--memstream-save=nightly")
    assert named.result.ret == pytest.ExitCode.OK
    named.result.stdout.fnmatch_lines(
        ["memstream: warning: could not save baseline 'nightly': the pytest cache is off*"]
    )
    run_memstream("-p", "no:cacheprovider", "--memstream-save=nightly.json")
    assert json.loads((pytester.path / "nightly.json").read_text())["schema"] == SCHEMA


def test_one_gone_and_one_new_in_a_file_is_a_rename_never_a_failure() -> None:
    base = baseline_of(
        _report(("f.py::old", MiB, "passed"), ("g.py::x", 0, "passed"), ("g.py::y", 0, "passed"))
    )
    now = _report(
        ("f.py::new", 90 * MiB, "passed"),
        ("g.py::z", 0, "passed"),
        ("h.py::fresh", 0, "passed"),
    )
    comparison = compare(base, now)
    assert [(old, c.nodeid, c.delta) for old, c in comparison.renamed] == [
        ("f.py::old", "f.py::new", 89 * MiB)
    ]
    # g.py lost two and gained one: no guess.
    assert comparison.gone == ["g.py::x", "g.py::y"]
    assert comparison.new == ["g.py::z", "h.py::fresh"]
    assert comparison.increases(0, 0) == []


def percent_column(lines: list[str]) -> dict[str, str]:
    """Test -> what the comparison's % column says of it (the rows past the header)."""
    footer = next(n for n, line in enumerate(lines) if line.startswith("memstream:"))
    return {row[38:]: row[30:36].strip() for row in lines[1:footer]}


def test_percentages_never_read_minus_zero_nor_new() -> None:
    base = baseline_of(
        _report(
            ("drop", 100 * MiB, "passed"),
            ("rise", 100 * MiB, "passed"),
            ("half", 10 * MiB, "passed"),
            ("idle", 0, "passed"),
        )
    )
    now = _report(
        ("drop", 100 * MiB - 300 * 1024, "passed"),  # -0.3%
        ("rise", 100 * MiB + 300 * 1024, "passed"),
        ("half", 5 * MiB, "passed"),
        ("idle", 5 * MiB, "passed"),  # no percentage of nothing
        ("fresh", MiB, "passed"),
    )
    comparison = compare(base, now)
    lines = comparison_lines(comparison, 0)
    assert percent_column(lines) == {"idle": "from 0", "half": "-50%", "drop": "0%", "rise": "0%"}
    # "new" means one thing: a test the baseline does not have, as the footer counts.
    assert "memstream: 4 tests compared, 1 new, 0 gone" in lines
    assert [line for line in lines if "new" in line] == [lines[-2], "  new: fresh"]
    assert increase_lines(comparison.increases(10, MiB), 10, MiB, "'x'")[1:] == [
        "  idle: growth +0B -> +5.0M (+5.0M, from 0)"
    ]


def test_a_real_comparison_says_from_0_and_never_minus_0(
    pytester: pytest.Pytester, run_memstream: RunMemstream
) -> None:
    pytester.makepyfile(test_suite=suite(20))
    run_memstream("--memstream-save=base.json")
    base_path = pytester.path / "base.json"
    base = json.loads(base_path.read_text())
    base["tests"]["test_suite.py::test_hungry"]["growth"] = 0
    steady = base["tests"]["test_suite.py::test_steady"]
    steady["growth"] = int(steady["growth"] * 1.004)  # about 0.4% less this time
    base_path.write_text(json.dumps(base))
    run = run_memstream("--memstream-compare=base.json", "--memstream-top=0")
    rows = comparison_rows(run.output)
    assert [row.split()[-3:] for row in rows if "test_hungry" in row] == [
        ["from", "0", "test_suite.py::test_hungry"]
    ]
    assert "-0%" not in run.output
    assert not any(" new " in row for row in rows)
    run.result.stdout.fnmatch_lines(["memstream: 3 tests compared, 0 new, 0 gone"])
