"""The wire format that workers, the sink and viewers share.

This module is the one place where a message's shape is written down.

A *frame* on the worker→sink stream is a two-part ZeroMQ message ``[mac, body]``:
``body`` is a msgpack array of messages, ``mac`` the first 16 bytes of
HMAC-SHA256(secret, body).  Every message but ``end`` is a msgpack map with string keys;
the envelope fields are

    v  protocol version (int, == VERSION)
    k  kind (str, one of KINDS)
    w  worker id (str: "gw0", "gw1", ..., or "main" without xdist)
    q  per-worker sequence number (int, 0, 1, 2, ... with no gaps when nothing is lost)
    t  wall-clock time the event happened (float, seconds since the epoch)

and each kind adds the fields listed in ``SCHEMAS``.  A test's ``end``, one per test and
most of a run's messages, is an array of the same fields by position (``END_FIELDS``):
half the work to pack and to read of a map with a map inside.  Decoding is strict: size caps,
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

VERSION = 2
MAC_SIZE = 16
#: Largest body the sink accepts; ZeroMQ drops a peer that sends a larger frame.
MAX_FRAME = 1 << 20
#: Most messages a worker puts into one frame.
MAX_BATCH = 4096
MAX_NODEID = 8192
MAX_SAMPLES = 1024
#: Sizes and sequence numbers beyond this are nonsense (2**53 keeps them exact as floats).
MAX_INT = 1 << 53

PHASES = ("setup", "call", "teardown")
PHASE_OUTCOMES = frozenset({"passed", "failed", "skipped"})
TEST_OUTCOMES = frozenset({"passed", "failed", "skipped", "error", "crashed", "xfailed", "xpassed"})
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
        # The type first: a list or a map is not even hashable.
        if type(value) is not str or value not in options:
            raise ValueError(f"expected one of {sorted(options)}, got {value!r:.40}")
        return value

    return check


_size = _int()
_count = _int()
MAX_DURATION = 1e7
_duration = _float(0.0, MAX_DURATION)
_time = _float(0.0, 1e11)
_index = _int(-1)
_phase = _choice(PHASES)


def _phase_figures(value: Any) -> tuple[int, int, int, float]:
    """``[rss_before, rss_after, peak_rss, duration]`` of one phase, as a tuple.

    A tuple of numbers, which the garbage collector stops tracking: a long run keeps
    three per test, and tracked they would lengthen every full collection.
    """
    # Every test brings three of these: the usual case is checked in one expression (a
    # NaN or an infinity fails the range test), the rest below, with a precise message.
    if type(value) is list and len(value) == 4:
        before, after, peak, duration = value
        if (
            type(before) is int
            and type(after) is int
            and type(peak) is int
            and type(duration) is float
            and 0 <= before <= MAX_INT
            and 0 <= after <= MAX_INT
            and 0 <= peak <= MAX_INT
            and 0.0 <= duration <= MAX_DURATION
        ):
            return (before, after, peak, duration)
    if type(value) is not list or len(value) != 4:
        raise ValueError(f"expected [rss_before, rss_after, peak_rss, duration], got {value!r:.60}")
    return (_size(value[0]), _size(value[1]), _size(value[2]), _duration(value[3]))


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

#: Fields of each kind, beyond the envelope.  All are required (see OPTIONAL for the
#: exceptions); unknown fields are ignored, so that a later minor version may add some.
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
    # The worker stops streaming; ``sent`` counts the messages before this one that
    # went onto the socket, ``dropped`` those that a full queue refused.
    "bye": {"sent": _count, "dropped": _count, "tests": _count},
}

# A test ended: its complete record, so that a lost phase message loses nothing.  An
# array, not a map (see the module's docstring), of these fields in this order:
END_FIELDS: tuple[tuple[str, Check], ...] = (
    ("v", ENVELOPE["v"]),
    ("k", _choice(("end",))),
    ("w", ENVELOPE["w"]),
    ("t", _time),
    ("i", _count),
    ("id", _str(MAX_NODEID)),
    ("o", _choice(TEST_OUTCOMES)),
    ("m", _choice(PEAK_METHODS)),
    ("t0", _time),
)
# ... then ``rss_before, rss_after, peak_rss, duration`` of each of PHASES in turn (four
# nils for a phase that did not run; at least one did), and last ``q``: 22 in all.
END_LENGTH = len(END_FIELDS) + 4 * len(PHASES) + 1
_NO_PHASE = (None, None, None, None)
KINDS = frozenset(SCHEMAS) | {"end"}


def end_message(
    worker: str,
    time: float,
    index: int,
    nodeid: str,
    outcome: str,
    method: str,
    started: float,
    phases: Mapping[str, tuple[int, int, int, float]],
) -> list[Any]:
    """A test's ``end``, to be packed as it is: its ``q`` is last, and 0, as
    :func:`encode_packed_frame` wants it.  ``phases`` maps phase names to figures."""
    get = phases.get
    return [
        VERSION, "end", worker, time, index, nodeid, outcome, method, started,
        *get("setup", _NO_PHASE), *get("call", _NO_PHASE), *get("teardown", _NO_PHASE),
        0,
    ]  # fmt: skip


def _limit(value: Any) -> list[Any]:
    """``[size, on]``: the test's memory limit in bytes, on ``growth`` or ``peak``."""
    if type(value) is not list or len(value) != 2:
        raise ValueError(f"expected [size, on], got {value!r:.40}")
    return [_int(1)(value[0]), _choice(LIMIT_ON)(value[1])]


