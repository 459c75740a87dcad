"""Field checks, declared once per message kind as a table, and strict msgpack decoding.

A check takes a decoded value and returns it (normalised: an int time becomes a float)
or raises ValueError saying what it expected.  :func:`check_fields` applies a table of
them to a map and names the first field that is wrong.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import msgpack

from pytest_memstream.protocol import ProtocolError

#: Sizes and counts beyond this are nonsense (2**53 keeps them exact as floats).
MAX_INT = 1 << 53
MAX_DURATION = 1e7
#: Longest test id carried as it is; a longer one is cut (see stream.cut_nodeid).
MAX_NODEID = 8192
WORKER_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")

Check = Callable[[Any], Any]
#: A message kind's fields in the order they are checked: ``(name, check)``.
Fields = tuple[tuple[str, Check], ...]


def integer(lo: int = 0, hi: int = MAX_INT) -> Check:
    def check(value: Any) -> int:
        if type(value) is not int or not lo <= value <= hi:
            raise ValueError(f"expected an int in [{lo}, {hi}], got {value!r:.40}")
        return value

    return check


def number(lo: float = 0.0, hi: float = 1e12) -> Check:
    def check(value: Any) -> float:
        if type(value) is int:
            value = float(value)
        if type(value) is not float or not math.isfinite(value) or not lo <= value <= hi:
            raise ValueError(f"expected a number in [{lo}, {hi}], got {value!r:.40}")
        return value

    return check


def string(max_len: int) -> Check:
    """A string of 1..max_len characters."""

    def check(value: Any) -> str:
        if type(value) is not str or not 0 < len(value) <= max_len:
            raise ValueError(f"expected a string of 1..{max_len} characters, got {value!r:.40}")
        return value

    return check


def text(max_len: int) -> Check:
    """A string that may be empty (an error message, a test that is not known)."""

    def check(value: Any) -> str:
        if type(value) is not str or len(value) > max_len:
            raise ValueError(f"expected a string of at most {max_len} characters")
        return value

    return check


def choice(options: frozenset[str] | tuple[str, ...]) -> Check:
    def check(value: Any) -> str:
        # The type first: a list or a map is not even hashable.
        if type(value) is not str or value not in options:
            raise ValueError(f"expected one of {sorted(options)}, got {value!r:.40}")
        return value

    return check


def optional(check: Check) -> Check:
    """``check``, or nil."""

    def check_or_none(value: Any) -> Any:
        return None if value is None else check(value)

    return check_or_none


def worker_id(value: Any) -> str:
    if type(value) is not str or not WORKER_ID.fullmatch(value):
        raise ValueError(f"expected a worker id ([A-Za-z0-9_.-], 1..64), got {value!r:.40}")
    return value


size = integer()
count = integer()
signed_size = integer(-MAX_INT, MAX_INT)
duration = number(0.0, MAX_DURATION)
timestamp = number(0.0, 1e11)
nodeid = string(MAX_NODEID)


def check_fields(raw: Any, fields: Fields, kind: str) -> dict[str, Any]:
    """``raw`` (a map) checked against ``fields``, all required; unknown fields ignored."""
    if type(raw) is not dict:
        raise ProtocolError("schema", f"{kind}: expected a map, got {type(raw).__name__}")
    out: dict[str, Any] = {}
    name = ""
    try:
        for name, check in fields:
            out[name] = check(raw[name])
    except KeyError:
        raise ProtocolError("schema", f"{kind}.{name}: missing") from None
    except ValueError as exc:
        raise ProtocolError("schema", f"{kind}.{name}: {exc}") from None
    return out


def check_optional(raw: Mapping[str, Any], fields: Fields, kind: str, out: dict[str, Any]) -> None:
    """Add to ``out`` those of ``fields`` that ``raw`` carries, checked."""
    for name, check in fields:
        if name in raw:
            try:
                out[name] = check(raw[name])
            except ValueError as exc:
                raise ProtocolError("schema", f"{kind}.{name}: {exc}") from None


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not allowed")


def unpacker(max_buffer: int, max_array: int, max_map: int, max_bin: int = 0) -> Any:
    """A msgpack Unpacker with every limit set and no extension types."""
    return msgpack.Unpacker(
        raw=False,
        strict_map_key=True,
        use_list=True,
        ext_hook=_no_ext,
        max_buffer_size=max(max_buffer, 1),
        max_str_len=MAX_NODEID * 4,
        max_bin_len=max_bin,
        max_array_len=max_array,
        max_map_len=max_map,
        max_ext_len=0,
    )


def unpack_strict(body: bytes, max_array: int, max_map: int, max_bin: int = 0) -> Any:
    """msgpack-decode one object ``body`` with every limit set and no extension types."""
    try:
        return msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            use_list=True,
            ext_hook=_no_ext,
            max_str_len=MAX_NODEID * 4,
            max_bin_len=max_bin,
            max_array_len=max_array,
            max_map_len=max_map,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises a zoo of types on hostile input
        raise ProtocolError("msgpack", f"{type(exc).__name__}: {exc}"[:200]) from None
