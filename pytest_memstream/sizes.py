"""Memory sizes as people write and read them.

Input: a plain number is bytes; ``K``/``M``/``G``/``T`` and ``KiB``/``MiB``/``GiB``/``TiB``
are powers of 1024; ``KB``/``MB``/``GB``/``TB`` are powers of 1000 (as disk vendors and
the SI mean them).  Case does not matter, a decimal point is allowed: ``500M``,
``1.5GiB``, ``2GB``.  Output is always binary: ``512.0M`` means 512 MiB.
"""

from __future__ import annotations

import re

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kib": 1 << 10,
    "kb": 1000,
    "m": 1 << 20,
    "mib": 1 << 20,
    "mb": 1000**2,
    "g": 1 << 30,
    "gib": 1 << 30,
    "gb": 1000**3,
    "t": 1 << 40,
    "tib": 1 << 40,
    "tb": 1000**4,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*")


def parse_size(text: str) -> int:
    """Bytes in ``text``; ValueError with a message that says what is accepted."""
    match = _SIZE.fullmatch(text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(
            f"{text!r} is not a size: write a number with an optional unit, "
            "like 500M, 1.5GiB or 2GB (K/M/G/T and KiB/MiB/GiB/TiB are powers of 1024, "
            "KB/MB/GB/TB powers of 1000)"
        )
    return int(float(match.group(1)) * _UNITS[unit or ""])


def format_size(n: float, signed: bool = False) -> str:
    """``n`` bytes as a short binary size: ``512.0M``, ``1.2G``, ``+3.4M`` when signed."""
    sign = ("+" if n >= 0 else "-") if signed else ("-" if n < 0 else "")
    value = abs(float(n))
    for unit in ("B", "K", "M", "G"):
        if value < 1024:
            return f"{sign}{value:.0f}{unit}" if unit == "B" else f"{sign}{value:.1f}{unit}"
        value /= 1024
    return f"{sign}{value:.1f}T"