LIMIT_ON = ("growth", "peak")
#: Fields a message of a kind may carry or leave out (added after version 1 shipped).
OPTIONAL: dict[str, dict[str, Check]] = {
    # The memory limit of a test that has one, so that a crash over it can be named.
    "start": {"lim": _limit},
}


def check_message(raw: Any) -> Message:
    """Return a validated copy of one decoded message, or raise ProtocolError.

    Every kind comes out as a map, an ``end`` too: ``p`` maps the phases that ran to
    their figures, as tuples.
    """
    try:
        if type(raw) is list:
            # An end, most of a run's messages: the usual shape checked in one go.
            end = _usual_end(raw)
            return end if end is not None else _check_end(raw)
        if type(raw) is dict and len(raw) == 8:
            # Most likely a sample: a long test sends one an interval.
            sample = _usual_sample(raw)
            if sample is not None:
                return sample
        return _check_fields(raw)
    except RecursionError:
        # msgpack nests up to 1024 deep; showing such a value in a message recurses deeper.
        raise ProtocolError("schema", "a value nested too deep") from None


def _check_fields(raw: Any) -> Message:
    """check_message's path for maps: field by field, naming the first that is wrong."""
    if type(raw) is not dict:
        raise ProtocolError("schema", f"a message must be a map, got {type(raw).__name__}")
    version = raw.get("v")
    if version != VERSION or type(version) is not int:
        raise ProtocolError("version", f"unsupported protocol version {version!r:.20}")
    kind = raw.get("k")
    if kind == "end":
        raise ProtocolError("schema", f"an end must be an array of {END_LENGTH} fields, not a map")
    fields = _FIELDS.get(kind) if type(kind) is str else None
    if fields is None:
        raise ProtocolError("schema", f"unknown message kind {kind!r:.20}")
    out: Message = {}
    name = ""
    try:
        for name, check in fields:
            out[name] = check(raw[name])
        for name, check in OPTIONAL.get(out["k"], {}).items():
            if name in raw:
                out[name] = check(raw[name])
    except KeyError:
        raise ProtocolError("schema", f"{kind}.{name}: missing") from None
    except ValueError as exc:
        raise ProtocolError("schema", f"{kind}.{name}: {exc}") from None
    _check_worker(out["w"])
    return out


#: Each kind's fields, envelope first, in the order they are checked.
_FIELDS = {kind: tuple({**ENVELOPE, **schema}.items()) for kind, schema in SCHEMAS.items()}


def _check_worker(worker: str) -> None:
    if not WORKER_ID.fullmatch(worker):
        raise ProtocolError("schema", f"bad worker id {worker!r:.40}")


