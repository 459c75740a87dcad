"""Memory limits: the memstream_limit marker and --memstream-limit, alone and under xdist."""

from __future__ import annotations

from typing import Any

import pytest
from runs import WAIT_UNTIL_STREAMED, RunMemstream

MiB = 1 << 20

XDIST = pytest.mark.parametrize("xdist", [["-n", "0"], ["-n", "2"]], ids=["single", "xdist"])

LIMITED_TESTS = """
import pytest

MiB = 1 << 20
pytestmark = pytest.mark.memstream_limit("60M")


def test_module_limit_exceeded():
    data = b"x" * (120 * MiB)
    del data


@pytest.mark.memstream_limit("500M")
def test_own_marker_wins():
    data = b"x" * (120 * MiB)
    del data


def test_small():
    data = b"x" * (5 * MiB)
    del data


@pytest.mark.memstream_limit("1G")
class TestClassLimit:
    def test_class_limit_allows(self):
        data = b"x" * (120 * MiB)
        del data

    @pytest.mark.memstream_limit("30M")
    def test_method_limit_wins(self):
        data = b"x" * (64 * MiB)
        del data
"""


def outcomes(run: object) -> dict[str, str]:
    tests = run.report["tests"]  # type: ignore[attr-defined]
    return {t["nodeid"].split("::", 1)[1]: t["outcome"] for t in tests}


@XDIST
def test_marker_closest_wins(
    pytester: pytest.Pytester, run_memstream: RunMemstream, xdist: list[str]
) -> None:
    pytester.makepyfile(test_limited=LIMITED_TESTS)
    run = run_memstream(*xdist)
    assert run.result.ret == pytest.ExitCode.TESTS_FAILED
    assert outcomes(run) == {
        "test_module_limit_exceeded": "failed",
        "test_own_marker_wins": "passed",
        "test_small": "passed",
        "TestClassLimit::test_class_limit_allows": "passed",
        "TestClassLimit::test_method_limit_wins": "failed",
    }
    run.result.assert_outcomes(passed=3, failed=2)


GLOBAL_TESTS = """
import pytest

MiB = 1 << 20


def test_big():
    data = b"x" * (120 * MiB)
    del data


def test_small():
    data = b"x" * (5 * MiB)
    del data


@pytest.mark.memstream_limit("1G")
def test_big_but_allowed():
    data = b"x" * (120 * MiB)
    del data
"""


@XDIST
def test_global_limit_from_flag_and_ini(
    pytester: pytest.Pytester, run_memstream: RunMemstream, xdist: list[str]
) -> None:
    pytester.makepyfile(test_global=GLOBAL_TESTS)
    expected = {"test_big": "failed", "test_small": "passed", "test_big_but_allowed": "passed"}
    run = run_memstream(*xdist, "--memstream-limit=60M")
    assert run.result.ret == pytest.ExitCode.TESTS_FAILED
    assert outcomes(run) == expected
    run.result.stdout.fnmatch_lines(["*over its limit of 60.0M on growth (--memstream-limit)*"])

    pytester.makeini("[pytest]\nmemstream_limit = 60M\n")
    assert outcomes(run_memstream(*xdist)) == expected
    # The command line wins over the ini file.
    relaxed = run_memstream(*xdist, "--memstream-limit=1G")
    assert relaxed.result.ret == pytest.ExitCode.OK
    assert set(outcomes(relaxed).values()) == {"passed"}


MARKED_HERE_AND_THERE = """
import pytest

def test_plain():
    pass

def test_marked_by_a_hook():
    pass

@pytest.mark.memstream_limit("2M", on="peak")
def test_own():
    pass

@pytest.mark.memstream_limit(size="bad")
def test_bad():
    pass

@pytest.mark.memstream_limit("4M")
class TestClass:
    def test_inherits(self):
        pass

    @pytest.mark.memstream_limit("5M")
    def test_closest(self):
        pass

    @pytest.mark.parametrize("n", [1, 2])
    def test_param(self, n):
        pass
"""


