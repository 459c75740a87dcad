"""Part 2b: the processes a test starts: how right the tree's growth is, and what it costs.

The suite starts real processes that each take a known size (``b"x" * n`` touches every
page), in the shapes the child-process issue names; the tree's growth of each test is
compared with what its processes took: the size, plus what a Python process costs before
it allocates anything (measured in the same run, by a test whose child only sleeps).
Then the feature's cost: the trivial suite's instructions and numpy's suite's wall time
with ``--memstream-children on`` (the default) against ``off``.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import suites
from benchmarks.common import (
    Table,
    disable_except,
    median,
    pytest_command,
    run,
    show_command,
    verdict,
)
from benchmarks.instructions import INTERVAL, WORKERS, _valgrind
from benchmarks.suites import MiB

#: Within this fraction, or this many bytes, of what was taken: for the exact methods.
TOLERANCE = 0.02
SLACK = 4 * MiB


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    #: What its processes take beyond their interpreters, and how many interpreters.
    size: int
    interpreters: int
    #: Whether a method that is exact measures it (a single process whose own peak the
    #: kernel keeps); the others are sampled and only said.
    exact: bool


CASES = (
    Case("test_idle_child", "a Python child that only sleeps 1 s (the base)", 0, 1, True),
    Case("test_subprocess_300", "subprocess.run, 300 MiB held 1 s", 300 * MiB, 1, True),
    Case("test_short_200", "subprocess.run, 200 MiB for 50 ms", 200 * MiB, 1, True),
    Case(
        "test_small_child",
        "a 60 MiB child of a worker holding 400 MiB, 50 ms",
        60 * MiB,
        1,
        False,
    ),
    Case("test_grandchild_200", "a child that runs a 200 MiB child", 200 * MiB, 2, False),
    Case(
        "test_fork_pool",
        "Pool(2), fork, 150 MiB each, overlapping (worker holds 300 MiB)",
        300 * MiB,
        0,
        False,
    ),
    Case("test_spawn_pool", "Pool(2), spawn, 150 MiB each, overlapping", 300 * MiB, 2, False),
    Case("test_killed_120", "a 120 MiB child killed with SIGKILL", 120 * MiB, 1, True),
)

SUITE = """
import multiprocessing, subprocess, sys, time
MiB = 1 << 20
HOLD = "import time; x = b'x' * ({size} << 20); time.sleep({seconds})"


def python(size, seconds):
    return [sys.executable, "-c", HOLD.format(size=size, seconds=seconds)]


def test_idle_child():
    subprocess.run(python(0, 1.0), check=True)


def test_subprocess_300():
    subprocess.run(python(300, 1.0), check=True)


def test_short_200():
    subprocess.run(python(200, 0.05), check=True)


def test_small_child():
    held = b"h" * (400 * MiB)
    subprocess.run(python(60, 0.05), check=True)
    del held


def test_grandchild_200():
    inner = f"import subprocess; subprocess.run({python(200, 1.0)!r})"
    subprocess.run([sys.executable, "-c", inner], check=True)


def take(size):
    data = b"w" * (size * MiB)
    time.sleep(0.6)
    return len(data)


def test_fork_pool():
    held = b"h" * (300 * MiB)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(take, [150, 150], chunksize=1)
    del held


def test_spawn_pool():
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(take, [150, 150], chunksize=1)


def test_killed_120():
    child = subprocess.Popen(python(120, 60))
    time.sleep(1.0)
    child.kill()
    child.wait()