def _check_end(raw: list[Any]) -> Message:
    """check_message's general path for an end: field by field, naming the first that
    is wrong (and any phase set, not only the usual three)."""
    version = raw[0] if raw else None
    # An array from another version of the protocol may have another length: the
    # version is what is wrong with it.  Anything else of the wrong length is no end.
    if type(version) is int and version != VERSION:
        raise ProtocolError("version", f"unsupported protocol version {version}")
    if len(raw) != END_LENGTH:
        raise ProtocolError(
            "schema", f"end: expected an array of {END_LENGTH} fields, got {len(raw)}"
        )
    if type(version) is not int:
        raise ProtocolError("version", f"unsupported protocol version {version!r:.20}")
    fields: Message = {}
    name = ""
    try:
        for (name, check), value in zip(END_FIELDS, raw, strict=False):
            fields[name] = check(value)
        phases: dict[str, tuple[int, int, int, float]] = {}
        first = len(END_FIELDS)
        for name in PHASES:
            figures = raw[first : first + 4]
            first += 4
            if figures != [None, None, None, None]:
                phases[name] = _phase_figures(figures)
        name = "p"
        if not phases:
            raise ValueError("no phase has figures")
        name = "q"
        seq = _count(raw[first])
    except ValueError as exc:
        where = f"p.{name}" if name in PHASES else name
        raise ProtocolError("schema", f"end.{where}: {exc}") from None
    _check_worker(fields["w"])
    return {
        "v": version, "k": "end", "w": fields["w"], "q": seq, "t": fields["t"],
        "i": fields["i"], "id": fields["id"], "o": fields["o"], "m": fields["m"],
        "p": phases, "t0": fields["t0"],
    }  # fmt: skip


def _usual_end(raw: list[Any]) -> Message | None:
    """``raw`` checked as _check_end would, if it is an end of the usual shape (all
    three phases, floats for times and durations, every field plain); None for anything
    else, which the general path then checks field by field.

    The sink checks one of these per test: one expression instead of a call per field
    and per phase is most of what makes checking cheap.
    """
    if len(raw) != END_LENGTH:
        return None
    v, k, w, t, i, nodeid, o, m, t0, sb, sa, sp, sd, cb, ca, cp, cd, tb, ta, tp, td, q = raw
    if not (
        type(v) is int
        and v == VERSION
        and type(k) is str
        and k == "end"
        and type(w) is str
        and type(q) is int
        and type(i) is int
        and type(t) is float
        and type(t0) is float
        and type(nodeid) is str
        and type(o) is str
        and type(m) is str
        and 0 <= q <= MAX_INT
        and 0 <= i <= MAX_INT
        and 0.0 <= t <= 1e11
        and 0.0 <= t0 <= 1e11
        and 0 < len(nodeid) <= MAX_NODEID
        and o in TEST_OUTCOMES
        and m in PEAK_METHODS
        and (w in _worker_ids or _known_worker(w))
        and type(sb) is int and type(sa) is int and type(sp) is int and type(sd) is float
        and type(cb) is int and type(ca) is int and type(cp) is int and type(cd) is float
        and type(tb) is int and type(ta) is int and type(tp) is int and type(td) is float
        and 0 <= sb <= MAX_INT and 0 <= sa <= MAX_INT and 0 <= sp <= MAX_INT
        and 0 <= cb <= MAX_INT and 0 <= ca <= MAX_INT and 0 <= cp <= MAX_INT
        and 0 <= tb <= MAX_INT and 0 <= ta <= MAX_INT and 0 <= tp <= MAX_INT
        and 0.0 <= sd <= MAX_DURATION and 0.0 <= cd <= MAX_DURATION and 0.0 <= td <= MAX_DURATION
    ):  # fmt: skip
        return None
    return {
        "v": v, "k": "end", "w": w, "q": q, "t": t, "i": i, "id": nodeid, "o": o, "m": m,
        "p": {"setup": (sb, sa, sp, sd), "call": (cb, ca, cp, cd), "teardown": (tb, ta, tp, td)},
        "t0": t0,
    }  # fmt: skip


def _usual_sample(raw: dict[Any, Any]) -> Message | None:
    """``raw`` checked as _check_fields would, if it is a sample of the usual shape (its
    eight fields and no other, float times); None for anything else, which the general
    path then checks field by field.  A long test's thread sends one an interval, and a
    sink fed by many workers at once spends most of its time checking them."""
    get = raw.get
    v, k, w, q, t, i, ph, s = (
        get("v"), get("k"), get("w"), get("q"), get("t"), get("i"), get("ph"), get("s")
    )  # fmt: skip
    if not (
        type(k) is str
        and k == "sample"
        and type(v) is int
        and v == VERSION
        and type(w) is str
        and type(q) is int
        and type(t) is float
        and type(i) is int
        and type(ph) is str
        and type(s) is list
        and 0 <= q <= MAX_INT
        and 0.0 <= t <= 1e11
        and -1 <= i <= MAX_INT
        and (ph == "" or ph in PHASES)
        and 0 < len(s) <= MAX_SAMPLES
        and (w in _worker_ids or _known_worker(w))
    ):
        return None
    samples = []
    for pair in s:
        if type(pair) is not list or len(pair) != 2:
            return None
        when, rss = pair
        if not (type(when) is float and type(rss) is int and 0.0 <= when <= 1e11):
            return None
        if not 0 <= rss <= MAX_INT:
            return None
        samples.append([when, rss])
    return {"v": v, "k": "sample", "w": w, "q": q, "t": t, "i": i, "ph": ph, "s": samples}