@pytest.mark.parametrize("default", [None, [7 * MiB, "growth"], [7 * MiB, "tree"]])
def test_limits_are_found_once_per_parent_as_each_test_would_find_its_own(
    pytester: pytest.Pytester, default: list[Any] | None
) -> None:
    from pytest_memstream.plugin.limits import limit_of, limits_of

    pytester.makeconftest(
        """
        import pytest

        def pytest_collection_modifyitems(items):
            for item in items:
                if item.name == "test_marked_by_a_hook":
                    item.add_marker(pytest.mark.memstream_limit("3M"))
        """
    )
    pytester.makepyfile(
        test_marked=MARKED_HERE_AND_THERE,
        test_other="def test_other(): pass",
        test_module=(
            "import pytest\n"
            "pytestmark = pytest.mark.memstream_limit('6M')\n"
            "def test_in_module(): pass\n"
            "class TestDeeper:\n"
            "    def test_in_class(self): pass\n"
        ),
    )
    items, _ = pytester.inline_genitems()
    assert len(items) == 11
    expected_limits, expected_problems = {}, {}
    for item in items:
        try:
            limit = limit_of(item, default)
        except ValueError as exc:
            expected_problems[item.nodeid] = str(exc)
            continue
        if limit is not None:
            expected_limits[item.nodeid] = limit
    assert limits_of(items, default) == (expected_limits, expected_problems)
    assert len(expected_limits) == (8 if default is None else 10)
    assert list(expected_problems) == ["test_marked.py::test_bad"]


def test_no_limit_no_failure(pytester: pytest.Pytester, run_memstream: RunMemstream) -> None:
    pytester.makepyfile(test_global=GLOBAL_TESTS)
    run = run_memstream()
    assert run.result.ret == pytest.ExitCode.OK
    # Without --memstream the marker does nothing at all.
    plain = pytester.runpytest_subprocess("-p", "no:randomly", "--memstream-limit=1M")
    plain.assert_outcomes(passed=3)


@XDIST
def test_failure_message_gives_limit_figure_phase_and_phases(
    pytester: pytest.Pytester, run_memstream: RunMemstream, xdist: list[str]
) -> None:
    pytester.makepyfile(
        test_message="""
        import pytest

        @pytest.fixture
        def buffer():
            yield b"f" * (40 << 20)

        @pytest.mark.memstream_limit("100M")
        def test_hungry(buffer):
            data = b"x" * (150 << 20)
            del data
        """
    )
    run = run_memstream(*xdist)
    assert run.result.ret == pytest.ExitCode.TESTS_FAILED
    growth = run.test("test_hungry")["growth"]
    assert growth > 150 * MiB
    run.result.stdout.re_match_lines(
        [
            r"_+ test_hungry _+",
            r"memstream: test_message.py::test_hungry grew by \+(1[5-9]\d|2\d\d)\.\dM in call, "
            r"over its limit of 100.0M on growth \(@pytest.mark.memstream_limit\)",
            r"  setup +RSS [\d.]+M -> [\d.]+M, peak [\d.]+M \(\+(3\d|4\d)\.\dM from the start "
            r"of setup\), [\d.]+s",
            r"  call +RSS [\d.]+M -> [\d.]+M, peak [\d.]+M \(\+(1[5-9]\d|2\d\d)\.\dM from the "
            r"start of setup\), [\d.]+s",
        ]
    )
    # pytest 9 puts a failure's text (a plain string here) in the short summary too.
    summary = " - memstream: *" if int(pytest.__version__.split(".")[0]) >= 9 else ""
    run.result.stdout.fnmatch_lines([f"FAILED test_message.py::test_hungry{summary}"])


def test_teardown_over_the_limit_is_an_error_at_teardown(
    pytester: pytest.Pytester, run_memstream: RunMemstream
) -> None:
    pytester.makepyfile(
        test_teardown="""
        import pytest

        @pytest.fixture
        def messy():
            yield
            data = b"t" * (120 << 20)
            del data

        @pytest.mark.memstream_limit("60M")
        def test_clean_call(messy):
            pass
        """
    )
    run = run_memstream()
    assert run.result.ret == pytest.ExitCode.TESTS_FAILED
    run.result.assert_outcomes(passed=1, errors=1)
    run.result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_clean_call*",
            "memstream: test_teardown.py::test_clean_call grew by +1*M in teardown, "
            "over its limit of 60.0M on growth*",
        ]
    )


def test_a_limited_test_is_measured_to_the_end_of_its_teardown_too(
    pytester: pytest.Pytester, run_memstream: RunMemstream
) -> None:
    # The limit is checked as pytest reports the teardown; the teardown's figures go on
    # to where pytest lets go of the test's fixture values, as for any test.
    pytester.makepyfile(
        test_held="""
        import pytest

        @pytest.fixture
        def big():
            data = b"b" * (80 << 20)
            yield data
            spike = b"s" * (40 << 20)
            del spike

        @pytest.mark.memstream_limit("500M")
        def test_holds(big):
            pass
        """
    )
    run = run_memstream()
    assert run.result.ret == pytest.ExitCode.OK
    held = run.test("test_holds")
    teardown = held["phases"]["teardown"]
    assert teardown["peak_rss"] - teardown["rss_before"] >= 39 * MiB
    assert teardown["rss_before"] - teardown["rss_after"] >= 79 * MiB
    assert abs(held["kept"]) < 8 * MiB


