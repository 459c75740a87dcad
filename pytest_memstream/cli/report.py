"""``memstream report RUN.json ...``: the summary of saved runs, merged, and files made of it.

One file prints its summary as the run printed it.  Several (the shards of one suite, run
by separate CI jobs) are merged into one report first (collector/merge.py), each worker
named after its shard.  From the report it writes the JSON, HTML and Markdown files and
adds it to a baseline, as the plugin would.  This module parses arguments and reports
what happened; the work is the collector's.

A half-written, foreign or damaged file is one clear line naming the file and what is
wrong with it (exit status 2), never a traceback; when merging, the other files still
merge, and the merged run is marked incomplete.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from pytest_memstream import SORT_KEYS
from pytest_memstream.collector.baseline import (
    DEFAULT_RUNS,
    is_baseline_name,
    is_baseline_path,
    is_test_path,
)
from pytest_memstream.collector.load import BadReport, load_report
from pytest_memstream.collector.report import Report, summary_lines, summary_title

EXIT_OK, EXIT_BAD_FILE = 0, 2


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report",
        help="print the summary of saved runs (--memstream-json), merged; write files of it",
        description=(
            "Print the terminal summary of a run saved with --memstream-json, as the run "
            "printed it.  Several files (the shards of one suite) are merged into one "
            "report, each worker named after its shard (shard1/gw0, ...).  The options "
            "write the (merged) report as JSON, HTML or Markdown, or add it to a baseline."
        ),
    )
    parser.add_argument(
        "paths", type=Path, nargs="+", metavar="RUN.json", help="saved JSON reports"
    )
    parser.add_argument(
        "--label",
        action="append",
        metavar="LABEL",
        help="name of each file's shard, once per file, in order (default shard1, shard2, ...)",
    )
    parser.add_argument(
        "--top", type=_top, default=5, metavar="N", help="rows in the summary, 0 for all (5)"
    )
    parser.add_argument(
        "--sort", choices=SORT_KEYS, default="growth", help="order of the summary (growth)"
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="add a line per worker")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="one short line per test")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the report to PATH")
    parser.add_argument("--html", type=Path, metavar="PATH", help="write the HTML report to PATH")
    parser.add_argument(
        "--markdown",
        metavar="PATH",
        help="write a Markdown summary to PATH; - prints it instead of the summary",
    )
    parser.add_argument(
        "--save-baseline",
        type=_baseline,
        metavar="NAME|PATH",
        help="add the report to baseline NAME (in the nearest .pytest_cache) or file PATH",
    )
    parser.add_argument(
        "--baseline-runs",
        type=_runs,
        default=DEFAULT_RUNS,
        metavar="N",
        help=f"runs the baseline keeps, the oldest dropped first ({DEFAULT_RUNS})",
    )
    parser.set_defaults(func=main, parser=parser)


def _top(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def _runs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 100, got {text!r}")
    return value


def _baseline(text: str) -> str:
    if is_test_path(text) or not (is_baseline_path(text) or is_baseline_name(text)):
        raise argparse.ArgumentTypeError(
            f"expected a baseline name (letters, digits, _ . -) or a path that contains a "
            f"separator or ends in .json (not .py), got {text!r}"
        )
    return text


def main(args: argparse.Namespace) -> int:
    labels: list[str] | None = args.label
    if labels is not None and len(labels) != len(args.paths):
        args.parser.error(f"{len(labels)} --label for {len(args.paths)} files: give one per file")
    if labels is not None and (len(set(labels)) != len(labels) or not all(labels)):
        args.parser.error("each --label must be given, and different from the others")
    report, status = _read(args.paths, labels)
    if report is None:
        return status
    # With the Markdown on standard output, what else is said goes to standard error.
    out = sys.stderr if args.markdown == "-" else sys.stdout
    verbosity = args.verbose - args.quiet
    if args.markdown != "-":
        print(summary_title(report, args.sort, args.top), file=out)
        for line in summary_lines(report, args.sort, args.top, verbosity):
            print(line, file=out)
    for write in (_write_json, _write_html, _write_markdown, _save_baseline):
        if not write(report, args, out):
            status = EXIT_BAD_FILE
    return status


def _read(paths: list[Path], labels: list[str] | None) -> tuple[Report | None, int]:
    """The report of one file, or of several merged; the exit status so far."""
    if len(paths) == 1 and labels is None:
        try:
            return load_report(paths[0]), EXIT_OK
        except BadReport as exc:
            print(f"memstream report: {paths[0]}: {exc}", file=sys.stderr)
            return None, EXIT_BAD_FILE
    from pytest_memstream.collector.merge import default_labels, merge, read_shards

    shards = read_shards(paths, labels or default_labels(len(paths)))
    for shard in shards:
        if shard.report is None:
            print(f"memstream report: {shard.file}: {shard.problem}", file=sys.stderr)
    if all(shard.report is None for shard in shards):
        return None, EXIT_BAD_FILE
    status = EXIT_OK if all(shard.report is not None for shard in shards) else EXIT_BAD_FILE
    return merge(shards), status


def _write_json(report: Report, args: argparse.Namespace, out: TextIO) -> bool:
    if args.json is None:
        return True
    from pytest_memstream.collector.report import write_report

    return _written(lambda: write_report(report, args.json), args.json, "JSON report", out)


def _write_html(report: Report, args: argparse.Namespace, out: TextIO) -> bool:
    if args.html is None:
        return True
    from pytest_memstream.collector.html import write_html

    def write() -> None:
        write_html(report, args.html, args.sort, args.top)

    return _written(write, args.html, "HTML report", out)


def _write_markdown(report: Report, args: argparse.Namespace, out: TextIO) -> bool:
    if args.markdown is None:
        return True
    from pytest_memstream.collector.markdown import render_markdown, write_markdown

    markdown = render_markdown(report, args.sort, args.top)
    if args.markdown == "-":
        sys.stdout.write(markdown)
        return True
    path = Path(args.markdown)
    return _written(lambda: write_markdown(markdown, path), path, "Markdown summary", out)


def _save_baseline(report: Report, args: argparse.Namespace, out: TextIO) -> bool:
    if args.save_baseline is None:
        return True
    from pytest_memstream.collector.baseline import save_baseline_file
    from pytest_memstream.collector.report import incomplete_reason

    where = args.save_baseline
    if not report["run"].get("complete", True):
        print(
            f"memstream report: baseline {where} not saved: the run is not complete "
            f"({incomplete_reason(report['run'])})",
            file=sys.stderr,
        )
        return False
    path = Path(where) if is_baseline_path(where) else _cached(where)
    if path is None:
        print(
            f"memstream report: no .pytest_cache at or above {Path.cwd()} to keep baseline "
            f"{where!r} in: give a file path (ending in .json) instead",
            file=sys.stderr,
        )
        return False
    try:
        runs, problem = save_baseline_file(path, report, args.baseline_runs)
    except OSError as exc:
        print(f"memstream report: could not save the baseline to {path}: {exc}", file=sys.stderr)
        return False
    if problem:
        print(f"memstream report: warning: {problem}", file=sys.stderr)
    kept = f"{runs} of at most {args.baseline_runs} runs"
    print(f"memstream: baseline saved to {path} ({kept})", file=out)
    return True


def _cached(name: str) -> Path | None:
    """Where pytest's cache nearest to here keeps baseline ``name``, as ``config.cache``
    would (``.pytest_cache/v/KEY``)."""
    from pytest_memstream.collector.baseline import CACHE_KEY
    from pytest_memstream.session import cache_dirs

    found = cache_dirs(Path.cwd())
    return found[0] / "v" / (CACHE_KEY + name) if found else None


def _written(write: Any, path: Path, what: str, out: TextIO) -> bool:
    try:
        write()
    except OSError as exc:
        print(f"memstream report: could not write {path}: {exc}", file=sys.stderr)
        return False
    print(f"memstream: {what} written to {path}", file=out)
    return True
