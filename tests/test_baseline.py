"""Baselines: save a run's figures, compare a later run with them, fail on an increase."""

from __future__ import annotations

import json
from typing import Any

import pytest
from runs import RunMemstream, table_rows

from pytest_memstream.collector.baseline import (
    SCHEMA,
    Baseline,
    BaselineError,
    check_baseline,
    compare,
    comparison_lines,
    increase_lines,
    with_run,
)

MiB = 1 << 20


def one_run(report: dict[str, Any]) -> Baseline:
    """The baseline of ``report`` alone."""
    return with_run(None, report, 1)


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
            "memstream: baseline saved as 'default' in the pytest cache (1 of at most 5 runs)",
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
            r"memstream: FAILED: 1 test grew by more than 50% and more than 3\.0M against "
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
    saving.stdout.fnmatch_lines(
        [f"memstream: baseline saved to {pytester.path / 'base/run.json'} (1 of at most 5 runs)"]
    )
    saved = json.loads((pytester.path / "base" / "run.json").read_text())
    assert saved["schema"] == SCHEMA
    assert set(saved["tests"]) == {
        "test_suite.py::test_hungry",
        "test_suite.py::test_steady",
        "test_suite.py::test_old",
    }
    assert saved["tests"]["test_suite.py::test_hungry"]["growth"][0] > 15 * MiB
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
    base = one_run(_report(("a", 10 * MiB, "passed"), ("b", 0, "passed"), ("gone", 1, "passed")))
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
    base = one_run(report)
    assert list(base["tests"]) == ["done"]
    assert check_baseline(json.loads(json.dumps(base))) == base
    # Nor is it compared, nor listed as gone: it is in the run, without figures to compare.
    comparison = compare(one_run(_report(("interrupted", MiB, "passed"))), report)
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
    base = one_run(
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
    base = one_run(
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
    base["tests"]["test_suite.py::test_hungry"]["growth"] = [0]
    steady = base["tests"]["test_suite.py::test_steady"]
    steady["growth"] = [int(steady["growth"][0] * 1.004)]  # about 0.4% less this time
    base_path.write_text(json.dumps(base))
    run = run_memstream("--memstream-compare=base.json", "--memstream-top=0")
    rows = comparison_rows(run.output)
    assert [row.split()[-3:] for row in rows if "test_hungry" in row] == [
        ["from", "0", "test_suite.py::test_hungry"]
    ]
    assert "-0%" not in run.output
    assert not any(" new " in row for row in rows)
    run.result.stdout.fnmatch_lines(["memstream: 3 tests compared, 0 new, 0 gone"])


NOISY_SUITE = """
import random

MiB = 1 << 20


def test_jitter():
    data = b"j" * random.randrange(0, int(1.5 * MiB))  # 0 to 1.5 MiB, differently each run
    del data


def test_other():
    data = b"o" * ({other_mib} * MiB)
    del data
"""


def test_noise_passes_five_compared_runs_and_a_regression_fails(
    pytester: pytest.Pytester, run_memstream: RunMemstream
) -> None:
    # The case: compared with a baseline of one run, then of more, a test whose
    # growth is noise within 0-1.5 MiB never fails the run; another's 50 MiB more does.
    pytester.makepyfile(test_noise=NOISY_SUITE.replace("{other_mib}", "10"))
    first = run_memstream("-n", "2", "--memstream-save=ci")
    assert first.result.ret == pytest.ExitCode.OK
    judge = ("--memstream-compare=ci", "--memstream-fail-on-increase=20", "--memstream-save=ci")
    for n in range(5):
        run = run_memstream(*(["-n", "2"] if n % 2 else ["-p", "no:xdist"]), *judge)
        assert run.result.ret == pytest.ExitCode.OK, run.output
        assert "memstream: FAILED" not in run.output
        run.result.stdout.fnmatch_lines(
            [f"memstream: baseline saved as 'ci' in the pytest cache ({min(n + 2, 5)} of *"]
        )
    # Its range over the runs kept, as the comparison shows it.
    rows = comparison_rows(run.output)
    jitter = next(row for row in rows if row.endswith("test_noise.py::test_jitter"))
    assert ".." in jitter.split()[0] or jitter.split()[0] == "+0B"

    pytester.makepyfile(test_noise=NOISY_SUITE.replace("{other_mib}", "60"))
    regressed = run_memstream("-n", "2", *judge)
    assert regressed.result.ret == pytest.ExitCode.TESTS_FAILED
    regressed.result.assert_outcomes(passed=2)
    regressed.result.stdout.re_match_lines(
        [
            r"memstream: FAILED: 1 test grew by more than 20% and more than 3\.0M against "
            r"baseline 'ci':",
            r"  test_noise\.py::test_other: growth \+[\d.]+M(\.\.\+[\d.]+M)? -> \+\d\d\.\dM "
            r"\(\+\d\d\.\dM, \+\d+%\)",
        ]
    )
    assert "test_jitter: growth" not in regressed.output


def test_a_baseline_keeps_its_last_runs_and_shows_their_range(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=suite(20))
    pytester.makeini(
        "[pytest]\nmemstream = true\nmemstream_save = base.json\nmemstream_baseline_runs = 3\n"
    )
    for hungry in (20, 24, 28, 32):
        pytester.makepyfile(test_suite=suite(hungry))
        assert pytester.runpytest_subprocess("-p", "no:randomly").ret == pytest.ExitCode.OK
    saved = json.loads((pytester.path / "base.json").read_text())
    assert saved["schema"] == SCHEMA == "pytest-memstream-baseline/2"
    assert len(saved["runs"]) == 3  # the oldest of four dropped
    growth = saved["tests"]["test_suite.py::test_hungry"]["growth"]
    assert [round(g / MiB) for g in growth] == [24, 28, 32]

    pytester.makepyfile(test_suite=suite(20))
    result = pytester.runpytest_subprocess(
        "-p", "no:randomly", "--memstream-compare=base.json", "--memstream-save=other.json"
    )
    result.stdout.fnmatch_lines(["*memstream: growth against baseline */base.json (3 runs)*"])
    rows = comparison_rows("\n".join(result.outlines))
    hungry_row = next(row for row in rows if row.endswith("test_hungry"))
    low, high = hungry_row.split()[0].split("..")
    assert (round(float(low.strip("+M"))), round(float(high.strip("+M")))) == (24, 32)
    # 20 MiB is below its range: the change and percentage are from its bottom, 24 MiB.
    assert hungry_row.split()[3] in ("-15%", "-16%", "-17%", "-18%")


def test_a_version_1_baseline_is_read_as_one_run(
    pytester: pytest.Pytester, run_memstream: RunMemstream
) -> None:
    pytester.makepyfile(test_suite=suite(20))
    old = {
        "schema": "pytest-memstream-baseline/1",
        "started": 1.0,
        "tests": {
            "test_suite.py::test_hungry": {"growth": 5 * MiB, "peak_rss": 50 * MiB, "kept": 0},
            "test_suite.py::test_steady": {"growth": 30 * MiB, "peak_rss": 70 * MiB, "kept": 0},
        },
    }
    (pytester.path / "old.json").write_text(json.dumps(old))
    run = run_memstream(
        "--memstream-compare=old.json",
        "--memstream-save=old.json",
        "--memstream-fail-on-increase=100",
    )
    assert run.result.ret == pytest.ExitCode.TESTS_FAILED
    run.result.stdout.fnmatch_lines(
        [
            "*memstream: growth against baseline */old.json (1 run)*",
            "memstream: FAILED: 1 test grew by more than 100% and more than 3.0M against*",
            "  test_suite.py::test_hungry: growth +5.0M -> +*",
        ]
    )
    saved = json.loads((pytester.path / "old.json").read_text())
    assert saved["schema"] == SCHEMA
    assert saved["runs"][0]["started"] == 1.0
    assert saved["tests"]["test_suite.py::test_hungry"]["growth"][0] == 5 * MiB
    assert saved["tests"]["test_suite.py::test_old"]["growth"][0] is None  # not in run 1


def _history(*growths: int) -> dict[str, object]:
    base = None
    for growth in growths:
        report = _report(("t", growth, "passed"))
        base = with_run(base, report, 5)
    assert base is not None
    return base


def test_a_test_is_judged_against_the_spread_of_its_own_history() -> None:
    noisy = _history(10 * MiB, 14 * MiB, 12 * MiB)  # a range of 4 MiB
    assert check_baseline(json.loads(json.dumps(noisy))) == noisy

    def judged(now: int) -> list[str]:
        comparison = compare(noisy, _report(("t", now, "passed")))
        return [c.nodeid for c in comparison.increases(20, 3 * MiB)]

    assert judged(13 * MiB) == []  # within its range
    assert judged(21 * MiB) == []  # 7 MiB above it: within twice its spread of 4 MiB
    assert judged(23 * MiB) == ["t"]  # 9 MiB above it
    within = compare(noisy, _report(("t", 13 * MiB, "passed")))
    assert comparison_lines(within, 0)[1].split()[:4] == [
        "+10.0M..+14.0M",
        "+13.0M",
        "+0B",
        "within",
    ]
    # One run has no spread: the floor alone carries it.
    single = _history(10 * MiB)
    assert [c.delta for c in compare(single, _report(("t", 12 * MiB, "passed"))).changes] == [
        2 * MiB
    ]
    assert compare(single, _report(("t", 12 * MiB, "passed"))).increases(0, 3 * MiB) == []
    assert compare(single, _report(("t", 14 * MiB, "passed"))).increases(0, 3 * MiB) != []


def test_runs_past_the_limit_are_dropped_and_so_are_tests_none_of_them_ran() -> None:
    base = with_run(None, _report(("gone", MiB, "passed"), ("kept", MiB, "passed")), 2)
    base = with_run(base, _report(("kept", 2 * MiB, "passed")), 2)
    assert base["tests"]["gone"]["growth"] == [MiB, None]
    base = with_run(base, _report(("kept", 3 * MiB, "passed"), ("new", 0, "passed")), 2)
    assert list(base["tests"]) == ["kept", "new"]
    assert base["tests"]["kept"]["growth"] == [2 * MiB, 3 * MiB]
    assert base["tests"]["new"]["growth"] == [None, 0]
    assert len(base["runs"]) == 2
    assert check_baseline(json.loads(json.dumps(base))) == base


@pytest.mark.parametrize("value", ["0", "101", "many"])
def test_bad_baseline_runs_are_a_usage_error(pytester: pytest.Pytester, value: str) -> None:
    pytester.makeini(f"[pytest]\nmemstream_baseline_runs = {value}\n")
    result = pytester.runpytest_subprocess("--memstream")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            f"*memstream: ini key memstream_baseline_runs in * got '{value}'; expected a whole "
            "number of runs from 1 to 100*"
        ]
    )


