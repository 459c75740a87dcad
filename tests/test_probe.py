"""The Linux high-water-mark probe: exact peaks, by the cheap reading wherever it is exact."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

MiB = 1 << 20

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the high-water mark is Linux's")

# Runs in a fresh process: touches `size` bytes for an instant, outside malloc, so that
# glibc's thresholds (and with them the figures of later phases) stay as they were.
PHASES = """
import json, mmap, sys
from pytest_memstream.plugin.probe import HighWaterMark

probe = HighWaterMark()
status_reads = 0
status_figures = probe._status_figures

def counted():
    global status_reads
    status_reads += 1
    return status_figures()

probe._status_figures = counted

def spike(size):
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE
    mmap.mmap(-1, size, flags=flags).close()

def phase(size):
    global status_reads
    before = probe.start()
    status_reads = 0  # those of the boundary that ends the phase
    if size:
        spike(size)
    after, peak = probe.boundary()
    return {"before": before, "after": after, "peak": peak, "status_reads": status_reads}

out = {"trust": probe._trust, "floor": probe._floor << 10, "quiet": phase(0),
       "spike": phase(100 << 20)}
kept = b"x" * int(sys.argv[1])  # written, so resident: this process grows past its floor
out["grown_quiet"] = phase(0)
out["grown_spike"] = phase(100 << 20)
out["trust_at_end"] = probe._trust
print(json.dumps(out))
"""

# The parent of PHASES: reaches `peak` bytes, lets go of them, then starts the child the
# way pytest-xdist's execnet does (subprocess, which uses vfork), so that the child
# inherits the parent's peak as its getrusage floor.
PARENT = """
import mmap, subprocess, sys
flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE
if int(sys.argv[1]):
    mmap.mmap(-1, int(sys.argv[1]), flags=flags).close()
sys.exit(subprocess.run([sys.executable, "-c", sys.argv[2], sys.argv[3]]).returncode)
"""


def run_phases(parent_peak: int, child_keeps: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", PARENT, str(parent_peak), textwrap.dedent(PHASES), str(child_keeps)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def check_figures(phase: dict[str, int], spike: int) -> None:
    assert phase["after"] - 4 * MiB < phase["before"] < phase["after"] + 4 * MiB
    if spike:
        assert phase["before"] + spike * 0.97 <= phase["peak"] <= phase["before"] + spike * 1.1
    else:
        assert phase["after"] <= phase["peak"] <= phase["after"] + MiB


def test_a_process_smaller_than_its_parent_reads_exact_peaks() -> None:
    # The child starts below the 400 MiB it inherited: getrusage alone would report 400
    # MiB for every phase, so the probe must see that and read the status file.
    figures = run_phases(parent_peak=400 * MiB, child_keeps=500 * MiB)
    assert figures["floor"] >= 400 * MiB > figures["quiet"]["after"] + 300 * MiB
    # Its self-test spike cannot show above the inherited maximum: nothing proven yet.
    assert figures["trust"] is None
    check_figures(figures["quiet"], 0)
    check_figures(figures["spike"], 100 * MiB)
    assert figures["quiet"]["status_reads"] == figures["spike"]["status_reads"] == 1
    # Past its floor, the first reading is proven against the status file once (at the
    # start of the phase, or at its end); from then on getrusage is the mark itself.
    check_figures(figures["grown_quiet"], 0)
    check_figures(figures["grown_spike"], 100 * MiB)
    assert figures["grown_quiet"]["status_reads"] <= 1
    assert figures["grown_spike"]["status_reads"] == 0
    assert figures["trust_at_end"] is True


def test_a_process_bigger_than_its_parent_reads_the_status_file_only_to_prove_getrusage() -> None:
    figures = run_phases(parent_peak=0, child_keeps=0)
    assert figures["trust"] is None  # nothing is spent on proving it before it is needed
    check_figures(figures["quiet"], 0)
    check_figures(figures["spike"], 100 * MiB)
    check_figures(figures["grown_spike"], 100 * MiB)
    # The first readings read the status file (to prove getrusage, or because they are
    # not above the floor yet); the spike at the latest proves it; after that, never.
    assert figures["quiet"]["status_reads"] <= 1
    assert figures["spike"]["status_reads"] <= 1
    assert figures["grown_quiet"]["status_reads"] == figures["grown_spike"]["status_reads"] == 0
    assert figures["trust_at_end"] is True


@pytest.mark.parametrize("parent_peak", [0, 400 * MiB], ids=["getrusage", "status-file"])
def test_boundaries_in_a_row_give_each_phase_its_own_peak(parent_peak: int) -> None:
    # A boundary resets the mark only when it stands above the RSS; a quiet phase in
    # between (no reset) must not hide a later, smaller spike, nor lend it an earlier one.
    # Below an inherited 400 MiB floor every reading comes from the status file.
    code = """
