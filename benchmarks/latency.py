"""Part 4: how long a worker's sample takes to reach the sink, under a real ``-n 2`` run.

The run is an ordinary ``pytest -n 2 --memstream`` at the default sampling interval; the
plugin ``benchmarks.latency_plugin`` observes the controller's ``RunState`` (see there).
The suite keeps both workers and the controller busy: tests that sleep, tests that burn
CPU holding the GIL (the sampler thread must wait for it), tests that allocate, and
thousands of trivial tests whose reports keep xdist's loop in the controller busy.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks import viewer
from benchmarks.common import (
    ROOT,
    Table,
    disable_except,
    percentile,
    pytest_command,
    show_command,
    verdict,
)
from benchmarks.latency_plugin import ENV

AIM_P99 = 0.100
TEST_SECONDS = 0.5
PLAIN_PER_MODULE = 200

_LONG_MODULE = """\
import time

MiB = 1 << 20


def _until(deadline, work):
    while time.monotonic() < deadline:
        work()


def test_sleeps():
    time.sleep({seconds})


def test_burns_cpu():
    _until(time.monotonic() + {seconds}, lambda: sum(range(1000)))


def test_allocates():
    _until(time.monotonic() + {seconds}, lambda: len(b"x" * (20 * MiB)))
"""


def write_suite(root: Path, long_modules: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    plain = "\n\n".join(f"def test_{i:04d}():\n    pass\n" for i in range(PLAIN_PER_MODULE))
    for m in range(long_modules):
        long = _LONG_MODULE.format(seconds=TEST_SECONDS)
        (root / f"test_{m:03d}_long.py").write_text(long, encoding="utf-8")
        (root / f"test_{m:03d}_plain.py").write_text(plain, encoding="utf-8")
    return root


def _viewer_notes(seen: viewer.Delays | None) -> list[str]:
    if seen is None:
        return ["No viewer: `pytest_memstream` has no fan-out to attach to yet."]
    notes = [
        "To a viewer: this script attaches `pytest_memstream.cli.client.Viewer` (what "
        "`memstream watch` uses) to the run through its session file, in its own process, "
        "and notes when a test's record (`t1`, the worker's stamp) or a worker's new running "
        "test (`started`) first reaches it, and when a worker's view first shows the RSS of a "
        "sample the sink applied (matched by worker, time and RSS; a sample that a newer one "
        "replaced before the fan-out published, at most one update per 50 ms, is not counted)."
    ]
    if seen.behind:
        notes.append(f"The viewer fell behind and resynchronised {seen.behind} times.")
    if seen.error:
        notes.append(f"**The viewer failed**: {seen.error}")
    elif not seen.finished:
        notes.append("**The viewer never saw the run finish.**")
    return notes


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def run_part(long: bool) -> str:
    modules = 40 if long else 12
    with tempfile.TemporaryDirectory(prefix="memstream-bench-latency-") as tmp:
        base = Path(tmp)
        root = write_suite(base / "suite", modules)
        out = base / "latency.json"
        args = ["-q", "-n", "2", "--memstream", "-p", "benchmarks.latency_plugin"]
        command = pytest_command([*args, *disable_except("memstream")])
        env = dict(os.environ)
        env[ENV] = str(out)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        log = base / "pytest.log"
        with log.open("w") as output:
            proc = subprocess.Popen(command, cwd=root, env=env, stdout=output, stderr=output)
            try:
                seen = (
                    viewer.follow_run(root, lambda: proc.poll() is None, time.monotonic() + 600)
                    if viewer.available()
                    else None
                )
            finally:
                returncode = proc.wait(timeout=600)
        if returncode != 0 or not out.exists():
            text = log.read_text()[-3000:]
            raise RuntimeError(f"{show_command(command)} failed:\n{text}")
        observed = json.loads(out.read_text())
        delays: dict[str, list[float]] = observed["delays"]
    tests = modules * (3 + PLAIN_PER_MODULE)
    table = Table(
        f"4. Live latency: worker stamps a message → the sink has applied it (-n 2, {tests:,} "
        "tests)",
        [
            "message",
            "to",
            "count",
            "p50",
            "p99",
            "max",
            f"aim p99 ≤ {AIM_P99 * 1000:.0f} ms",
        ],
    )
    rows = (
        ("`sample` (sampler thread, every 0.1 s once a test has run 0.1 s)", "sample", True),
        ("`start` (a test begins)", "start", False),
        ("`end` (a test's record)", "end", False),
    )
    for label, kind, judged in rows:
        values = delays.get(kind, [])
        table.add(
            label,
            "to the sink",
            f"{len(values):,}",
            _ms(percentile(values, 50)),
            _ms(percentile(values, 99)),
            _ms(max(values, default=float("nan"))),
            verdict(percentile(values, 99) <= AIM_P99) if judged else "(not a target)",
        )
        if seen is None:
            table.add(label, viewer.UNAVAILABLE, "", "", "", "", "")
        else:
            got = {
                "sample": viewer.sample_delays(observed["samples"], seen.views),
                "start": seen.start,
                "end": seen.end,
            }[kind]
            table.add(
                label,
                "to a viewer",
                f"{len(got):,}",
                _ms(percentile(got, 50)),
                _ms(percentile(got, 99)),
                _ms(max(got, default=float("nan"))),
                verdict(percentile(got, 99) <= AIM_P99) if judged else "(not a target)",
            )
    table.notes += [
        f"Suite: {modules} × (a test that sleeps, one that burns CPU, one that allocates "
        f"20 MiB again and again, each for {TEST_SECONDS} s) and {modules} × "
        f"{PLAIN_PER_MODULE} trivial tests, at the default `--memstream-interval` (0.1 s).",
        "Measured in the controller by `benchmarks/latency_plugin.py`: when the real sink "
        "thread applies a message, `time.time()` minus the time the worker stamped on it "
        "(same machine, same clock). An `end` is queued by the test's thread and leaves "
        "with the next frame, which that thread sends once the last one is an interval old "
        "(or at once, if urgent); a `start` is sent by the sampler for a test it finds "
        "running at two wake-ups in a row. So their delay is by design up to one or two "
        "intervals; they are shown for a viewer's sake.",
        *_viewer_notes(seen),
        "",
        f"Command (in the suite's directory, with `PYTHONPATH={ROOT}` and `{ENV}=out.json`):",
        "",
        f"- `{show_command(command)}`",
    ]
    return table.markdown()
