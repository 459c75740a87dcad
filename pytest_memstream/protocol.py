"""The wire format that workers, the sink and viewers share.

This module is the one place where a message's shape is written down.

A *frame* on the worker→sink stream is a two-part ZeroMQ message ``[mac, body]``:
``body`` is a msgpack array of messages, ``mac`` the first 16 bytes of
HMAC-SHA256(secret, body).  Every message is a msgpack map with string keys; the
envelope fields are

    v  protocol version (int, == VERSION)
    k  kind (str, one of KINDS)
    w  worker id (str: "gw0", "gw1", ..., or "main" without xdist)
    q  per-worker sequence number (int, 0, 1, 2, ... with no gaps when nothing is lost)
    t  wall-clock time the event happened (float, seconds since the epoch)

and each kind adds the fields listed in ``SCHEMAS``.  Decoding is strict: size caps,
msgpack limits, no extension types, string keys only, and a schema and range check of
every field.  Anything else raises :class:`ProtocolError` with a short ``reason`` that
the sink counts.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import msgpack

VERSION = 1
MAC_SIZE = 16
#: Largest body the sink accepts; ZeroMQ drops a peer that sends a larger frame.
MAX_FRAME = 4 << 20
#: Most messages a worker puts into one frame.
MAX_BATCH = 4096
MAX_NODEID = 8192
MAX_SAMPLES = 1024
#: Sizes and sequence numbers beyond this are nonsense (2**53 keeps them exact as floats).
MAX_INT = 1 << 53

PHASES = ("setup", "call", "teardown")
PHASE_OUTCOMES = frozenset({"passed", "failed", "skipped"})
TEST_OUTCOMES = frozenset({"passed", "failed", "skipped", "error", "crashed"})
PEAK_METHODS = frozenset({"hwm", "sampled"})
WORKER_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")

Message = dict[str, Any]


class ProtocolError(ValueError):
    """A frame or message that does not follow this protocol.

    ``reason`` is one of a fixed set of short words, so that counting rejects by reason
    can never grow without bound.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# --- field checks -------------------------------------------------------------------

Check = Callable[[Any], Any]


def _int(lo: int = 0, hi: int = MAX_INT) -> Check:
    def check(value: Any) -> int:
        if type(value) is not int or not lo <= value <= hi:
            raise ValueError(f"expected an int in [{lo}, {hi}], got {value!r:.40}")
        return value

    return check


def _float(lo: float = 0.0, hi: float = 1e12) -> Check:
    def check(value: Any) -> float:
        if type(value) is int:
            value = float(value)
        if type(value) is not float or not math.isfinite(value) or not lo <= value <= hi:
            raise ValueError(f"expected a number in [{lo}, {hi}], got {value!r:.40}")
        return value

    return check


def _str(max_len: int) -> Check:
    def check(value: Any) -> str:
        if type(value) is not str or not 0 < len(value) <= max_len:
            raise ValueError(f"expected a string of 1..{max_len} characters, got {value!r:.40}")
        return value

    return check


def _choice(options: frozenset[str] | tuple[str, ...]) -> Check:
    def check(value: Any) -> str:
        if value not in options or type(value) is not str:
            raise ValueError(f"expected one of {sorted(options)}, got {value!r:.40}")
        return value

    return check


_size = _int()
_count = _int()
_duration = _float(0.0, 1e7)
_time = _float(0.0, 1e11)
_index = _int(-1)
_phase = _choice(PHASES)


def _phase_figures(value: Any) -> list[Any]:
    """``[rss_before, rss_after, peak_rss, duration]`` of one phase."""
    if type(value) is not list or len(value) != 4:
        raise ValueError(f"expected [rss_before, rss_after, peak_rss, duration], got {value!r:.60}")
    return [_size(value[0]), _size(value[1]), _size(value[2]), _duration(value[3])]


def _phase_map(value: Any) -> dict[str, list[Any]]:
    if type(value) is not dict or not 0 < len(value) <= len(PHASES):
        raise ValueError(f"expected a map of phases, got {value!r:.60}")
    return {_phase(name): _phase_figures(figures) for name, figures in value.items()}


def _samples(value: Any) -> list[list[Any]]:
    """``[[time, rss], ...]``, oldest first."""
    if type(value) is not list or not 0 < len(value) <= MAX_SAMPLES:
        raise ValueError(f"expected 1..{MAX_SAMPLES} samples")
    out = []
    for pair in value:
        if type(pair) is not list or len(pair) != 2:
            raise ValueError(f"expected a [time, rss] pair, got {pair!r:.40}")
        out.append([_time(pair[0]), _size(pair[1])])
    return out


def _optional_phase(value: Any) -> str:
    return "" if value == "" else _phase(value)


ENVELOPE: dict[str, Check] = {
    "v": _int(VERSION, VERSION),
    "k": _str(16),
    "w": _str(64),
    "q": _count,
    "t": _time,
}