@pytest.mark.parametrize("flag", ["--memstream-save", "--memstream-compare"])
@pytest.mark.parametrize(
    "target", ["tests/test_x.py", "tests", "tests/test_x.py::test_one", "tests/"]
)
def test_a_test_path_after_an_optional_name_stays_a_test_path(
    pytester: pytest.Pytester, flag: str, target: str
) -> None:
    # pytest --memstream --memstream-save tests/test_x.py: that file's tests, as 'default'.
    pytester.makepyfile(**{"tests/test_x": "def test_one():\n    pass\n"})
    pytester.makepyfile(test_elsewhere="def test_two():\n    pass\n")
    result = pytester.runpytest_subprocess("--memstream", "-p", "no:randomly", flag, target)
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1)
    output = "\n".join(result.outlines)
    assert "test_two" not in output
    if flag == "--memstream-save":
        result.stdout.fnmatch_lines(["memstream: baseline saved as 'default' in the pytest cache*"])
    else:
        result.stdout.fnmatch_lines(["memstream: warning: no baseline 'default' to compare*"])


def test_from_addopts_too_and_a_baseline_file_stays_a_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(**{"tests/test_x": "def test_one():\n    pass\n"})
    pytester.makepyfile(test_elsewhere="def test_two():\n    pass\n")
    pytester.makeini("[pytest]\naddopts = --memstream --memstream-save\n")
    from_addopts = pytester.runpytest_subprocess("-p", "no:randomly", "tests")
    from_addopts.assert_outcomes(passed=1)
    from_addopts.stdout.fnmatch_lines(["memstream: baseline saved as 'default'*"])
    # A .json file is a baseline, existing or not; so is a name with a separator.
    (pytester.path / "base.json").write_text("{}")
    for name in ("base.json", "out/new.json", "out/plain"):
        result = pytester.runpytest_subprocess("--memstream-save", name, "-p", "no:randomly")
        result.assert_outcomes(passed=2)
        result.stdout.fnmatch_lines([f"memstream: baseline saved to {pytester.path / name} (*"])


@pytest.mark.parametrize("value", ["tests/test_x.py", "test_x.py::test_one"])
def test_a_baseline_never_overwrites_a_test_file(pytester: pytest.Pytester, value: str) -> None:
    result = pytester.runpytest_subprocess("--memstream", f"--memstream-save={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"*memstream: --memstream-save got '{value}'; expected a baseline name*not a test file*"]
    )
