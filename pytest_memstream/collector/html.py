"""The run as one self-contained HTML page: a timeline per worker, the top tests, totals.

Rendered from the report document (``collector/report.py``), so a saved JSON report
renders the same page as the run itself.  The page needs no network: CSS and script are
inline, and the tests are embedded as one compact JSON array drawn on a ``<canvas>`` in one
pass per worker, which keeps a 20,000-test run quick to open.  Hovering finds the test under
the pointer by binary search on its worker's start times.
"""

from __future__ import annotations

import json
import time
from html import escape
from pathlib import Path
from typing import Any

from pytest_memstream.collector.files import write_atomically
from pytest_memstream.collector.report import (
    NO_FIGURES,
    Report,
    figure_text,
    footer_line,
    summary_title,
    top_tests,
)
from pytest_memstream.protocol import PHASES
from pytest_memstream.sizes import format_size

#: In the order of the page script's FILL colours (its code knows "crashed" is 4).
OUTCOMES = ("passed", "failed", "error", "skipped", "crashed", "xfailed", "xpassed")


def _data(report: Report) -> dict[str, Any]:
    """What the script draws: times in ms from the first start, one array per test."""
    tests = report["tests"]
    workers = [w["id"] for w in report["workers"]]
    for t in tests:
        if t["worker"] not in workers:
            workers.append(t["worker"])
    index = {w: i for i, w in enumerate(workers)}
    t0 = min((t["started"] for t in tests), default=report["run"].get("started") or 0.0)

    def ms(when: float) -> int:
        return round((when - t0) * 1000)

    rows: list[list[Any]] = []
    samples: dict[str, list[list[int]]] = {}
    for n, t in enumerate(tests):
        outcome = t["outcome"]
        phase = t["peak_phase"]
        rows.append(
            [
                index[t["worker"]],
                OUTCOMES.index(outcome) if outcome in OUTCOMES else 0,
                ms(t["started"]),
                max(ms(t["finished"]), ms(t["started"])),
                t["rss_start"],
                t["rss_end"],
                t["peak_rss"],
                t["growth"],
                t["kept"],
                PHASES.index(phase) if phase in PHASES else -1,
                t["nodeid"],
                # Its process tree, where it started processes: start, peak, how many.
                *(
                    (t["tree_peak"] - t["tree_growth"], t["tree_peak"], t["children"]["count"])
                    if t.get("children", {}).get("count")
                    else (None, None, 0)
                ),
            ]
        )
        if outcome == "crashed" and t.get("samples"):
            samples[str(n)] = [[ms(s[0]), int(s[1])] for s in t["samples"]]
    # Every worker's tree over the run, stacked: [ms, [memory of each worker in order]].
    totals = [
        [ms(when), [int(memory.get(w, 0)) for w in workers]]
        for when, memory in report["run"].get("total_timeline") or []
    ]
    return {
        "workers": workers,
        "outcomes": list(OUTCOMES),
        "phases": list(PHASES),
        "tests": rows,
        "samples": samples,
        "totals": totals,
        "limit": report["run"].get("limit"),
    }


