"""The ``memstream`` command."""

from __future__ import annotations

import argparse
import sys

from pytest_memstream import __version__
from pytest_memstream.cli import report, watch


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memstream",
        description="Tools for pytest-memstream: which tests eat memory, live and afterwards.",
    )
    parser.add_argument("--version", action="version", version=f"memstream {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    watch.add_parser(subparsers)
    report.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
