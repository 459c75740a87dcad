"""The HTML report: written by a real run, opened in headless Chromium, fast for big runs."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from runs import MEMORY_TESTS, RunMemstream

from pytest_memstream.collector.html import render_html, write_html
from pytest_memstream.collector.schema import SCHEMA

MiB = 1 << 20


def synthetic_report(tests: int, workers: int = 4, crash: bool = True) -> dict[str, Any]:
    """A report document as Snapshot.document makes it, without running anything."""
    t0 = 1_700_000_000.0
    clock = [t0] * workers
    rss = [50 * MiB] * workers
    rows: list[dict[str, Any]] = []
    for i in range(tests):
        w = i % workers
        growth = (i * 7919 % 31) * MiB if i % 5 == 0 else 0
        kept = 4096 if i % 3 == 0 else 0
        start, duration = clock[w], 0.001 + (i % 7) * 0.002
        outcome = ("passed",) * 17 + ("failed", "skipped", "error")
        rows.append(
            _test(f"tests/test_{i % 50}.py::test_{i}", f"gw{w}", outcome[i % 20], start, duration)
            | {"rss_start": rss[w], "rss_end": rss[w] + kept, "peak_rss": rss[w] + growth}
            | {"growth": growth, "kept": kept, "index": i // workers}
        )
        rss[w] += kept
        clock[w] = start + duration + 0.0005
    if crash:
        start = clock[1]
        samples = [[start + k / 10, rss[1] + k * 90 * MiB] for k in range(11)]
        rows.append(
            _test("tests/test_boom.py::test_oom", "gw1", "crashed", start, 1.0)
            | {"rss_start": rss[1], "rss_end": rss[1] + 900 * MiB, "peak_rss": rss[1] + 900 * MiB}
            | {"growth": 900 * MiB, "kept": None, "index": 10**6, "peak_method": "sampled"}
            | {"phases": {}, "samples": samples, "climb_rate": 900.0 * MiB}
        )
    return {
        "schema": SCHEMA,
        "run": {
            "started": t0,
            "duration": max(clock) - t0 + 1,
            "endpoint": "tcp://127.0.0.1:1",
            "platform": "Linux",
            "python": "3.11.7",
            "pytest": "9.2.0",
            "peak_method": "hwm",
            "complete": True,
            "messages": tests * 3,
            "frames": tests // 10,
            "rejected": {},
        },
        "workers": [
            {
                "id": f"gw{w}",
                "pid": 1000 + w,
                "status": "crashed" if crash and w == 1 else "complete",
                "tests": sum(1 for t in rows if t["worker"] == f"gw{w}"),
                "messages": tests * 3 // workers,
                "lost": 0,
                "dropped": 0,
                "recovered": 0,
                "unrecoverable": 0,
                "max_rss": max([t["peak_rss"] for t in rows if t["worker"] == f"gw{w}"] or [0]),
                "peak_method": "hwm",
                "crashed_test": "tests/test_boom.py::test_oom" if crash and w == 1 else None,
                "error": None,
            }
            for w in range(workers)
        ],
        "tests": rows,
    }


def _test(nodeid: str, worker: str, outcome: str, start: float, duration: float) -> dict[str, Any]:
    return {
        "nodeid": nodeid,
        "worker": worker,
        "outcome": outcome,
        "peak_phase": "call",
        "peak_method": "hwm",
        "source": "stream",
        "started": start,
        "finished": start + duration,
        "phases": {"call": {"rss_before": 0, "rss_after": 0, "peak_rss": 0, "duration": duration}},
    }


# --- Chromium -----------------------------------------------------------------------------


@pytest.fixture
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium is not installed (scripts/test installs Debian's chromium package)")
    return found


class Page:
    def __init__(self, dom: str) -> None:
        self.dom = dom
        body = re.search(r"<body([^>]*)>", dom)
        assert body is not None, dom[:500]
        self.body = dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(1)))


def _chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def load(binary: str, page: Path, tmp: Path) -> Page:
    """The page's DOM after its script ran."""
    done = _chromium(
        binary, tmp / "profile", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return Page(done.stdout)


def screenshot(binary: str, page: Path, png: Path) -> tuple[int, int]:
    """Take a 1280x900 screenshot of ``page`` into ``png``; its width and height."""
    done = _chromium(
        binary,
        png.parent / "profile",
        f"--screenshot={png}",
        "--window-size=1280,900",
        "--virtual-time-budget=5000",
        page.as_uri(),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    # A blank page compresses to a few hundred bytes; a plot and a table do not.
    assert len(data) > 20_000, len(data)
    return width, height


# --- tests --------------------------------------------------------------------------------


def test_real_run_writes_a_page_with_plot_and_table(
    pytester: pytest.Pytester, run_memstream: RunMemstream, chromium: str, tmp_path: Path
) -> None:
    pytester.makepyfile(test_memory=MEMORY_TESTS)
    html = pytester.path / "out" / "run.html"
    run = run_memstream("-n", "2", f"--memstream-html={html}")
    run.result.stdout.fnmatch_lines(
        [f"memstream: HTML report to {html}", f"memstream: HTML report written to {html}"]
    )
    page = load(chromium, html, tmp_path)
    assert page.body["data-ready"] == "1"
    assert page.body["data-tests"] == str(len(run.report["tests"])) == "6"
    assert page.body["data-bands"] == "6"
    assert int(page.body["data-totals"]) >= 1  # the run's total, stacked
    assert page.body["data-rows"] == "5"  # --memstream-top's default
    assert "test_memory.py::test_spike" in page.dom
    for worker in run.report["workers"]:
        assert f"<td>{worker['id']}</td>" in page.dom
    assert screenshot(chromium, html, tmp_path / "run.png") == (1280, 900)


def test_ini_key_and_top_shape_the_page(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_memory=MEMORY_TESTS)
    pytester.makeini(
        "[pytest]\nmemstream = true\nmemstream_html = out/page.html\nmemstream_top = 2\n"
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    page = (pytester.path / "out" / "page.html").read_text()
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # test_fails, as without the page
    assert page.count("<tr><td class=num>") == 2
    assert "Top 2 tests by memory growth" in page


def test_no_page_without_memstream(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_ok(): pass")
    result = pytester.runpytest_subprocess("--memstream-html=page.html")
    assert result.ret == pytest.ExitCode.OK
    assert not (pytester.path / "page.html").exists()


def test_unwritable_html_path_warns_and_keeps_the_outcome(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_ok(): pass")
    os.mkfifo(pytester.path / "page.html")  # found only once the page is written
    json_path = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(
        "--memstream", "--memstream-html=page.html", f"--memstream-json={json_path}", timeout=120
    )
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*memstream: warning: could not write the HTML report*"])
    # The JSON report was written all the same, and the run says so.
    result.stdout.fnmatch_lines([f"memstream: JSON report written to {json_path}"])
    assert json_path.exists()


def test_node_ids_cannot_break_out_of_the_page(chromium: str, tmp_path: Path) -> None:
    hostile = 'test_x.py::test[</script><script>document.body.dataset.pwned="1"</script>&<b>]'
    report = synthetic_report(8, workers=2, crash=False)
    report["tests"][0]["nodeid"] = hostile
    report["tests"][0]["growth"] = 10**12  # first in the table too
    page = tmp_path / "hostile.html"
    write_html(report, page)
    text = page.read_text()
    assert "</script><script>document" not in text
    assert text.count("</script>") == 2  # the data and the code, nothing else
    dom = load(chromium, page, tmp_path)
    assert dom.body["data-ready"] == "1"
    assert "data-pwned" not in dom.dom
    assert "&lt;/script&gt;&lt;script&gt;document.body.dataset.pwned" in dom.dom


def test_crashed_test_is_marked(chromium: str, tmp_path: Path) -> None:
    page = tmp_path / "crash.html"
    write_html(synthetic_report(40), page)
    dom = load(chromium, page, tmp_path)
    assert dom.body["data-ready"] == "1"
    crashed = re.search(r'<ul id="crashed">(.*?)</ul>', dom.dom)
    assert crashed is not None
    assert "gw1</b> died running" in crashed.group(1)
    assert "tests/test_boom.py::test_oom" in crashed.group(1)
    assert "crashed: gw1" in dom.dom  # the totals line
    screenshot(chromium, page, tmp_path / "crash.png")


def test_page_needs_no_network() -> None:
    text = render_html(synthetic_report(20))
    assert not re.search(r"""(src|href)\s*=|https?://|@import|url\(""", text)


def test_twenty_thousand_tests_open_quickly(chromium: str, tmp_path: Path) -> None:
    report = synthetic_report(20_000)
    page = tmp_path / "big.html"
    began = time.perf_counter()
    write_html(report, page)
    rendered = time.perf_counter() - began
    began = time.perf_counter()
    dom = load(chromium, page, tmp_path)
    opened = time.perf_counter() - began
    print(
        f"20,000 tests: {page.stat().st_size / MiB:.1f} MiB of HTML, rendered in {rendered:.2f}s, "
        f"opened by headless Chromium in {opened:.2f}s, drawn in {dom.body['data-render-ms']} ms"
    )
    assert dom.body["data-ready"] == "1"
    assert dom.body["data-bands"] == "20001"
    assert rendered < 5
    assert float(dom.body["data-render-ms"]) < 3000
    assert opened < 30  # a cold browser start included
    screenshot(chromium, page, tmp_path / "big.png")


_SWEEP = """<script>
(function () {
  var canvas = document.getElementById("plot"), box = canvas.getBoundingClientRect();
  var tip = document.getElementById("tip"), seen = {}, first = "";
  function move(x, y) {
    var at = {clientX: box.left + x, clientY: box.top + y};
    canvas.dispatchEvent(new MouseEvent("mousemove", at));
  }
  for (var x = 0; x < box.width; x += 2) {
    move(x, 68);  // the middle of the first worker's row
    if (tip.hidden) continue;
    seen[tip.textContent.split("\\n")[0]] = 1;
    first = first || tip.textContent;
  }
  move(400, 8 + 120 + 10);  // the gap between two rows
  document.body.dataset.hovered = JSON.stringify(Object.keys(seen).sort());
  document.body.dataset.tip = first;
  document.body.dataset.gapHidden = String(tip.hidden);
})();
</script></body>"""


def test_hover_names_every_test_of_a_row(chromium: str, tmp_path: Path) -> None:
    report = synthetic_report(20, workers=2, crash=False)
    page = tmp_path / "hover.html"
    page.write_text(render_html(report).replace("</body>", _SWEEP))
    dom = load(chromium, page, tmp_path)
    hovered = json.loads(html.unescape(dom.body["data-hovered"]))
    assert hovered == sorted(t["nodeid"] for t in report["tests"] if t["worker"] == "gw0")
    tip = html.unescape(dom.body["data-tip"])
    first = report["tests"][0]
    assert tip.splitlines()[0] == first["nodeid"]
    assert f"worker gw0, {first['outcome']}" in tip
    assert "growth +0B, peak 50.0M, kept +4.0K" in tip
    assert "peak in call, RSS 50.0M -> 50.0M" in tip
    assert "duration 0.001s" in tip
    assert dom.body["data-gap-hidden"] == "true"


def test_a_test_that_never_finished_shows_no_kept(chromium: str, tmp_path: Path) -> None:
    report = synthetic_report(20, workers=2)
    report["tests"][0]["kept"] = None  # as for a test interrupted before its teardown
    crashed = report["tests"][-1]
    crashed |= {"kept": None, "phases": {}, "samples": [], "climb_rate": 0.0}
    page = tmp_path / "unfinished.html"
    text = render_html(report, "growth", 0).replace("</body>", _SWEEP)
    rows = re.findall(r"<tr>(.*?)</tr>", text.split("<table id=top>")[1].split("</table>")[0])
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in rows[1:]]
    # A crash that xdist alone reported has no figures at all; any test may lack a kept.
    by_id = {row[-1]: row for row in cells}
    assert by_id["tests/test_boom.py::test_oom"][:3] == ["", "", ""]
    assert by_id[report["tests"][0]["nodeid"]][2] == ""
    assert "test_oom</span> in phase call: no figures reached the controller" in text
    page.write_text(text)
    dom = load(chromium, page, tmp_path)
    tip = html.unescape(dom.body["data-tip"])
    assert tip.splitlines()[2] == "growth +0B, peak 50.0M"


@pytest.mark.slow
def test_real_crash_is_marked_where_the_worker_died(
    pytester: pytest.Pytester, run_memstream: RunMemstream, chromium: str, tmp_path: Path
) -> None:
    from test_faults import AFTER_TESTS, CRASH_TESTS, KILLS

    pytester.makepyfile(
        test_crashy=CRASH_TESTS.replace("{kill}", KILLS["sigkill"]), test_zafter=AFTER_TESTS
    )
    page = pytester.path / "crash.html"
    run = run_memstream("-n", "2", "--memstream-interval=0.05", f"--memstream-html={page}")
    crashed = run.test("test_crash")
    assert crashed["outcome"] == "crashed"
    dom = load(chromium, page, tmp_path)
    assert dom.body["data-ready"] == "1"
    assert dom.body["data-bands"] == dom.body["data-tests"] == "15"
    died = re.search(r'<ul id="crashed">(.*?)</ul>', dom.dom)
    assert died is not None
    assert f"{crashed['worker']}</b> died running" in died.group(1)
    assert "test_crashy.py::test_crash" in died.group(1)
    assert "last samples" in died.group(1)
    assert screenshot(chromium, page, tmp_path / "crash.png") == (1280, 900)
