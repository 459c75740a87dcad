"""The memory of the processes a test starts: real children, forks, pools, grandchildren."""

from __future__ import annotations

import pytest
from runs import MemstreamRun, RunMemstream

MiB = 1 << 20
XDIST = pytest.mark.parametrize("xdist", [["-p", "no:xdist"], ["-n", "2"]], ids=["alone", "xdist"])

#: What two tasks in two processes call to hold their memory at the same time.
TOGETHER = """
import os, time


def hold_together(meet, seconds=0.5):
    # Wait until the other task has come here too (a file each in ``meet``), then hold
    # on for a few sampling intervals.
    open(os.path.join(meet, str(os.getpid())), "w").close()
    deadline = time.monotonic() + 60
    while len(os.listdir(meet)) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(seconds)
"""

CHILDREN = """
import multiprocessing, os, signal, subprocess, sys, time
import pytest
from together import hold_together

MiB = 1 << 20
HOLD = "import sys, time; x = b'x' * ({size} << 20); time.sleep({seconds})"


def python(size, seconds):
    return [sys.executable, "-c", HOLD.format(size=size, seconds=seconds)]


def test_subprocess_held():
    subprocess.run(python(300, 1.0), check=True)


def test_short_child():
    subprocess.run(python(200, 0.05), check=True)


def take(size, meet):
    data = b"w" * (size * MiB)
    hold_together(meet)  # with the pool's other process, since this one is busy
    return len(data)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pool(method, tmp_path):
    # The worker's own 300 MiB: a fork shares them, and must not count them again.
    held = b"h" * (300 * MiB)
    with multiprocessing.get_context(method).Pool(2) as pool:
        sizes = [(150, str(tmp_path))] * 2
        assert pool.starmap(take, sizes, chunksize=1) == [150 * MiB] * 2
    del held


def test_grandchild():
    inner = f"import subprocess; subprocess.run({python(200, 1.0)!r})"
    subprocess.run([sys.executable, "-c", inner], check=True)


def test_killed_child():
    ready = "import sys, time; x = b'x' * (120 << 20); print(flush=True); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", ready], stdout=subprocess.PIPE)
    child.stdout.readline()  # it holds its 120 MiB now
    time.sleep(0.5)  # for the sampler to read it a few times: its last figures
    child.kill()
    child.wait()
    child.stdout.close()

"""


NO_CHILD = """
import pytest

MiB = 1 << 20


@pytest.mark.parametrize("n", range(4))
def test_no_child(n):
    data = b"n" * (20 * MiB)
    del data
"""


@XDIST
def test_a_test_that_starts_no_process_is_its_worker_alone(
    pytester: pytest.Pytester, run_memstream: RunMemstream, xdist: list[str]
) -> None:
    # A suite of its own: a process an earlier test left (multiprocessing's resource
    # tracker) is a child of the worker for the rest of its life.
    pytester.makepyfile(test_none=NO_CHILD)
    run = run_memstream(*xdist)
    assert run.result.ret == pytest.ExitCode.OK, run.output
    for none in run.report["tests"]:
        assert none["children"] == {"count": 0, "max_rss": 0, "method": None, "killed": []}
        assert none["tree_peak"] == none["peak_rss"] and none["tree_growth"] == none["growth"]


def test_what_children_take_is_the_tests(
    pytester: pytest.Pytester, run_memstream: RunMemstream
) -> None:
    pytester.makepyfile(test_children=CHILDREN, together=TOGETHER)
    run = run_memstream("-n", "2", "-v", "--memstream-top=0", "--memstream-warn=250M")
    assert run.result.ret == pytest.ExitCode.OK, run.output
    # A python child holds what it allocated and its own interpreter (~10 MiB).
    held = run.test("test_subprocess_held")
    assert 300 * MiB <= held["tree_growth"] <= 330 * MiB
    assert held["growth"] < 8 * MiB  # the worker itself did nothing
    assert held["children"]["count"] >= 1 and held["children"]["method"] == "hwm"
    assert 300 * MiB <= held["children"]["max_rss"] <= 330 * MiB
    short = run.test("test_short_child")  # too short for the sampler: its own peak
    assert 200 * MiB <= short["tree_growth"] <= 230 * MiB
    assert short["children"]["method"] in ("hwm", "rusage")
    fork = run.test("test_pool[fork]")  # the worker's 300 MiB, shared, count once
    assert 300 * MiB <= fork["growth"] <= 310 * MiB
    assert 300 * MiB <= fork["tree_growth"] - fork["growth"] <= 330 * MiB
    assert fork["children"]["count"] == 2
    spawn = run.test("test_pool[spawn]")  # two new interpreters of ~30 MiB, besides
    assert 300 * MiB <= spawn["tree_growth"] - spawn["growth"] <= 400 * MiB
    grand = run.test("test_grandchild")
    assert 200 * MiB <= grand["tree_growth"] <= 245 * MiB
    assert grand["children"]["count"] >= 2  # and any left from a test before (a tracker)
    killed = run.test("test_killed_child")
    assert 120 * MiB <= killed["tree_growth"] <= 150 * MiB
    (victim,) = killed["children"]["killed"]
    assert victim["signal"] == 9 and victim["last_rss"] >= 120 * MiB
    # Said while it ran: its worker alone never grew that much.
    run.result.stdout.fnmatch_lines(
        [
            "memstream: gw* test_children.py::test_subprocess_held has grown +*M with the "
            "processes it started, to *M in all"
        ]
    )
    # The summary shows the tree where a test started processes, and names the killed.
    run.result.stdout.fnmatch_lines(
        [
            "*growth      peak      kept      tree  worker  phase     test",
            "*test_children.py::test_subprocess_held  (* child*, 3??.?M)",
            "*test_killed_child  (* child*, 1??.?M; python * killed by SIGKILL)",
        ]
    )


