"""The ``memstream`` command."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from pytest_memstream import __version__
from pytest_memstream.cli import report, watch

#: A command line that cannot work, as pytest's own exit status for one.
EXIT_USAGE = 4


class Parser(argparse.ArgumentParser):
    """argparse, with pytest's exit status for a usage error and its message on one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
