"""Counts as people write them: ``1 test``, ``2 tests``."""

from __future__ import annotations


def counted(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is one (the nouns here take an ``s``)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