#: Worker ids that passed WORKER_ID (a run has a few; the set is bounded all the same).
_worker_ids: set[str] = set()


def _known_worker(worker: str) -> bool:
    if not WORKER_ID.fullmatch(worker):
        return False
    if len(_worker_ids) < 1024:
        _worker_ids.add(worker)
    return True


# --- frames --------------------------------------------------------------------------


def new_secret() -> bytes:
    import secrets

    return secrets.token_bytes(32)


def sign(secret: bytes, body: bytes) -> bytes:
    return hmac.new(secret, body, hashlib.sha256).digest()[:MAC_SIZE]


def pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def packer() -> Callable[[Any], bytes]:
    """:func:`pack` for one thread's own use: it keeps its packer (``packb`` makes one
    per call, half of what packing a test's ``end`` costs)."""
    pack_one: Callable[[Any], bytes] = msgpack.Packer(use_bin_type=True).pack
    return pack_one


def encode_frame(secret: bytes, messages: list[Message]) -> list[bytes]:
    body = pack(messages)
    return [sign(secret, body), body]


# A worker packs each message once, when it is made, and numbers it only when it goes
# into a frame: the packed message ends with its ``q``, 0, which the frame replaces with
# the message's sequence number.  The same bytes serve as the fallback copy (numbered 0).
_SEQ_LAST = b"\xa1q\x00"  # a map's: the key "q", then the positive fixint 0
_END_HEAD = b"\xdc" + END_LENGTH.to_bytes(2, "big")  # an end's: array 16, then its length


def pack_message(message: Message) -> bytes:
    """A map ``message`` packed with its ``q`` last and 0, for :func:`encode_packed_frame`
    (an ``end``, from :func:`end_message`, is packed as it is)."""
    fields = dict(message)
    fields.pop("q", None)
    fields["q"] = 0
    return pack(fields)


def encode_packed_frame(secret: bytes, packed: list[bytes], first_seq: int) -> list[bytes]:
    """A frame of messages packed by :func:`pack_message`, numbered from ``first_seq``."""
    packer = msgpack.Packer()  # one per frame: the stream thread and tests both call this
    parts = [packer.pack_array_header(len(packed))]
    for seq, message in enumerate(packed, first_seq):
        if not (
            message.endswith(_SEQ_LAST) or (message.startswith(_END_HEAD) and message[-1] == 0)
        ):
            raise ValueError("a message in a packed frame must end with its q, 0")
        parts.append(message[:-1])
        parts.append(packer.pack(seq))
    body = b"".join(parts)
    return [sign(secret, body), body]


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not allowed")


def unpack_strict(
    body: bytes,
    max_array: int = max(MAX_BATCH, MAX_SAMPLES),
    max_map: int = 64,
    max_bin: int = MAX_FRAME,
) -> Any:
    """msgpack-decode ``body`` with every limit set and no extension types."""
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


def authenticated_body(secret: bytes, frames: list[bytes], max_size: int) -> bytes:
    """The body of a ``[mac, body]`` frame signed with ``secret``, or ProtocolError."""
    if len(frames) != 2:
        raise ProtocolError("frame", f"expected 2 parts [mac, body], got {len(frames)}")
    mac, body = frames
    if len(body) > max_size:
        raise ProtocolError("size", f"frame of {len(body)} bytes exceeds {max_size}")
    if len(mac) != MAC_SIZE or not hmac.compare_digest(mac, sign(secret, body)):
        raise ProtocolError("auth", "bad or missing MAC: not signed with this run's secret")
    return body


