"""pytest-memstream: which tests eat memory, on which worker, right now."""

from __future__ import annotations

#: What a report's tests can be sorted by, and the field of a test each sorts on (the same
#: name in the JSON report and the viewer state).  Here, in the module every process has
#: loaded anyway, so that pytest's option parsing can name them without importing another.
SORT_FIELDS = {"growth": "growth", "peak": "peak_rss", "kept": "kept", "tree": "tree_growth"}
SORT_KEYS = tuple(SORT_FIELDS)


def __getattr__(name: str) -> str:
    # Looked up on demand: reading the package metadata costs every pytest run that has
    # the plugin installed a couple of milliseconds, and only the ``memstream`` command
    # (its ``--version``) needs it.
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pytest-memstream")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"