"""


def _mib(size: float) -> str:
    return f"{size / MiB:,.1f} MiB"


def _report(root: Path, out: Path, workers: int) -> tuple[dict[str, dict[str, Any]], str]:
    path = out / f"children-n{workers}.json"
    command = pytest_command(
        ["-q", "-n", str(workers), "--memstream", f"--memstream-json={path}",
         *disable_except("memstream")]
    )  # fmt: skip
    result = run(command, root)
    if result.returncode != 0 or not path.exists():
        raise RuntimeError(f"{show_command(command)} failed:\n{result.output[-2000:]}")
    report = json.loads(path.read_text())
    return {t["nodeid"].rsplit("::", 1)[-1]: t for t in report["tests"]}, show_command(
        command
    ).replace(str(out), "$TMP")


def accuracy(out: Path) -> str:
    root = out / "children"
    root.mkdir()
    (root / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    (root / "test_children.py").write_text(SUITE, encoding="utf-8")
    n0, command0 = _report(root, out, 0)
    n2, command2 = _report(root, out, 2)
    table = Table(
        "2b. Child processes: the tree's growth against what the test's processes took",
        ["test", "what it does", "took", "`-n 0`", "`-n 2`", "methods"],
    )
    ok = True
    base = {
        name: report["test_idle_child"]["tree_growth"] for name, report in (("0", n0), ("2", n2))
    }
    for case in CASES:
        cells = []
        for key, report in (("0", n0), ("2", n2)):
            test = report[case.name]
            # What the processes took: the size, an interpreter each, and the worker's own.
            expected = case.size + case.interpreters * base[key] + max(0, test["growth"])
            if case.name == "test_idle_child":
                expected = test["tree_growth"]
            measured = test["tree_growth"]
            error = measured - expected
            good = abs(error) <= max(TOLERANCE * expected, SLACK)
            cell = f"{_mib(measured)} ({error / MiB:+.1f} MiB)"
            if case.exact and case.name != "test_idle_child":
                cell += f" {verdict(good)}"
                ok = ok and good
            cells.append(cell)
        test = n2[case.name]
        methods = f"tree {test['tree_method']}, child {test['children']['method']}"
        table.add(f"`{case.name}`", case.what, _mib(case.size), *cells, methods)
    table.notes += [
        f"Target, for the cases one exact method measures (a single process whose own peak "
        f"the kernel keeps: `hwm` for a live one, `rusage` for a reaped one above its "
        f"worker): within {TOLERANCE:.0%} or {SLACK // MiB} MiB of what was taken: "
        f"{verdict(ok)}. Concurrent processes (pools, a grandchild) are summed from "
        "samples every interval and at the test's end: `sampled`, said, not judged.",
        "What was taken is the size allocated, plus a Python interpreter's own memory for "
        "each process that runs one (the idle child's tree growth in the same run: "
        f"{_mib(base['0'])} alone, {_mib(base['2'])} under `-n 2`), plus the worker's own "
        "growth. A forked pool's workers share the worker's pages: counted once.",
        "A child smaller than its worker and too short for the sampler (60 MiB for 50 ms "
        "beside 400 MiB): `wait4()`'s `ru_maxrss` is then the worker's peak, not the "
        "child's, and only the test's end sees what is left of it.",
        "",
        f"Commands, in the suite's directory: `{command0}` and `{command2}`.",
    ]
    return table.markdown()


def cost(out: Path, long: bool) -> str:
    table = Table(
        "2c. Child processes: the cost of measuring them, `--memstream-children on` against `off`",
        ["suite", "measure", "off", "on", "ratio"],
    )
    valgrind = shutil.which("valgrind")
    trivial = suites.write_trivial(out / "trivial")
    if valgrind is not None:
        counts = {}
        for setting in ("off", "on"):
            (out / setting).mkdir()
            args = [
                "-q",
                "-n",
                str(WORKERS),
                "--memstream",
                f"--memstream-interval={INTERVAL * 30:.2f}",
                f"--memstream-children={setting}",
                *disable_except("memstream"),
            ]
            counts[setting] = _valgrind(valgrind, args, trivial, out / setting)
        off, on = counts["off"].total, counts["on"].total
        table.add(
            f"trivial ({suites.trivial_count():,} tests), `-n {WORKERS}`",
            "instructions, every process",
            f"{off / 1e9:.3f} G",
            f"{on / 1e9:.3f} G",
            f"**{on / off:.4f}×** ({(on - off) / suites.trivial_count() / 1000:,.1f} k a test)",
        )
    if suites.numpy_available():
        root = suites.write_numpy(out / "numpy")
        pairs = 8 if long else 4
        times: dict[str, list[float]] = {"off": [], "on": []}
        ratios = []
        for r in range(pairs):
            order = ["off", "on"] if r % 2 == 0 else ["on", "off"]
            got = {}
            for setting in order:
                args = ["-q", "-n", "2", "--memstream", f"--memstream-children={setting}"]
                result = run(
                    pytest_command([*args, *disable_except("memstream"), *suites.NUMPY_ARGS]),
                    root,
                )
                got[setting] = result.seconds
                times[setting].append(result.seconds)
            ratios.append(got["on"] / got["off"])
            print(f"  numpy children {r + 1}/{pairs}: {got}", file=sys.stderr, flush=True)
        table.add(
            "numpy's tests (linalg, fft, random), `-n 2`",
            f"wall time, median of {pairs} alternating pairs",
            f"{median(times['off']):.2f} s",
            f"{median(times['on']):.2f} s",
            f"**{median(ratios):.3f}×**",
        )
    table.notes.append(
        "Both columns run `--memstream`; only the process tree is switched. A test that "
        "starts no process pays one read of its thread's children list."
    )
    return table.markdown()


def run_part(long: bool) -> str:
    with tempfile.TemporaryDirectory(prefix="memstream-bench-children-") as tmp:
        out = Path(tmp)
        return accuracy(out) + "\n" + cost(out, long)