def decode_frame(secret: bytes, frames: list[bytes]) -> list[Any]:
    """Authenticate and unpack one frame; the messages inside are not yet checked."""
    batch = unpack_strict(authenticated_body(secret, frames, MAX_FRAME))
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
    read = 0  # the end of the last whole record
    try:
        for raw in unpacker:
            read = unpacker.tell()
            message = check_message(raw)
            if message["k"] != "end":
                raise ProtocolError("schema", f"fallback holds a {message['k']!r} message")
            records.append(message)
        # Not unpacker.tell() here: after a record cut short, it counts the bytes read
        # of it too.
        if read != len(blob):
            raise ProtocolError("msgpack", f"truncated after {len(records)} records")
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError("msgpack", f"{type(exc).__name__}: {exc}"[:200]) from None
    return records


# === the viewer side ===================================================================
#
# Viewers attach to the sink the way the ZeroMQ guide's "clone" pattern describes: a
# SUB socket on the ``updates`` endpoint (an XPUB) receives every change to the run's
# state, numbered by ``seq``; a DEALER socket on the ``snapshot`` endpoint (a ROUTER)
# asks for the whole state, tagged with the ``seq`` of the last update it includes.
# Every frame, both ways, is ``[mac, body]`` as on the worker stream: ``body`` is one
# msgpack map, ``mac`` the first 16 bytes of HMAC-SHA256(secret, body).  The sink serves
# only requests signed with the run's secret (anything else gets an ``error``), and
# viewers drop any frame whose MAC does not verify.  docs/protocol.md describes it all.
#
# The state is a key-value map; an update *sets* keys to their complete new value, so
# applying an update that a snapshot already contains changes nothing:
#
#   "run"               the run's totals and whether it has finished
#   "w/<worker>"        one worker: status, counters, the test it runs now
#   "t/<worker>/<i>"    one finished (or crashed) test's record

VIEWER_VERSION = 1
NONCE_MIN, NONCE_MAX = 8, 64
#: Most keys in one update or snapshot part; a sender splits larger sets.
MAX_SETS = 4096
#: Recent RSS samples of a running test that a worker view carries (for a sparkline).
SPARK_SAMPLES = 48
RUN_STATUSES = frozenset({"running", "finished"})
REQUEST_KINDS = frozenset({"hello", "snapshot"})
ERROR_REASONS = frozenset({"auth", "version", "request"})


def _nonce(value: Any) -> bytes:
    if type(value) is not bytes or not NONCE_MIN <= len(value) <= NONCE_MAX:
        raise ValueError(f"expected {NONCE_MIN}..{NONCE_MAX} random bytes")
    return value


def _any_nonce(value: Any) -> bytes:
    return b"" if value == b"" and type(value) is bytes else _nonce(value)


def _text(max_len: int) -> Check:
    """A string that may be empty (an error message, a crashed test that is not known)."""

    def check(value: Any) -> str:
        if type(value) is not str or len(value) > max_len:
            raise ValueError(f"expected a string of at most {max_len} characters")
        return value

    return check


def _endpoint(value: Any) -> str:
    endpoint: str = _str(1024)(value)
    return endpoint


def _spark(value: Any) -> list[int]:
    if type(value) is not list or len(value) > SPARK_SAMPLES:
        raise ValueError(f"expected at most {SPARK_SAMPLES} RSS values")
    return [_size(rss) for rss in value]


_rate = _float(-1e15, 1e15)

#: Fields of the value under each key kind.  Viewers ignore fields they do not know.
RUN_VIEW: dict[str, Check] = {
    "status": _choice(RUN_STATUSES),
    "pid": _int(1, 1 << 32),
    "started": _time,
    "messages": _count,
    "frames": _count,
    "rejected": _count,
    "tests": _count,
}
RUNNING_VIEW: dict[str, Check] = {
    "i": _count,
    "id": _str(MAX_NODEID),
    "phase": _phase,
    "started": _time,
    "rss_start": _size,
    "rss": _size,
    "peak": _size,
    "rate": _rate,
    "spark": _spark,
}
WORKER_VIEW: dict[str, Check] = {
    "status": _str(16),
    "pid": _int(0, 1 << 32),
    "method": _text(16),
    "messages": _count,
    "lost": _count,
    "dropped": _count,
    "recovered": _count,
    "unrecoverable": _count,
    "max_rss": _size,
    "crashed": _text(MAX_NODEID),
    "error": _text(4096),
    "running": lambda value: None if value is None else _fields(value, RUNNING_VIEW),
}
_growth = _int(-MAX_INT, MAX_INT)
TEST_VIEW: dict[str, Check] = {
    "id": _str(MAX_NODEID),
    "w": _str(64),
    "i": _count,
    "o": _choice(TEST_OUTCOMES),
    "rss_start": _size,
    "peak": _size,
    "rss_end": _size,
    "growth": _growth,
    "kept": lambda value: None if value is None else _growth(value),
    "phase": _text(16),
    "m": _choice(PEAK_METHODS),
    "src": _str(16),
    "t0": _time,
    "t1": _time,
}


