"""Counts as people write them: ``1 test``, ``2 tests``."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str = "") -> str:
    """``n`` and ``noun``, plural unless ``n`` is one (``noun`` + ``s`` unless told)."""
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"