def test_a_failing_test_over_its_limit_says_so_too(
    pytester: pytest.Pytester, run_memstream: RunMemstream
) -> None:
    pytester.makepyfile(
        test_both="""
        import pytest

        @pytest.mark.memstream_limit("60M")
        def test_fails_and_hungry():
            data = b"x" * (120 << 20)
            assert not data
        """
    )
    run = run_memstream()
    run.result.assert_outcomes(failed=1)
    run.result.stdout.fnmatch_lines(
        ["*memstream limit*", "memstream: test_both.py::test_fails_and_hungry grew by *"]
    )


@XDIST
def test_limit_on_peak(
    pytester: pytest.Pytester, run_memstream: RunMemstream, xdist: list[str]
) -> None:
    pytester.makepyfile(
        test_peak="""
        import pytest

        @pytest.mark.memstream_limit("8G", on="peak")
        def test_under_peak_limit():
            data = b"x" * (120 << 20)
            del data

        # Any pytest process is bigger than 1 MiB: the absolute peak is over, the growth not.
        @pytest.mark.memstream_limit(size="1M", on="peak")
        def test_over_peak_limit():
            pass
        """
    )
    run = run_memstream(*xdist)
    assert outcomes(run) == {"test_under_peak_limit": "passed", "test_over_peak_limit": "failed"}
    run.result.stdout.fnmatch_lines(
        [
            "memstream: test_peak.py::test_over_peak_limit reached a peak RSS of *M in *, "
            "over its limit of 1.0M on peak (@pytest.mark.memstream_limit)"
        ]
    )


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ('"lots"', "'lots' is not a size*"),
        ("", "a size is required*"),
        ('"10M", on="rss"', "on must be 'growth' or 'peak', got 'rss'"),
        ('"10M", limit=1', "unknown argument 'limit'*"),
        ("0", "size must be above 0, got 0"),
        ("[1]", "size must be a string such as '200M' or a number of bytes, not [[]1[]]"),
    ],
)
def test_bad_marker_is_an_error_naming_the_test(
    pytester: pytest.Pytester, run_memstream: RunMemstream, marker: str, message: str
) -> None:
    pytester.makepyfile(
        test_bad=f"""
        import pytest

        @pytest.mark.memstream_limit({marker})
        def test_badly_marked():
            pass

        def test_fine():
            pass
        """
    )
    run = run_memstream("-n", "2")
    run.result.assert_outcomes(passed=1, errors=1)
    run.result.stdout.fnmatch_lines(
        [f"memstream: bad memstream_limit marker on test_bad.py::test_badly_marked: {message}"]
    )


def test_bad_limit_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--memstream", "--memstream-limit=lots")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*memstream: --memstream-limit got 'lots'; expected a size above 0 such as 200M*"]
    )
    ini = pytester.makeini("[pytest]\nmemstream = true\nmemstream_limit = 0\n")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*memstream: ini key memstream_limit in {ini} got '0'*"])