def _on_one_worker(
    pytester: pytest.Pytester, run_memstream: RunMemstream, xdist: list[str], **files: str
) -> MemstreamRun:
    """A passing run of ``files``, each file's tests in order on one worker."""
    pytester.makepyfile(**files)
    run = run_memstream(*xdist, "--dist=loadfile" if "-n" in xdist else "-q")
    assert run.result.ret == pytest.ExitCode.OK, run.output
    return run


SERVER = """
import subprocess, sys
import pytest

SERVE = (
    "import sys\\n"
    "held = []\\n"
    "for line in sys.stdin:\\n"
    "    held.append(b'x' * (int(line) << 20))\\n"
    "    print('ok', flush=True)\\n"
)


@pytest.fixture(scope="module")
def server():
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    yield process
    process.stdin.close()
    process.wait()


def ask(server, size):
    server.stdin.write(f"{size}\\n")
    server.stdin.flush()
    assert server.stdout.readline() == "ok\\n"


def test_a_starts_the_server(server):
    ask(server, 20)


def test_b_makes_it_grow(server):
    ask(server, 100)


def test_c_leaves_it_alone(server):
    pass
"""


@XDIST
def test_a_process_that_outlives_its_test_counts_in_the_tests_after_it(
    pytester: pytest.Pytester, run_memstream: RunMemstream, xdist: list[str]
) -> None:
    run = _on_one_worker(pytester, run_memstream, xdist, test_server=SERVER)
    names = ("test_a_starts_the_server", "test_b_makes_it_grow", "test_c_leaves_it_alone")
    first, grows, idle = (run.test(name) for name in names)
    assert first["tree_growth"] >= 20 * MiB  # the server, and what it was asked for
    assert 100 * MiB <= grows["tree_growth"] <= 110 * MiB  # its growth, in this test
    assert grows["growth"] < 8 * MiB
    assert idle["tree_growth"] < 4 * MiB
    # It stood in the start of the tests after the first: the tree was larger there.
    assert grows["tree_peak"] - grows["tree_growth"] >= grows["rss_start"] + 20 * MiB
    assert idle["children"]["count"] == 1


LOKY = """
import joblib
from together import hold_together

MiB = 1 << 20


def take(size, meet):
    data = b"l" * (size * MiB)
    hold_together(meet)  # with the other loky worker, since this one is busy
    return len(data)


def run_two(tmp_path):
    parallel = joblib.Parallel(n_jobs=2, backend="loky")
    calls = (joblib.delayed(take)(150, str(tmp_path)) for _ in range(2))
    assert parallel(calls) == [150 * MiB] * 2


def test_loky_starts_its_workers(tmp_path):
    run_two(tmp_path)


def test_loky_reuses_them(tmp_path):
    run_two(tmp_path)
"""


@XDIST
def test_joblib_loky_workers_count_in_the_test_that_starts_them_and_those_that_reuse_them(
    pytester: pytest.Pytester, run_memstream: RunMemstream, xdist: list[str]
) -> None:
    # loky keeps its workers for the next Parallel call: the second test finds them alive.
    run = _on_one_worker(pytester, run_memstream, xdist, test_loky=LOKY, together=TOGETHER)
    first, reused = run.test("test_loky_starts_its_workers"), run.test("test_loky_reuses_them")
    # Two new interpreters with joblib (~55 MiB each), and 150 MiB in each at once.
    assert 300 * MiB + 60 * MiB <= first["tree_growth"] <= 500 * MiB
    assert 300 * MiB <= reused["tree_growth"] <= 330 * MiB
    assert max(first["growth"], reused["growth"]) < 8 * MiB  # the worker itself did nothing
    # The reused workers stood in the second test's start.
    assert reused["tree_peak"] - reused["tree_growth"] >= reused["rss_start"] + 60 * MiB
    assert reused["children"]["count"] >= 2 and reused["children"]["method"] == "hwm"


LIMITED = """
import subprocess, sys
import pytest


@pytest.mark.memstream_limit("100M", on="tree")
def test_over():
    subprocess.run([sys.executable, "-c", "x = b'x' * (200 << 20)"], check=True)


@pytest.mark.memstream_limit("100M", on="tree")
def test_under():
    subprocess.run([sys.executable, "-c", "x = b'x' * (20 << 20)"], check=True)


def test_flag():
    subprocess.run([sys.executable, "-c", "x = b'x' * (300 << 20)"], check=True)
"""


@XDIST
def test_a_limit_on_the_tree_fails_the_test(
    pytester: pytest.Pytester, run_memstream: RunMemstream, xdist: list[str]
) -> None:
    pytester.makepyfile(test_limited=LIMITED)
    run = run_memstream(*xdist, "--memstream-limit=250M,tree")
    run.result.assert_outcomes(passed=1, failed=2)
    run.result.stdout.fnmatch_lines(
        [
            "*test_limited.py::test_over grew, with the processes it started, by +2??.?M in "
            "call, over its limit of 100.0M on tree (@pytest.mark.memstream_limit)*",
        ]
    )
    assert "test_limited.py::test_flag grew, with the processes it started" in run.output
    assert "--memstream-limit" in run.output
