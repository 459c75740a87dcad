"""What a user sees for real tests: figures, outcomes and workers, alone and under xdist."""

from __future__ import annotations

import itertools

import pytest
from runs import MEMORY_TESTS, NEEDS_XDIST_3_2, RunMemstream

MiB = 1 << 20


@pytest.fixture(autouse=True)
def memory_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_memory=MEMORY_TESTS)


def check_memory_figures(run_memstream: RunMemstream, *args: str, worker: str) -> None:
    run = run_memstream(*args)
    spike = run.test("test_spike")
    assert spike["worker"] == worker if worker != "gw" else spike["worker"].startswith("gw")
    assert spike["peak_method"] == "hwm"
    assert spike["peak_phase"] == "call"
    # 300 MiB that live for a few milliseconds: the kernel's high-water mark sees them.
    assert 300 * MiB * 0.97 <= spike["growth"] <= 300 * MiB * 1.1
    assert abs(spike["kept"]) < 8 * MiB

    keeps = run.test("test_keeps")
    assert 40 * MiB * 0.97 <= keeps["kept"] <= 40 * MiB * 1.1

    fixture = run.test("test_fixture_cost")
    assert fixture["phases"]["setup"]["rss_after"] - fixture["rss_start"] >= 63 * MiB
    assert fixture["phases"]["teardown"]["rss_after"] < fixture["phases"]["setup"]["rss_after"]

    assert run.test("test_fails")["outcome"] == "failed"
    assert run.test("test_skipped")["outcome"] == "skipped"
    assert run.test("test_skipped")["phases"].keys() == {"setup", "teardown"}
    unit = run.test("TestCaseStyle::test_unittest")
    assert unit["growth"] >= 31 * MiB
    assert unit["outcome"] == "passed"
    assert {t["source"] for t in run.report["tests"]} == {"stream"}
    assert len(run.report["tests"]) == 6
    for test in run.report["tests"]:
        # Each phase starts at the boundary where the one before it ended.
        ran = [
            test["phases"][name] for name in ("setup", "call", "teardown") if name in test["phases"]
        ]
        assert all(b["rss_before"] == a["rss_after"] for a, b in itertools.pairwise(ran))
    run.result.stdout.fnmatch_lines(["*memstream: top 5 tests by memory growth*"])
    run.result.stdout.re_match_lines([r"\s*\+(29\d|30\d)\.\dM .* test_memory.py::test_spike$"])


def test_single_process(run_memstream: RunMemstream) -> None:
    check_memory_figures(run_memstream, "-p", "no:xdist", worker="main")


@pytest.mark.parametrize(
    "dist", ["load", "loadscope", "loadfile", pytest.param("worksteal", marks=NEEDS_XDIST_3_2)]
)
def test_xdist(run_memstream: RunMemstream, dist: str) -> None:
    check_memory_figures(run_memstream, "-n", "2", f"--dist={dist}", worker="gw")


XDIST = pytest.mark.parametrize("xdist", [["-n", "0"], ["-n", "1"]], ids=["single", "xdist"])


@XDIST
def test_a_fixture_value_is_held_not_kept(
    pytester: pytest.Pytester, run_memstream: RunMemstream, xdist: list[str]
) -> None:
    # pytest lets go of a test's fixture values only after the teardown hooks: the test
    # held the 80 MiB, it did not keep them, and the test after it starts without them.
    pytester.makepyfile(
        test_held="""
        import pytest

        @pytest.fixture
        def big():
            return b"b" * (80 << 20)

        def test_a_holds(big):
            assert len(big) == 80 << 20

        def test_b_after():
            pass
        """
    )
    run = run_memstream(*xdist)
    held = run.test("test_a_holds")
    assert held["growth"] >= 79 * MiB
    assert abs(held["kept"]) < 8 * MiB
    teardown = held["phases"]["teardown"]
    assert teardown["rss_before"] - teardown["rss_after"] >= 79 * MiB
    after = run.test("test_b_after")
    assert after["rss_start"] <= held["rss_start"] + 8 * MiB
    assert after["growth"] < 8 * MiB


RERUN_TWICE = """
import pytest
from _pytest.runner import runtestprotocol


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    # What pytest-rerunfailures does: the protocol again, inside this hook.
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    for run in (1, 2):
        item.execution_count = run
        reports = runtestprotocol(item, nextitem=nextitem, log=False)
    for report in reports:
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True
"""


@XDIST
def test_a_rerun_is_measured_from_where_the_last_run_ended(
    pytester: pytest.Pytester, run_memstream: RunMemstream, xdist: list[str]
) -> None:
    pytester.makeconftest(RERUN_TWICE)
    pytester.makepyfile(
        test_rerun="""
        import pytest

        KEPT = []

        @pytest.fixture
        def leaky(request):
            yield
            if request.node.execution_count == 1:
                KEPT.append(b"r" * (40 << 20))

        def test_a_before():
            pass

        def test_b_rerun(leaky):
            pass
        """
    )
    run = run_memstream(*xdist, "test_rerun.py")
    assert run.result.ret == pytest.ExitCode.OK
    before, rerun = run.test("test_a_before"), run.test("test_b_rerun")
    phases = rerun["phases"]
    # The first run's teardown kept 40 MiB: the last run starts above them...
    assert phases["setup"]["rss_before"] - before["rss_end"] >= 39 * MiB
    # ...and its figures are its own: the 40 MiB are behind it, not in its setup.
    assert phases["setup"]["rss_after"] - phases["setup"]["rss_before"] < 8 * MiB
    assert phases["setup"]["peak_rss"] - phases["setup"]["rss_before"] < 8 * MiB
    assert abs(phases["teardown"]["rss_after"] - phases["teardown"]["rss_before"]) < 8 * MiB