def _fields(value: Any, schema: dict[str, Check]) -> dict[str, Any]:
    if type(value) is not dict:
        raise ValueError("expected a map")
    out = {}
    for name, check in schema.items():
        if name not in value:
            raise ValueError(f"{name}: missing")
        try:
            out[name] = check(value[name])
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return out


_KEY = re.compile(r"run|w/([A-Za-z0-9_.-]{1,64})|t/([A-Za-z0-9_.-]{1,64})/(\d{1,15})")


def check_view(key: Any, value: Any) -> dict[str, Any]:
    """Validate one ``key -> value`` of the viewer state; ProtocolError if malformed."""
    match = _KEY.fullmatch(key) if type(key) is str else None
    if match is None:
        raise ProtocolError("schema", f"unknown state key {key!r:.40}")
    schema = RUN_VIEW if key == "run" else WORKER_VIEW if key[0] == "w" else TEST_VIEW
    try:
        return _fields(value, schema)
    except ValueError as exc:
        raise ProtocolError("schema", f"{key}: {exc}") from None


def _sets(value: Any) -> dict[str, dict[str, Any]]:
    if type(value) is not dict or len(value) > MAX_SETS:
        raise ValueError(f"expected a map of at most {MAX_SETS} state keys")
    return {key: check_view(key, item) for key, item in value.items()}


#: Fields of each message kind on the viewer side, beyond ``v`` and ``k``.
VIEWER_SCHEMAS: dict[str, dict[str, Check]] = {
    # viewer -> snapshot endpoint
    "hello": {"nonce": _nonce},
    "snapshot": {"nonce": _nonce},
    # snapshot endpoint -> viewer
    "welcome": {
        "nonce": _nonce,
        "seq": _count,
        "updates": _endpoint,
        "beat": _float(0.01, 3600.0),
        "pid": _int(1, 1 << 32),
        "started": _time,
    },
    "snap": {
        "nonce": _nonce,
        "seq": _count,
        "part": _count,
        "parts": _int(1, MAX_INT),
        "sets": _sets,
    },
    # the answer to a request the sink cannot serve; ``nonce`` is empty if unreadable
    "error": {"nonce": _any_nonce, "reason": _choice(ERROR_REASONS)},
    # updates endpoint -> viewers
    "update": {"seq": _int(1), "t": _time, "sets": _sets},
    "beat": {"seq": _count, "t": _time},
}
VIEWER_KINDS = frozenset(VIEWER_SCHEMAS)
#: Largest viewer frame either side accepts (a snapshot part is kept well below it).
MAX_VIEW_FRAME = 4 << 20


def encode_viewer(secret: bytes, kind: str, fields: Mapping[str, Any]) -> list[bytes]:
    """One signed viewer-protocol frame ``[mac, body]``."""
    body = pack({"v": VIEWER_VERSION, "k": kind, **fields})
    return [sign(secret, body), body]


def decode_viewer(secret: bytes, frames: list[bytes], kinds: frozenset[str]) -> Message:
    """Authenticate, unpack and check one viewer-protocol frame of one of ``kinds``."""
    body = authenticated_body(secret, frames, MAX_VIEW_FRAME)
    raw = unpack_strict(body, max_array=SPARK_SAMPLES, max_map=MAX_SETS, max_bin=NONCE_MAX)
    if type(raw) is not dict:
        raise ProtocolError("schema", "a viewer message must be a map")
    version = raw.get("v")
    if version != VIEWER_VERSION or type(version) is not int:
        raise ProtocolError("version", f"unsupported viewer protocol version {version!r:.20}")
    kind = raw.get("k")
    if type(kind) is not str or kind not in kinds:
        raise ProtocolError("schema", f"unexpected message kind {kind!r:.20}")
    try:
        fields = _fields(raw, VIEWER_SCHEMAS[kind])
    except ValueError as exc:
        raise ProtocolError("schema", f"{kind}: {exc}") from None
    except RecursionError:
        raise ProtocolError("schema", f"{kind}: a value nested too deep") from None
    return {"v": version, "k": kind, **fields}