def _script_json(value: Any) -> str:
    """JSON that cannot end its ``<script>`` element, whatever a node id holds."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for char, code in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, code)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _top_table(report: Report, sort: str, top: int) -> str:
    head = "".join(
        f"<th{' class=num' if n < 3 else ''}>{h}</th>"
        for n, h in enumerate(
            ("growth", "peak", "kept", "worker", "phase", "outcome", "duration", "test")
        )
    )
    body = []
    for t in top_tests(report, sort, top):
        duration = t["finished"] - t["started"]
        body.append(
            "<tr>"
            f"<td class=num>{figure_text(t, 'growth', signed=True)}</td>"
            f"<td class=num>{figure_text(t, 'peak_rss')}</td>"
            f"<td class=num>{figure_text(t, 'kept', signed=True)}</td>"
            f"<td>{escape(str(t['worker']))}</td>"
            f"<td>{escape(str(t['peak_phase'] or '?'))}</td>"
            f"<td class='o-{escape(str(t['outcome']))}'>{escape(str(t['outcome']))}</td>"
            f"<td class=num>{duration:.3f}s</td>"
            f"<td class=id>{escape(str(t['nodeid']))}</td>"
            "</tr>"
        )
    return f"<table id=top><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _crashes(report: Report) -> str:
    items = []
    for t in report["tests"]:
        if t["outcome"] != "crashed":
            continue
        samples = t.get("samples") or []
        last = " ".join(format_size(rss) for _, rss in samples[-5:])
        figures = (
            f"last RSS {format_size(t['rss_end'])}, peak {format_size(t['peak_rss'])}"
            if t["phases"]
            else NO_FIGURES
        )
        items.append(
            f"<li><b>{escape(str(t['worker']))}</b> died running "
            f"<span class=id>{escape(str(t['nodeid']))}</span> in phase "
            f"{escape(str(t['peak_phase'] or '?'))}: {figures}"
            + (f"; last samples {escape(last)}" if last else "")
            + "</li>"
        )
    if not items:
        return ""
    return f"<h2>Crashed</h2><ul id=crashed>{''.join(items)}</ul>"


def _workers_table(report: Report) -> str:
    rows = "".join(
        f"<tr><td>{escape(str(w['id']))}</td><td>{escape(str(w['status']))}</td>"
        f"<td class=num>{w['tests']}</td><td class=num>{w['messages']}</td>"
        f"<td class=num>{w['lost']}</td><td class=num>{w['recovered']}</td>"
        f"<td class=num>{format_size(w['max_rss'])}</td></tr>"
        for w in report["workers"]
    )
    return (
        "<table id=workers><thead><tr><th>worker</th><th>status</th><th class=num>tests</th>"
        "<th class=num>messages</th><th class=num>lost</th><th class=num>recovered</th>"
        f"<th class=num>max RSS</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _facts(report: Report) -> str:
    run = report["run"]
    started = run.get("started")
    when = (
        time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started))
        if isinstance(started, (int, float))
        else "?"
    )
    duration = run.get("duration")
    facts = [
        ("started", when),
        ("duration", f"{duration:.2f}s" if isinstance(duration, (int, float)) else "?"),
        ("platform", run.get("platform")),
        ("python", run.get("python")),
        ("pytest", run.get("pytest")),
        ("peak method", run.get("peak_method")),
        ("complete", "yes" if run.get("complete", True) else "no"),
    ]
    return (
        "<dl id=facts>"
        + "".join(
            f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in facts if v is not None
        )
        + "</dl>"
    )


def render_html(report: Report, sort: str = "growth", top: int = 5) -> str:
    """The whole page for ``report``: one string, no outside resources."""
    title = summary_title(report, sort, top).removeprefix("memstream: ")
    return (
        _PAGE.replace("@TOTALS@", escape(footer_line(report).removeprefix("memstream: ")))
        .replace("@FACTS@", _facts(report))
        .replace("@TOP_TITLE@", escape(title[:1].upper() + title[1:]))
        .replace("@TOP@", _top_table(report, sort, top))
        .replace("@CRASHED@", _crashes(report))
        .replace("@WORKERS@", _workers_table(report))
        .replace("@DATA@", _script_json(_data(report)))
    )


def write_html(report: Report, path: Path, sort: str = "growth", top: int = 5) -> None:
    """Write the page for ``report`` to ``path`` atomically."""
    write_atomically(path, [render_html(report, sort, top)])


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pytest-memstream report</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:16px 24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:20px 0 6px}
#totals{font-weight:600;margin:4px 0}
dl{display:flex;flex-wrap:wrap;gap:2px 18px;margin:4px 0;color:#555}
dt{font-weight:600}dt::after{content":"}dd{margin:0 0 0 -14px}
#wrap{position:relative}#plot{display:block;width:100%;border:1px solid #ddd}
#tip{position:absolute;pointer-events:none;background:#fffbe6;border:1px solid #bba;
padding:6px 8px;font-size:12px;white-space:pre;box-shadow:0 2px 6px #0003;z-index:2}
#hl{position:absolute;pointer-events:none;border:1px solid #000;background:#0001}
table{border-collapse:collapse;font-size:13px}
th,td{padding:2px 8px;border-bottom:1px solid #eee;text-align:left}
.num{text-align:right;font-variant-numeric:tabular-nums}.id{font-family:monospace}
.legend span{display:inline-block;margin-right:14px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}
.o-failed,.o-error{color:#c62828}.o-crashed{color:#b00020;font-weight:700}
.o-skipped,.o-xfailed{color:#777}
</style></head>
<body data-ready="0">
<h1>pytest-memstream report</h1>
<p id=totals>@TOTALS@</p>
@FACTS@
<h2>Timeline: RSS of each worker over time</h2>
<p class=legend><span><i style="background:#90caf9"></i>passed</span
><span><i style="background:#ef9a9a"></i>failed</span
><span><i style="background:#ffcc80"></i>error</span
><span><i style="background:#cfd8dc"></i>skipped</span
><span><i style="background:#f7c8c8;border:1px solid #d50000"></i>crashed</span
><span><i style="background:#e1bee7"></i>xfailed</span
><span><i style="background:#80cbc4"></i>xpassed</span
><span>band: a test, from its start RSS to its peak; line: RSS; dashed: its process
tree (the worker and the processes it started); hover for figures</span></p>
<div id=totalwrap><canvas id=total></canvas><p id=totalnote></p></div>
<div id=wrap><canvas id=plot></canvas><div id=hl hidden></div><div id=tip hidden></div></div>
<h2>@TOP_TITLE@</h2>
@TOP@
@CRASHED@
<h2>Workers</h2>
@WORKERS@
<script type="application/json" id=data>@DATA@</script>
<script>
"use strict";
(function () {
  var t0 = performance.now();
  var D = JSON.parse(document.getElementById("data").textContent);
  var T = D.tests, NW = D.workers.length;
  var FILL = [
    "#90caf9", "#ef9a9a", "#ffcc80", "#cfd8dc", "rgba(213,0,0,0.15)", "#e1bee7", "#80cbc4"
  ];
  var ROW = 120, GAP = 26, LEFT = 78, RIGHT = 16, TOP = 8, AXIS = 26;
  var rows = [], top = [], end = 1, i, r;
  for (i = 0; i < NW; i++) { rows.push([]); top.push(1); }
  for (i = 0; i < T.length; i++) {
    r = T[i];
    rows[r[0]].push(i);
    if (r[6] > top[r[0]]) top[r[0]] = r[6];
    if (r[12] !== null && r[12] > top[r[0]]) top[r[0]] = r[12];
    if (r[3] > end) end = r[3];
  }
  for (var k in D.samples) {
    D.samples[k].forEach(function (s) {
      var w = T[+k][0];
      if (s[1] > top[w]) top[w] = s[1];
      if (s[0] > end) end = s[0];
    });
  }
  // Start times in one typed array per worker: what the hover searches.
  var starts = rows.map(function (row) {
    row.sort(function (a, b) { return T[a][2] - T[b][2]; });
    var s = new Float64Array(row.length);
    for (var j = 0; j < row.length; j++) s[j] = T[row[j]][2];
    return s;
  });
  var canvas = document.getElementById("plot"), ctx = canvas.getContext("2d");
  var tip = document.getElementById("tip"), hl = document.getElementById("hl");
  var width = 0, plotW = 1;
  function x(t) { return LEFT + t / end * plotW; }
  function rowTop(w) { return TOP + w * (ROW + GAP); }
  function size(n, signed) {
    var sign = signed ? (n >= 0 ? "+" : "-") : (n < 0 ? "-" : ""), v = Math.abs(n);
    var units = ["B", "K", "M", "G", "T"];
    for (var u = 0; u < 4 && v >= 1024; u++) v /= 1024;
    return sign + (u === 0 ? v.toFixed(0) : v.toFixed(1)) + units[u];
  }
  function draw() {
    width = canvas.parentNode.clientWidth;
    plotW = Math.max(1, width - LEFT - RIGHT);
    var height = TOP + NW * (ROW + GAP) + AXIS, dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(width * dpr); canvas.height = Math.round(height * dpr);
    canvas.style.height = height + "px";
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.font = "12px system-ui,sans-serif";
    var bands = 0, trees = 0;
    for (var w = 0; w < NW; w++) {
      var row = rows[w], y0 = rowTop(w), scale = ROW / (top[w] * 1.08);
      var y = function (v) { return y0 + ROW - v * scale; };
      ctx.fillStyle = "#fafafa"; ctx.fillRect(LEFT, y0, plotW, ROW);
      ctx.fillStyle = "#222"; ctx.textBaseline = "top";
      ctx.fillText(D.workers[w], 6, y0 + ROW / 2 - 16);
      ctx.fillStyle = "#777";
      ctx.fillText(row.length + (row.length === 1 ? " test" : " tests"), 6, y0 + ROW / 2);
      ctx.textAlign = "right";
      ctx.fillText(size(top[w]), LEFT - 4, y(top[w]));
      ctx.textBaseline = "bottom"; ctx.fillText("0", LEFT - 4, y0 + ROW);
      ctx.textBaseline = "top"; ctx.textAlign = "left";
      // Bands, one fill colour at a time: a few thousand rectangles per path.
      for (var o = 0; o < FILL.length; o++) {
        ctx.fillStyle = FILL[o]; ctx.beginPath();
        for (var j = 0; j < row.length; j++) {
          r = T[row[j]];
          if (r[1] !== o) continue;
          var bx = x(r[2]), bw = Math.max(1, x(r[3]) - bx);
          var by = y(Math.max(r[6], r[4])), bh = Math.max(1, y(r[4]) - by);
          ctx.rect(bx, by, bw, bh);
          bands++;
        }
        ctx.fill();
      }
      // Process trees: the worker and its children, from the tree's start to its peak.
      ctx.strokeStyle = "#e65100"; ctx.setLineDash([4, 3]); ctx.beginPath();
      for (j = 0; j < row.length; j++) {
        r = T[row[j]];
        if (r[12] === null) continue;
        var tx0 = x(r[2]), tw = Math.max(1, x(r[3]) - tx0), ty = y(r[12]);
        ctx.rect(tx0, ty, tw, Math.max(1, y(r[11]) - ty));
        trees++;
      }
      ctx.stroke(); ctx.setLineDash([]);
      // RSS: start, peak and end of each test in order.
      ctx.strokeStyle = "#1a237e"; ctx.lineWidth = 1; ctx.beginPath();
      for (j = 0; j < row.length; j++) {
        r = T[row[j]];
        var sx = x(r[2]), ex = x(r[3]);
        if (j === 0) ctx.moveTo(sx, y(r[4])); else ctx.lineTo(sx, y(r[4]));
        if (r[1] === 4 && D.samples[row[j]]) { ctx.moveTo(ex, y(r[5])); continue; }  // drawn below
        if (ex - sx > 3) ctx.lineTo((sx + ex) / 2, y(r[6]));
        ctx.lineTo(ex, y(r[5]));
      }
      ctx.stroke();
      // Crashed tests: their last samples, and a mark where the worker died.
      for (j = 0; j < row.length; j++) {
        r = T[row[j]];
        if (r[1] !== 4) continue;
        var smp = D.samples[row[j]] || [];
        ctx.strokeStyle = "#d50000"; ctx.lineWidth = 2; ctx.beginPath();
        smp.forEach(function (s, n) {
          if (n) ctx.lineTo(x(s[0]), y(s[1])); else ctx.moveTo(x(s[0]), y(s[1]));
        });
        ctx.stroke();
        var cx = x(r[3]), cy = y(smp.length ? smp[smp.length - 1][1] : r[5]);
        ctx.beginPath(); ctx.moveTo(cx - 6, cy - 6); ctx.lineTo(cx + 6, cy + 6);
        ctx.moveTo(cx + 6, cy - 6); ctx.lineTo(cx - 6, cy + 6); ctx.stroke();
        ctx.fillStyle = "#b00020"; ctx.textBaseline = "bottom";
        var label = "\\u2620 died: " + r[10];
        ctx.textAlign = cx > width / 2 ? "right" : "left";
        ctx.fillText(label, cx + (cx > width / 2 ? -10 : 10), Math.max(y0 + 14, cy - 4));
        ctx.textAlign = "left"; ctx.lineWidth = 1;
      }
    }
    // The time axis, in seconds from the first test's start.
    var ay = TOP + NW * (ROW + GAP) - GAP + 4, step = niceStep(end / 1000 / 8);
    ctx.strokeStyle = "#999"; ctx.fillStyle = "#555"; ctx.textBaseline = "top";
    ctx.beginPath(); ctx.moveTo(LEFT, ay); ctx.lineTo(LEFT + plotW, ay); ctx.stroke();
    for (var s = 0; s * 1000 <= end; s += step) {
      var tx = x(s * 1000);
      ctx.beginPath(); ctx.moveTo(tx, ay); ctx.lineTo(tx, ay + 4); ctx.stroke();
      ctx.fillText(+s.toFixed(3) + "s", tx - 8, ay + 6);
    }
    document.body.dataset.trees = String(trees);
    drawTotals();
    return bands;
  }
  // The run as the machine sees it: every worker's tree, stacked, and the run's limit.
  function drawTotals() {
    var c = document.getElementById("total"), note = document.getElementById("totalnote");
    if (!D.totals.length) { c.hidden = true; return; }
    var g = c.getContext("2d"), H = 140, dpr = window.devicePixelRatio || 1;
    c.width = Math.round(width * dpr); c.height = Math.round(H * dpr);
    c.style.height = H + "px"; g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, width, H); g.font = "12px system-ui,sans-serif";
    var peak = 1, n, p, k;
    for (n = 0; n < D.totals.length; n++) {
      var sum = 0;
      for (k = 0; k < NW; k++) sum += D.totals[n][1][k];
      if (sum > peak) peak = sum;
    }
    var showLimit = D.limit && D.limit <= peak * 2;
    var top = showLimit ? Math.max(peak, D.limit) : peak;
    var y = function (v) { return TOP + (H - TOP - 4) * (1 - v / (top * 1.05)); };
    var COLORS = ["#90caf9", "#a5d6a7", "#ffcc80", "#ce93d8", "#80deea", "#ef9a9a"];
    g.fillStyle = "#fafafa"; g.fillRect(LEFT, TOP, plotW, H - TOP - 4);
    for (k = NW - 1; k >= 0; k--) {  // each worker's band on the ones before it
      g.fillStyle = COLORS[k % COLORS.length]; g.beginPath(); g.moveTo(x(D.totals[0][0]), y(0));
      for (n = 0; n < D.totals.length; n++) {
        p = D.totals[n]; var upto = 0;
        for (var m = 0; m <= k; m++) upto += p[1][m];
        g.lineTo(x(p[0]), y(upto));
      }
      g.lineTo(x(D.totals[D.totals.length - 1][0]), y(0)); g.closePath(); g.fill();
    }
    g.fillStyle = "#222"; g.textBaseline = "top"; g.fillText("all workers", 6, TOP + 20);
    g.fillStyle = "#777"; g.textAlign = "right"; g.fillText(size(peak), LEFT - 4, y(peak));
    g.textAlign = "left";
    if (showLimit) {
      g.strokeStyle = "#d50000"; g.setLineDash([6, 4]); g.beginPath();
      g.moveTo(LEFT, y(D.limit)); g.lineTo(LEFT + plotW, y(D.limit)); g.stroke(); g.setLineDash([]);
      g.fillStyle = "#d50000"; g.textBaseline = "bottom";
      g.fillText("limit " + size(D.limit), LEFT + 4, y(D.limit) - 2);
    }
    note.textContent = "The run's total: every worker's process tree, stacked (peak " +
      size(peak) + (D.limit ? "; the run may have " + size(D.limit) +
      (showLimit ? ", dashed" : "") : "") + ").";
    document.body.dataset.totals = String(D.totals.length);
  }
  function niceStep(raw) {
    var p = Math.pow(10, Math.floor(Math.log10(Math.max(raw, 1e-3))));
    var m = raw / p;
    return (m > 5 ? 10 : m > 2 ? 5 : m > 1 ? 2 : 1) * p;
  }
  // The test under (px, w): the last to start at or before it, or a neighbour within 3px.
  function find(w, px) {
    var s = starts[w], t = (px - LEFT) / plotW * end, lo = 0, hi = s.length - 1, best = -1;
    while (lo <= hi) {
      var mid = (lo + hi) >> 1;
      if (s[mid] <= t) { best = mid; lo = mid + 1; } else hi = mid - 1;
    }
    var slack = 3 / plotW * end, cand = [best, best + 1, best - 1], pick = -1, dist = Infinity;
    for (var c = 0; c < cand.length; c++) {
      var n = cand[c];
      if (n < 0 || n >= s.length) continue;
      r = T[rows[w][n]];
      var d = t < r[2] ? r[2] - t : t > r[3] ? t - r[3] : 0;
      if (d <= slack && d < dist) { dist = d; pick = rows[w][n]; }
    }
    return pick;
  }
  canvas.addEventListener("mousemove", function (ev) {
    var box = canvas.getBoundingClientRect(), px = ev.clientX - box.left, py = ev.clientY - box.top;
    var w = Math.floor((py - TOP) / (ROW + GAP));
    var n = w >= 0 && w < NW && py - rowTop(w) <= ROW ? find(w, px) : -1;
    if (n < 0) { tip.hidden = true; hl.hidden = true; return; }
    r = T[n];
    tip.textContent = r[10] + "\\n" +
      "worker " + D.workers[r[0]] + ", " + D.outcomes[r[1]] + "\\n" +
      "growth " + size(r[7], true) + ", peak " + size(r[6]) +
      (r[8] === null ? "" : ", kept " + size(r[8], true)) + "\\n" +
      "peak in " + (r[9] >= 0 ? D.phases[r[9]] : "?") +
      ", RSS " + size(r[4]) + " -> " + size(r[5]) + "\\n" +
      "duration " + ((r[3] - r[2]) / 1000).toFixed(3) + "s" +
      (r[13] ? "\\ntree " + size(r[12] - r[11], true) + " to " + size(r[12]) + ", " + r[13] +
        (r[13] === 1 ? " process" : " processes") : "");
    tip.hidden = false;
    var left = px + 14;
    if (left + tip.offsetWidth > width) left = Math.max(0, px - 14 - tip.offsetWidth);
    tip.style.left = left + "px"; tip.style.top = (py + 14) + "px";
    var bx = x(r[2]);
    hl.style.left = bx + "px"; hl.style.width = Math.max(2, x(r[3]) - bx) + "px";
    hl.style.top = rowTop(w) + "px"; hl.style.height = ROW + "px"; hl.hidden = false;
  });
  canvas.addEventListener("mouseleave", function () { tip.hidden = true; hl.hidden = true; });
  var pending = 0;
  window.addEventListener("resize", function () {
    clearTimeout(pending); pending = setTimeout(draw, 100);
  });
  var bands = draw();
  var body = document.body.dataset;
  body.bands = String(bands);
  body.tests = String(T.length);
  body.rows = String(document.querySelectorAll("#top tbody tr").length);
  body.renderMs = (performance.now() - t0).toFixed(1);
  body.ready = "1";
})();
</script>
</body></html>
"""
