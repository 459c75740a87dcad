"""``python -m benchmarks [--long] [--only PART] [--write PATH | --no-write]``

Prints the machine, the versions and one markdown table per part; a full run also
writes them to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from benchmarks import (
    accuracy,
    breakdown,
    children,
    instructions,
    latency,
    overhead,
    remote,
    scale,
    schedule,
    throughput,
)
from benchmarks.common import ROOT, environment_lines, load_average, rule_table

PARTS: dict[str, Callable[[bool], str]] = {
    "overhead": overhead.run_part,
    "instructions": instructions.run_part,
    "breakdown": breakdown.run_part,
    "accuracy": accuracy.run_part,
    "children": children.run_part,
    "throughput": throughput.run_part,
    "latency": latency.run_part,
    "scale": scale.run_part,
    "schedule": schedule.run_part,
    "remote": remote.run_part,
}
DOC = ROOT / "docs" / "benchmarks.md"

INTRO = """\
# Benchmarks

What pytest-memstream costs and how right its numbers are, side by side with
pytest-memray and pytest-monitor. Everything below is the output of one run of
`scripts/bench{flags}`; run it again to replace it (`scripts/bench --help` for the options).
The machines this runs on are shared and noisy: every comparison alternates its contenders
run by run and reports medians of per-round ratios, never a single absolute time.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Benchmarks of pytest-memstream: overhead (against the plugin off, "
        "pytest-memray and pytest-monitor), where it goes, accuracy, sink throughput, "
        "live latency, scale, workers on another host.",
    )
    parser.add_argument("--long", action="store_true", help="more rounds and longer windows")
    parser.add_argument("--only", choices=sorted(PARTS), action="append", help="run one part")
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--write",
        type=Path,
        metavar="PATH",
        help=f"write results to PATH (default for a full run: {DOC.relative_to(ROOT)})",
    )
    target.add_argument("--no-write", action="store_true", help="only print")
    args = parser.parse_args(argv)
    # As on a developer's machine, pytest may cache the assertion-rewritten copy of each
    # plugin module; with PYTHONDONTWRITEBYTECODE (set on some CI machines) it parses and
    # compiles every plugin's modules again in every process: 15-20 ms for this one.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    parts = args.only or list(PARTS)
    started = time.monotonic()
    flags = (" --long" if args.long else "") + "".join(f" --only {p}" for p in args.only or [])
    sections = [INTRO.format(flags=flags), "## Machine and versions\n", *environment_lines(), ""]
    print("\n".join(sections), flush=True)
    failed = []
    for part in parts:
        print(f"== {part}", file=sys.stderr, flush=True)
        part_started = time.monotonic()
        try:
            text = PARTS[part](args.long)
        except Exception:
            failed.append(part)
            text = f"### {part}\n\n**failed**:\n\n```\n{traceback.format_exc()}```\n"
        took = time.monotonic() - part_started
        text += f"\n_{part}: {took:.0f} s_\n"
        print(text, flush=True)
        sections.append(text)
    rule = rule_table()
    print(rule, flush=True)
    # First in the file: the figures the project is held to.
    sections.insert(4, rule)
    footer = (
        f"Whole run: {time.monotonic() - started:.0f} s; load average at the end: {load_average()}."
    )
    print(footer)
    sections.append(footer)
    path = args.write if args.write else (DOC if not args.only and not args.no_write else None)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(sections) + "\n", encoding="utf-8")
        print(f"(written to {path})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