def test_xdist_each_measures_every_test_once_per_worker(run_memstream: RunMemstream) -> None:
    run = run_memstream("-n", "2", "--dist=each")
    assert len(run.report["tests"]) == 12
    for worker in ("gw0", "gw1"):
        assert run.test("test_spike", worker=worker)["growth"] >= 290 * MiB
    assert sorted(w["id"] for w in run.report["workers"]) == ["gw0", "gw1"]
    assert all(w["tests"] == 6 and w["status"] == "complete" for w in run.report["workers"])


def test_doctest_items_are_measured(pytester: pytest.Pytester, run_memstream: RunMemstream) -> None:
    pytester.makepyfile(
        textmod='''
        def grow():
            """
            >>> len(b"d" * (24 << 20))
            25165824
            """
        '''
    )
    run = run_memstream("--doctest-modules", "textmod.py")
    doctest = run.test("textmod.grow")
    assert doctest["growth"] >= 23 * MiB
    assert doctest["outcome"] == "passed"


def test_worker_totals_agree_with_the_stream(run_memstream: RunMemstream) -> None:
    run = run_memstream("-n", "2")
    workers = run.report["workers"]
    assert sum(w["tests"] for w in workers) == 6
    for w in workers:
        assert w["status"] == "complete"
        assert w["lost"] == w["dropped"] == w["recovered"] == w["unrecoverable"] == 0
        assert w["messages"] > 0
        assert w["pid"] > 0
    assert run.report["run"]["messages"] == sum(w["messages"] for w in workers)
    run.result.stdout.fnmatch_lines(["memstream: 6 tests on 2 workers, * messages, 0 lost, *"])


def test_a_test_shorter_than_the_interval_costs_one_message(
    pytester: pytest.Pytester, run_memstream: RunMemstream
) -> None:
    # The stream's background thread speaks only for a test that it finds running at two
    # wake-ups in a row: a shorter test is streamed as its end alone, sent by the test's
    # own thread, so that a suite of quick tests never has two threads take turns.
    pytester.makepyfile(
        test_quick="""
        import pytest

        @pytest.mark.parametrize("n", range(200))
        def test_quick(n):
            pass
        """
    )
    interval = 0.2
    run = run_memstream("-n", "2", f"--memstream-interval={interval}", "test_quick.py")
    tests = run.report["tests"]
    assert len(tests) == 200
    if any(t["finished"] - t["started"] >= interval for t in tests):
        pytest.skip("the machine stalled a quick test for a whole interval: nothing to check")
    for worker in run.report["workers"]:
        assert worker["tests"] > 0
        assert worker["messages"] == worker["tests"] + 2, worker  # hello, the ends, bye


def test_a_spike_in_an_early_subtest_counts_for_the_whole_call(
    pytester: pytest.Pytester, run_memstream: RunMemstream
) -> None:
    # pytest reports each subtest while the call is still running: the call's peak is
    # the peak of all of it, not of what came after the last subtest.
    pytester.makepyfile(
        test_sub="""
        import unittest

        class TestSub(unittest.TestCase):
            def test_spike_then_nothing(self):
                with self.subTest("spike"):
                    spike = bytearray(100 << 20)
                    del spike
                for n in range(3):
                    with self.subTest(n=n):
                        pass
        """
    )
    run = run_memstream("-p", "no:xdist", "test_sub.py")
    test = run.test("TestSub::test_spike_then_nothing")
    assert test["peak_phase"] == "call"
    assert test["growth"] >= 95 * MiB
    assert test["phases"]["call"]["peak_rss"] - test["phases"]["call"]["rss_before"] >= 95 * MiB


XFAIL_TESTS = """
import pytest

@pytest.mark.xfail(reason="known bug")
def test_xfails():
    assert False

@pytest.mark.xfail(reason="maybe fixed")
def test_xpasses():
    pass

@pytest.mark.xfail(strict=True)
def test_strict_xpass():
    pass

def test_imperative_xfail():
    pytest.xfail("not yet")

@pytest.mark.xfail(run=False)
def test_not_run():
    pass

@pytest.mark.skip(reason="not today")
def test_skipped():
    pass
"""


@pytest.mark.parametrize("workers", [["-p", "no:xdist"], ["-n", "2"]], ids=["single", "xdist"])
def test_xfail_and_xpass_are_outcomes_of_their_own(
    pytester: pytest.Pytester, run_memstream: RunMemstream, workers: list[str]
) -> None:
    pytester.makepyfile(test_x=XFAIL_TESTS)
    run = run_memstream(*workers, "--memstream-top=0", "test_x.py")
    outcomes = {t["nodeid"].removeprefix("test_x.py::"): t["outcome"] for t in run.report["tests"]}
    # As pytest's own summary counts them: a strict xpass is a failure.
    assert outcomes == {
        "test_xfails": "xfailed",
        "test_xpasses": "xpassed",
        "test_strict_xpass": "failed",
        "test_imperative_xfail": "xfailed",
        "test_not_run": "xfailed",
        "test_skipped": "skipped",
    }
    run.result.stdout.re_match_lines([r".*  test_x.py::test_xfails  \[xfailed\]$"])
    run.result.stdout.re_match_lines([r".*  test_x.py::test_xpasses  \[xpassed\]$"])


def test_one_test_is_counted_as_one(pytester: pytest.Pytester, run_memstream: RunMemstream) -> None:
    pytester.makepyfile(test_one="def test_alone():\n    pass\n")
    run = run_memstream("-p", "no:xdist", "-v", "test_one.py")
    run.result.stdout.fnmatch_lines(
        [
            "*= memstream: top 1 test by memory growth =*",
            "  main * 1 test, * messages, *",
            "memstream: 1 test on 1 worker, *",
        ]
    )
    assert "1 tests" not in run.output