import json, mmap, os
from pytest_memstream.plugin.probe import HighWaterMark
flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE
probe = HighWaterMark()
writes = 0
real_write = os.write
def counting_write(fd, data):
    global writes
    writes += fd == probe._clear_refs
    return real_write(fd, data)
os.write = counting_write  # the probe resets the mark through os.write
rss = probe.start()
out = []
for size in (100, 0, 0, 10, 0, 50, 0):
    writes = 0
    if size:
        mmap.mmap(-1, size << 20, flags=flags).close()
    after, peak = probe.boundary()
    out.append([size, (peak - rss) / (1 << 20), writes])
    rss = after
print(json.dumps(out))
"""
    done = subprocess.run(
        [sys.executable, "-c", PARENT, str(parent_peak), code, "0"],
        capture_output=True,
        text=True,
        check=True,
    )
    for size, growth, writes in json.loads(done.stdout):
        assert size * 0.97 - 0.5 <= growth <= size * 1.05 + 1, (size, growth)
        assert writes == (1 if size else 0), (size, writes)


def test_the_probe_leaves_malloc_thresholds_alone() -> None:
    # Nothing the probe does may go through malloc in a large block (a self-test spike
    # once did): a freed 4 MiB malloc block raises glibc's mmap threshold to 4 MiB, and
    # the tests' spikes below it would then come from the heap, stay resident, and never
    # show again.  Each spike here is larger than the one before, so with the default
    # threshold each is mapped and shows.
    code = """
import json
from pytest_memstream.plugin.probe import HighWaterMark
probe = HighWaterMark()
growths = []
for size in (1 << 20, 2 << 20, 3 << 20):
    before = probe.start()
    spike = b"x" * size
    del spike
    growths.append((probe.boundary()[1] - before) / size)
print(json.dumps(growths))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # A raised threshold shows as about 0; the kernel's per-CPU counters lag a little.
    assert all(growth >= 0.5 for growth in json.loads(done.stdout))


@pytest.mark.parametrize("probe", ["HighWaterMark", "SampledPeak"])
def test_a_forked_child_reads_its_own_figures(probe: str) -> None:
    code = textwrap.dedent(
        f"""
        import os, json, sys
        from pytest_memstream.plugin.probe import {probe}
        probe = {probe}()
        big = bytearray(300 << 20)  # the parent holds 300 MiB while it forks
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            del big  # copy-on-write: the child's RSS is its own, not the parent's
            probe.start()
            os.write(write, json.dumps(probe.boundary()).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        print(json.dumps([json.loads(os.read(read, 1000)), probe.rss()]))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    (child_rss, child_peak), parent_rss = json.loads(done.stdout)
    assert parent_rss > 300 * MiB
    assert child_rss < 200 * MiB
    assert child_peak < 200 * MiB


def test_a_forked_child_keeps_the_peak_it_reached_before_its_first_reading() -> None:
    # pytest-forked takes a test's start in the parent and its next boundary in the child:
    # what the child reached before that belongs to the phase.  The parent once peaked at
    # 300 MiB, which the child must not inherit.
    code = textwrap.dedent(
        """
        import json, mmap, os
        from pytest_memstream.plugin.probe import HighWaterMark
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE
        probe = HighWaterMark()
        mmap.mmap(-1, 300 << 20, flags=flags).close()
        probe.start()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            mmap.mmap(-1, 100 << 20, flags=flags).close()
            os.write(write, json.dumps(probe.boundary()).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        print(os.read(read, 1000).decode())
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    after, peak = json.loads(done.stdout)
    assert after + 95 * MiB <= peak <= after + 150 * MiB
