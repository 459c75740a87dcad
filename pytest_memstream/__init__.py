"""pytest-memstream: which tests eat memory, on which worker, right now."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pytest-memstream")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
