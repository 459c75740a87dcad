"""Part 2: what --memstream and pytest-memray report for each memory test of the mixed suite."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import suites
from benchmarks.common import Table, disable_except, pytest_command, run, show_command, verdict
from benchmarks.suites import MiB

#: The short spike must be measured within this fraction of its size.
SPIKE_TOLERANCE = 0.02
SPIKE_TEST = "test_spike_300mb"


def _memstream(root: Path, workers: int, out: Path) -> tuple[dict[str, dict[str, Any]], str]:
    path = out / f"memstream-n{workers}.json"
    args = ["-q", "-n", str(workers), "--memstream", f"--memstream-json={path}"]
    command = pytest_command([*args, *disable_except("memstream")])
    result = run(command, root)
    if result.returncode != 0 or not path.exists():
        raise RuntimeError(f"{show_command(command)} failed:\n{result.output[-2000:]}")
    report = json.loads(path.read_text())
    tests = {t["nodeid"].rsplit("::", 1)[-1]: t for t in report["tests"]}
    return tests, show_command(command).replace(str(out), "$TMP")


def _memray(root: Path, out: Path) -> tuple[dict[str, int], str]:
    bins = out / "memray"
    command = pytest_command(
        ["-q", "-n", "0", "--memray", f"--memray-bin-path={bins}", *disable_except("memray")]
    )
    result = run(command, root)
    if result.returncode != 0:
        raise RuntimeError(f"{show_command(command)} failed:\n{result.output[-2000:]}")
    # pytest-memray writes one small JSON file per test next to its capture files.
    peaks: dict[str, int] = {}
    for meta in (bins / "metadata").glob("*.metadata"):
        raw = json.loads(meta.read_text())
        peaks[raw["test_id"].rsplit("::", 1)[-1]] = int(raw["peak_memory"])
    return peaks, show_command(command).replace(str(out), "$TMP")


def _mib(size: float) -> str:
    return f"{size / MiB:,.1f} MiB"


def _error(measured: float, expected: int) -> str:
    return f"{(measured - expected) / expected * 100:+.1f}%"


def run_part(long: bool) -> str:
    del long  # one run of each is the measurement; repeating it shows nothing new
    with tempfile.TemporaryDirectory(prefix="memstream-bench-accuracy-") as tmp:
        out = Path(tmp)
        root = suites.write_mixed(out / "mixed")
        n0, n0_command = _memstream(root, 0, out)
        n2, n2_command = _memstream(root, 2, out)
        memray, memray_command = _memray(root, out)
    table = Table(
        "2. Accuracy: growth of each memory test (peak RSS of the test − RSS before its setup)",
        [
            "test",
            "what it does",
            "allocates",
            "`--memstream` -n 0",
            "`--memstream` -n 2",
            "method, phase",
            "`--memray` peak",
        ],
    )
    spike_ok = True
    for test in suites.MEMORY_TESTS:
        cells = []
        for report in (n0, n2):
            record = report.get(test.name)
            if record is None:
                cells.append("missing")
                if test.name == SPIKE_TEST:
                    spike_ok = False
                continue
            growth = record["growth"]
            cell = f"{_mib(growth)} ({_error(growth, test.size)})"
            if test.name == SPIKE_TEST:
                ok = abs(growth - test.size) <= SPIKE_TOLERANCE * test.size
                spike_ok = spike_ok and ok
                cell += f" {verdict(ok)}"
            cells.append(cell)
        record = n0.get(test.name) or n2.get(test.name) or {}
        how = f"{record.get('peak_method', '?')}, {record.get('peak_phase', '?')}"
        peak = memray.get(test.name)
        memray_cell = "no result" if peak is None else f"{_mib(peak)} ({_error(peak, test.size)})"
        table.add(f"`{test.name}`", test.what, _mib(test.size), *cells, how, memray_cell)
    table.notes += [
        f"Target: the {SPIKE_TEST} spike (300 MiB, freed as soon as it is built) within "
        f"{SPIKE_TOLERANCE:.0%} of 300 MiB under both -n 0 and -n 2: {verdict(spike_ok)}.",
        "`--memstream` figures are `growth` from its JSON report; `hwm` means the exact "
        "per-phase peak from the kernel's RSS high-water mark.  pytest-memray's figure is "
        "`peak_memory` of its per-test metadata: the peak of heap allocations it traced in "
        "the test's call (it does not trace fixtures, so a fixture's 100 MiB shows as ~0).",
        "",
        "Commands (in the mixed suite's directory; `$TMP` is a fresh directory):",
        "",
        f"- `{n0_command}`",
        f"- `{n2_command}`",
        f"- `{memray_command}`",
    ]
    return table.markdown()