def test_marker_is_listed_with_its_docstring(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(
        ['@pytest.mark.memstream_limit(size, on="growth"): fail the test when its memory growth*']
    )
    strict = pytester.makepyfile(
        test_strict="""
        import pytest

        @pytest.mark.memstream_limit("1G")
        def test_marked():
            pass
        """
    )
    pytester.runpytest_subprocess("--strict-markers", str(strict)).assert_outcomes(passed=1)


CRASH_OVER_LIMIT = (
    """
import os, time
import pytest

MiB = 1 << 20
KEPT = []

"""
    + WAIT_UNTIL_STREAMED
    + """

@pytest.mark.memstream_limit("100M")
def test_dies_over_limit(request):
    for _ in range(4):
        KEPT.append(b"c" * (40 * MiB))
        wait_until_streamed(request, 2)
    os._exit(3)
"""
)


@pytest.mark.slow
def test_crashed_test_over_its_limit_says_so(
    pytester: pytest.Pytester, run_memstream: RunMemstream
) -> None:
    pytester.makepyfile(test_crash_limit=CRASH_OVER_LIMIT)
    run = run_memstream("-n", "2", "--dist=load", "--memstream-interval=0.05")
    crashed = run.test("test_dies_over_limit")
    assert crashed["outcome"] == "crashed"
    assert crashed["limit"] == {"size": 100 * MiB, "on": "growth"}
    run.result.stdout.re_match_lines(
        [
            r"memstream: worker gw\d crashed while running test_crash_limit.py::"
            r"test_dies_over_limit \(.*\); OVER its limit of 100.0M on growth \(\d+\.\dM\)"
        ]
    )


SLOW_CLIMB = """
import time
import pytest

MiB = 1 << 20


def wait_for_samples(request, count):
    # A condition with a deadline: the sampler has seen this test ``count`` more times.
    stream = request.config.pluginmanager.get_plugin("memstream-recorder").stream
    target, deadline = len(stream.recent) + count, time.monotonic() + 60
    while len(stream.recent) < min(target, stream.recent.maxlen):
        assert time.monotonic() < deadline, "the sampler did not sample for 60 s"
        time.sleep(0.005)


@pytest.mark.memstream_limit("50M")
def test_climbs(request):
    kept = []
    for _ in range(4):
        kept.append(b"c" * (30 * MiB))
        wait_for_samples(request, 1)
"""


@XDIST
def test_failure_message_shows_the_live_samples(
    pytester: pytest.Pytester, run_memstream: RunMemstream, xdist: list[str]
) -> None:
    pytester.makepyfile(test_climb=SLOW_CLIMB)
    run = run_memstream(*xdist, "--memstream-interval=0.02")
    run.result.assert_outcomes(failed=1)
    run.result.stdout.re_match_lines(
        [
            r"memstream: test_climb.py::test_climbs grew by \+1\d\d\.\dM in call, over its "
            r"limit of 50.0M on growth .*",
            r"  call +RSS .*",
            r" {11}samples( \d+\.\dM){4,}$",
        ]
    )
    # The last samples line is the call's (setup may have one too, if it was sampled).
    samples = [line for line in run.output.splitlines() if "  samples " in line][-1]
    values = [float(v.rstrip("M")) for v in samples.split()[1:]]
    assert max(values) - min(values) >= 80  # the climb, seen while it happened


LOUD_THEN_QUIET = """
import pytest


def test_a_loud():
    print("x" * (60 << 20))


@pytest.mark.memstream_limit("20M")
def test_b_quiet():
    pass
"""


@pytest.mark.parametrize("xdist", [["-n", "0"], ["-n", "1"]], ids=["single", "xdist"])
def test_what_happens_between_two_tests_counts_against_neither(
    pytester: pytest.Pytester, run_memstream: RunMemstream, xdist: list[str]
) -> None:
    # pytest (and xdist) report the loud test's 60 MiB of output after its teardown: the
    # quiet test that runs next must not be charged for it, let alone fail its limit.
    pytester.makepyfile(test_loud=LOUD_THEN_QUIET)
    run = run_memstream(*xdist)
    assert run.result.ret == pytest.ExitCode.OK
    quiet = run.test("test_b_quiet")
    assert quiet["outcome"] == "passed"
    assert quiet["growth"] < 8 * MiB
    assert abs(quiet["kept"]) < 8 * MiB
    # The loud test's own figures hold its output (the string, and pytest's capture of it).
    assert run.test("test_a_loud")["growth"] >= 60 * MiB


@XDIST
def test_a_marker_added_while_collecting_counts_with_and_without_xdist(
    pytester: pytest.Pytester, run_memstream: RunMemstream, xdist: list[str]
) -> None:
    # Limits are read once the collection is final: a marker that a conftest found while
    # collecting adds in its own modifyitems applies, alone as under xdist.
    sub = pytester.mkpydir("sub")
    (sub / "conftest.py").write_text(
        "import pytest\n\n"
        "@pytest.hookimpl(trylast=True)\n"
        "def pytest_collection_modifyitems(items):\n"
        "    for item in items:\n"
        '        item.add_marker(pytest.mark.memstream_limit("30M"))\n'
    )
    (sub / "test_grows.py").write_text(
        "def test_grows():\n    data = b'x' * (80 << 20)\n    del data\n"
    )
    run = run_memstream(*xdist)  # sub/conftest.py is found while collecting, after us
    assert run.test("test_grows")["outcome"] == "failed"
    run.result.stdout.fnmatch_lines(["*over its limit of 30.0M on growth*"])