#: Fields of each kind, beyond the envelope.  All are required; unknown fields are
#: ignored, so that a later minor version may add some.
SCHEMAS: dict[str, dict[str, Check]] = {
    # A worker starts streaming: who it is and how it measures.
    "hello": {
        "pid": _int(1, 1 << 32),
        "method": _choice(PEAK_METHODS),
        "interval": _float(0.0, 3600.0),
        "rss": _size,
        "platform": _str(64),
    },
    # A test starts (before its setup phase); ``i`` numbers tests per worker from 0.
    "start": {"i": _count, "id": _str(MAX_NODEID), "rss": _size},
    # One phase ended.  ``f`` = [rss_before, rss_after, peak_rss, duration].
    "phase": {
        "i": _count,
        "ph": _phase,
        "f": _phase_figures,
        "o": _choice(PHASE_OUTCOMES),
    },
    # Periodic RSS samples; ``i`` is the running test or -1, ``ph`` its phase or "".
    "sample": {"i": _index, "ph": _optional_phase, "s": _samples},
    # A test ended: its complete record, so that a lost phase message loses nothing.
    "end": {
        "i": _count,
        "id": _str(MAX_NODEID),
        "o": _choice(TEST_OUTCOMES),
        "m": _choice(PEAK_METHODS),
        "p": _phase_map,
        "t0": _time,
    },
    # The worker stops streaming; ``sent`` counts the messages before this one that
    # went onto the socket, ``dropped`` those that a full queue refused.
    "bye": {"sent": _count, "dropped": _count, "tests": _count},
}
KINDS = frozenset(SCHEMAS)


def check_message(raw: Any) -> Message:
    """Return a validated copy of one decoded message, or raise ProtocolError."""
    if type(raw) is not dict:
        raise ProtocolError("schema", f"a message must be a map, got {type(raw).__name__}")
    version = raw.get("v")
    if version != VERSION or type(version) is not int:
        raise ProtocolError("version", f"unsupported protocol version {version!r:.20}")
    kind = raw.get("k")
    schema = SCHEMAS.get(kind) if type(kind) is str else None
    if schema is None:
        raise ProtocolError("schema", f"unknown message kind {kind!r:.20}")
    out: Message = {}
    try:
        for fields in (ENVELOPE, schema):
            for name, check in fields.items():
                if name not in raw:
                    raise ValueError("missing")
                out[name] = check(raw[name])
    except ValueError as exc:
        raise ProtocolError("schema", f"{kind}.{name}: {exc}") from None
    if not WORKER_ID.fullmatch(out["w"]):
        raise ProtocolError("schema", f"bad worker id {out['w']!r:.40}")
    return out


# --- frames --------------------------------------------------------------------------


def new_secret() -> bytes:
    import secrets

    return secrets.token_bytes(32)


def sign(secret: bytes, body: bytes) -> bytes:
    return hmac.new(secret, body, hashlib.sha256).digest()[:MAC_SIZE]


def pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def encode_frame(secret: bytes, messages: list[Message]) -> list[bytes]:
    body = pack(messages)
    return [sign(secret, body), body]


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not allowed")


def unpack_strict(body: bytes, max_items: int = MAX_BATCH) -> Any:
    """msgpack-decode ``body`` with every limit set and no extension types."""
    try:
        return msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            use_list=True,
            ext_hook=_no_ext,
            max_str_len=MAX_NODEID * 4,
            max_bin_len=MAX_FRAME,
            max_array_len=max(max_items, MAX_SAMPLES),
            max_map_len=64,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises a zoo of types on hostile input
        raise ProtocolError("msgpack", f"{type(exc).__name__}: {exc}"[:200]) from None


def decode_frame(secret: bytes, frames: list[bytes]) -> list[Any]:
    """Authenticate and unpack one frame; the messages inside are not yet checked."""
    if len(frames) != 2:
        raise ProtocolError("frame", f"expected 2 parts [mac, body], got {len(frames)}")
    mac, body = frames
    if len(body) > MAX_FRAME:
        raise ProtocolError("size", f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    if len(mac) != MAC_SIZE or not hmac.compare_digest(mac, sign(secret, body)):
        raise ProtocolError("auth", "bad or missing MAC: not signed with this run's secret")
    batch = unpack_strict(body)
    if type(batch) is not list or not 0 < len(batch) <= MAX_BATCH:
        raise ProtocolError("frame", "a frame body must be a non-empty array of messages")
    return batch


def decode_records(blob: bytes) -> list[Message]:
    """Decode a worker's fallback blob: a msgpack stream of ``end`` messages."""
    unpacker = msgpack.Unpacker(
        raw=False,
        strict_map_key=True,
        ext_hook=_no_ext,
        max_buffer_size=max(len(blob), 1),
        max_str_len=MAX_NODEID * 4,
        max_array_len=MAX_SAMPLES,
        max_map_len=64,
        max_ext_len=0,
    )
    unpacker.feed(blob)
    records = []
    try:
        for raw in unpacker:
            message = check_message(raw)
            if message["k"] != "end":
                raise ProtocolError("schema", f"fallback holds a {message['k']!r} message")
            records.append(message)
        if unpacker.tell() != len(blob):
            raise ProtocolError("msgpack", f"truncated after {len(records)} records")
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError("msgpack", f"{type(exc).__name__}: {exc}"[:200]) from None
    return records


def describe(message: Mapping[str, Any]) -> str:
    """A short human description of a message, for logs and errors."""
    return f"{message.get('k')} #{message.get('q')} from {message.get('w')}"
