"""The viewer protocol: the run's state, served to any number of viewers.

Viewers attach to the sink the way the ZeroMQ guide's "clone" pattern describes: a SUB
socket on the ``updates`` endpoint (an XPUB) receives every change to the run's state,
numbered by ``seq``; a DEALER socket on the ``snapshot`` endpoint (a ROUTER) asks for the
whole state, tagged with the ``seq`` of the last update it includes.  Every frame is one
msgpack map; the sockets are CURVE-secured, and only a peer with the run's viewer key
gets through the handshake (see ``security``).  docs/protocol.md describes it all.

The state is a key-value map; an update *sets* keys to their complete new value, so
applying an update that a snapshot already contains changes nothing:

  "run"               the run's totals and whether it has finished
  "w/<worker>"        one worker: status, counters, the test it runs now
  "t/<worker>/<i>"    one finished (or crashed) test's record

The values use the JSON report's names for the same figures.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgpack

from pytest_memstream.protocol import PEAK_METHODS, PHASES, TEST_OUTCOMES, ProtocolError
from pytest_memstream.protocol.checks import (
    MAX_INT,
    MAX_NODEID,
    Check,
    Fields,
    check_fields,
    check_optional,
    choice,
    count,
    integer,
    nodeid,
    number,
    optional,
    signed_size,
    size,
    string,
    text,
    timestamp,
    unpack_strict,
)

VERSION = 2
NONCE_MIN, NONCE_MAX = 8, 64
#: Most keys in one update or snapshot part; a sender splits larger sets.
MAX_SETS = 4096
#: Recent RSS samples of a running test that a worker view carries (for a sparkline).
RECENT_SAMPLES = 48
#: Largest viewer frame either side accepts (a snapshot part is kept well below it).
MAX_FRAME = 4 << 20
RUN_STATUSES = frozenset({"running", "finished"})
REQUEST_KINDS = frozenset({"hello", "snapshot"})
ERROR_REASONS = frozenset({"version", "request"})

Message = dict[str, Any]


def _nonce(value: Any) -> bytes:
    if type(value) is not bytes or not NONCE_MIN <= len(value) <= NONCE_MAX:
        raise ValueError(f"expected {NONCE_MIN}..{NONCE_MAX} random bytes")
    return value


def _any_nonce(value: Any) -> bytes:
    return b"" if value == b"" and type(value) is bytes else _nonce(value)


def _recent(value: Any) -> list[int]:
    if type(value) is not list or len(value) > RECENT_SAMPLES:
        raise ValueError(f"expected at most {RECENT_SAMPLES} RSS values")
    return [size(rss) for rss in value]


def _map_of(fields: Fields, kind: str) -> Check:
    def check(value: Any) -> dict[str, Any]:
        try:
            return check_fields(value, fields, kind)
        except ProtocolError as exc:
            raise ValueError(exc.detail) from None

    return check


RUN_VIEW: Fields = (
    ("status", choice(RUN_STATUSES)),
    ("pid", integer(1, 1 << 32)),
    ("started", timestamp),
    ("messages", count),
    ("frames", count),
    ("rejected", count),
    ("tests", count),
    # Every worker's process tree together, now and at its highest; the memory the run
    # may have and what is left of it (nil where unknown).
    ("total", size),
    ("peak_total", size),
    ("limit", optional(size)),
    ("headroom", optional(size)),
)
RUNNING_VIEW: Fields = (
    ("index", count),
    ("nodeid", nodeid),
    ("phase", choice(PHASES)),
    ("started", timestamp),
    ("rss_start", size),
    ("rss", size),
    ("peak_rss", size),
    ("climb_rate", number(-1e15, 1e15)),
    ("recent_rss", _recent),
    # The worker's and its descendants' total now and at the start: nil without any.
    ("tree", optional(size)),
    ("tree_start", optional(size)),
)
WORKER_VIEW: Fields = (
    ("status", string(16)),
    ("pid", integer(0, 1 << 32)),
    ("peak_method", text(16)),
    ("messages", count),
    ("lost", count),
    ("dropped", count),
    ("recovered", count),
    ("unrecoverable", count),
    ("max_rss", size),
    ("crashed_test", text(MAX_NODEID)),
    ("error", text(4096)),
    ("running", optional(_map_of(RUNNING_VIEW, "running"))),
)
#: Fields a worker's view may leave out (a sink before workers on other hosts streamed).
WORKER_OPTIONAL: Fields = (("host", text(253)),)
TEST_VIEW: Fields = (
    ("nodeid", nodeid),
    ("worker", string(64)),
    ("index", count),
    ("outcome", choice(TEST_OUTCOMES)),
    ("rss_start", size),
    ("peak_rss", size),
    ("rss_end", size),
    ("growth", signed_size),
    ("kept", optional(signed_size)),
    ("peak_phase", text(16)),
    ("peak_method", choice(PEAK_METHODS)),
    ("source", string(16)),
    ("started", timestamp),
    ("finished", timestamp),
    ("tree_growth", signed_size),
    ("children", count),
)

_KEY = re.compile(r"run|w/([A-Za-z0-9_.-]{1,64})|t/([A-Za-z0-9_.-]{1,64})/(\d{1,15})")


def check_view(key: Any, value: Any) -> dict[str, Any]:
    """Validate one ``key -> value`` of the viewer state; ProtocolError if malformed."""
    match = _KEY.fullmatch(key) if type(key) is str else None
    if match is None:
        raise ProtocolError("schema", f"unknown state key {key!r:.40}")
    schema = RUN_VIEW if key == "run" else WORKER_VIEW if key[0] == "w" else TEST_VIEW
    view = check_fields(value, schema, key)
    if schema is WORKER_VIEW:
        check_optional(value, WORKER_OPTIONAL, key, view)
    return view


def _sets(value: Any) -> dict[str, dict[str, Any]]:
    if type(value) is not dict or len(value) > MAX_SETS:
        raise ValueError(f"expected a map of at most {MAX_SETS} state keys")
    try:
        return {key: check_view(key, item) for key, item in value.items()}
    except ProtocolError as exc:
        raise ValueError(exc.detail) from None


#: Fields of each message kind, beyond ``v`` and ``k``.
SCHEMAS: dict[str, Fields] = {
    # viewer -> snapshot endpoint
    "hello": (("nonce", _nonce),),
    "snapshot": (("nonce", _nonce),),
    # snapshot endpoint -> viewer
    "welcome": (
        ("nonce", _nonce),
        ("seq", count),
        ("updates", string(1024)),
        ("beat", number(0.01, 3600.0)),
        ("pid", integer(1, 1 << 32)),
        ("started", timestamp),
    ),
    "snap": (
        ("nonce", _nonce),
        ("seq", count),
        ("part", count),
        ("parts", integer(1, MAX_INT)),
        ("sets", _sets),
    ),
    # the answer to a request the sink cannot serve; ``nonce`` is empty if unreadable
    "error": (("nonce", _any_nonce), ("reason", choice(ERROR_REASONS))),
    # updates endpoint -> viewers
    "update": (("seq", integer(1)), ("t", timestamp), ("sets", _sets)),
    "beat": (("seq", count), ("t", timestamp)),
}


def encode(kind: str, fields: Mapping[str, Any]) -> bytes:
    """One viewer-protocol message."""
    body: bytes = msgpack.packb({"v": VERSION, "k": kind, **fields})
    return body


def decode(body: bytes, kinds: frozenset[str]) -> Message:
    """Unpack and check one viewer-protocol message of one of ``kinds``."""
    if len(body) > MAX_FRAME:
        raise ProtocolError("size", f"a message of {len(body)} bytes exceeds {MAX_FRAME}")
    raw = unpack_strict(body, max_array=RECENT_SAMPLES, max_map=MAX_SETS, max_bin=NONCE_MAX)
    if type(raw) is not dict:
        raise ProtocolError("schema", "a viewer message must be a map")
    version = raw.get("v")
    if version != VERSION or type(version) is not int:
        raise ProtocolError("version", f"unsupported viewer protocol version {version!r:.20}")
    kind = raw.get("k")
    if type(kind) is not str or kind not in kinds:
        raise ProtocolError("schema", f"unexpected message kind {kind!r:.20}")
    try:
        fields = check_fields(raw, SCHEMAS[kind], kind)
    except RecursionError:
        raise ProtocolError("schema", f"{kind}: a value nested too deep") from None
    return {"v": version, "k": kind, **fields}
