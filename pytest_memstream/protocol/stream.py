"""The worker stream: what a worker sends to the controller's sink.

A *frame* is a two-part ZeroMQ message ``[header, payload]``, as execnet frames its own
messages: a small header, and the messages themselves as an opaque payload.

- ``header`` is a msgpack array ``[version, worker, first, count, dropped]``: the
  protocol version (``VERSION``), the worker's id (which must be the one its CURVE key
  was issued to), the sequence number of the first message in the payload (the others
  follow without gaps), how many messages the payload holds, and how many messages the
  worker's own queue had refused before this frame (so that the sink can tell a gap in
  the numbers it missed from one the worker never sent).
- ``payload`` is ``count`` msgpack messages one after the other, each packed once by the
  worker when it was made (a test's ``end`` is also kept, as the same bytes, in the
  worker's fallback copy).

Every message but ``end`` is a map with ``k`` (its kind) and ``t`` (when it happened,
seconds since the epoch) and the fields of its kind (``SCHEMAS``).  A test's ``end``, one
per test and most of a run's messages, is an array of the same fields by position
(``END_FIELDS``, then four figures per phase).  Fields a later version adds are optional
and at the end; a receiver ignores what it does not know (docs/versioning.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import msgpack

from pytest_memstream.protocol import (
    CHILD_METHODS,
    LIMIT_ON,
    PEAK_METHODS,
    PHASE_OUTCOMES,
    PHASES,
    TEST_OUTCOMES,
    ProtocolError,
)
from pytest_memstream.protocol.checks import (
    MAX_DURATION,
    MAX_NODEID,
    Fields,
    check_fields,
    check_optional,
    choice,
    count,
    integer,
    nodeid,
    number,
    size,
    string,
    text,
    timestamp,
    unpack_strict,
    unpacker,
    worker_id,
)

VERSION = 3
#: Largest payload the sink accepts; ZeroMQ drops a peer that sends a larger part.
MAX_FRAME = 1 << 20
MAX_HEADER = 256
#: Most messages in one frame.
MAX_BATCH = 4096
MAX_SAMPLES = 1024

Message = dict[str, Any]
PhaseFigures = tuple[int, int, int, float]


class Header(NamedTuple):
    worker: str
    first: int
    messages: int
    dropped: int


# --- frames --------------------------------------------------------------------------


def frame(worker: str, first: int, dropped: int, packed: Sequence[bytes]) -> list[bytes]:
    """The frame of messages ``packed`` (by :func:`pack_message` or alike), numbered
    from ``first``, from a worker whose queue had refused ``dropped`` messages so far."""
    header = msgpack.packb([VERSION, worker, first, len(packed), dropped])
    return [header, b"".join(packed)]


def decode_header(data: bytes) -> Header:
    if len(data) > MAX_HEADER:
        raise ProtocolError("frame", f"a header of {len(data)} bytes")
    raw = unpack_strict(data, max_array=16, max_map=8)
    if type(raw) is not list or not raw:
        raise ProtocolError("frame", "a header must be an array")
    version = raw[0]
    if type(version) is not int or version != VERSION:
        raise ProtocolError("version", f"unsupported stream protocol version {version!r:.20}")
    if len(raw) < 5:
        raise ProtocolError("frame", f"a header of {len(raw)} fields, expected 5")
    try:
        return Header(worker_id(raw[1]), count(raw[2]), _batch(raw[3]), count(raw[4]))
    except ValueError as exc:
        raise ProtocolError("frame", f"header: {exc}") from None


_batch = integer(1, MAX_BATCH)


def decode_payload(data: bytes, expected: int) -> list[Any]:
    """The ``expected`` raw messages of a payload (each still to be checked)."""
    if len(data) > MAX_FRAME:
        raise ProtocolError("size", f"a payload of {len(data)} bytes exceeds {MAX_FRAME}")
    messages, read, error = _unpack_all(data, expected + 1)
    if error or read != len(data) or len(messages) != expected:
        raise ProtocolError(
            "frame",
            f"the header says {expected} messages, the payload holds {len(messages)}"
            + (f" ({error})" if error else ""),
        )
    return messages


def _unpack_all(data: bytes, most: int) -> tuple[list[Any], int, str]:
    """Up to ``most`` objects from ``data``; the bytes they took; what stopped it early."""
    stream = unpacker(len(data), max_array=max(MAX_SAMPLES, 64), max_map=64)
    stream.feed(data)
    objects: list[Any] = []
    read = 0  # the end of the last whole object (tell() also counts a half-read one)
    try:
        for raw in stream:
            objects.append(raw)
            read = stream.tell()
            if len(objects) >= most:
                break
    except Exception as exc:  # msgpack raises a zoo of types on hostile input
        return objects, read, f"{type(exc).__name__}: {exc}"[:200]
    return objects, read, ""


# --- messages ------------------------------------------------------------------------


def _phase_figures(value: Any) -> PhaseFigures:
    """``[rss_before, rss_after, peak_rss, duration]`` of one phase, as a tuple.

    A tuple of numbers, which the garbage collector stops tracking: a long run keeps
    three per test, and tracked they would lengthen every full collection.
    """
    if type(value) is not list or len(value) != 4:
        raise ValueError(f"expected [rss_before, rss_after, peak_rss, duration], got {value!r:.60}")
    return (size(value[0]), size(value[1]), size(value[2]), _duration(value[3]))


_duration = number(0.0, MAX_DURATION)


def _samples(value: Any) -> list[list[Any]]:
    """``[[time, rss], ...]``, oldest first."""
    if type(value) is not list or not 0 < len(value) <= MAX_SAMPLES:
        raise ValueError(f"expected 1..{MAX_SAMPLES} samples")
    out = []
    for pair in value:
        if type(pair) is not list or len(pair) != 2:
            raise ValueError(f"expected a [time, rss] pair, got {pair!r:.40}")
        out.append([timestamp(pair[0]), size(pair[1])])
    return out


def _limit(value: Any) -> list[Any]:
    """``[size, on]``: the test's memory limit in bytes, on ``growth`` or ``peak``."""
    if type(value) is not list or len(value) != 2:
        raise ValueError(f"expected [size, on], got {value!r:.40}")
    return [integer(1)(value[0]), choice(LIMIT_ON)(value[1])]


_phase = choice(PHASES)


def _phase_or_none(value: Any) -> str:
    return "" if value == "" else _phase(value)


#: The fields of each kind of map message, beyond ``k``; all required.
SCHEMAS: dict[str, Fields] = {
    # A worker starts streaming: who it is and how it measures.
    "hello": (
        ("t", timestamp),
        ("pid", integer(1, 1 << 32)),
        ("method", choice(PEAK_METHODS)),
        ("interval", number(0.0, 3600.0)),
        ("rss", size),
        ("platform", string(64)),
    ),
    # A test starts (before its setup phase); ``i`` numbers tests per worker from 0.
    "start": (("t", timestamp), ("i", count), ("id", nodeid), ("rss", size)),
    # One phase ended.  ``f`` = [rss_before, rss_after, peak_rss, duration].
    "phase": (
        ("t", timestamp),
        ("i", count),
        ("ph", _phase),
        ("f", _phase_figures),
        ("o", choice(PHASE_OUTCOMES)),
    ),
    # Periodic RSS samples; ``i`` is the running test or -1, ``ph`` its phase or "".
    "sample": (("t", timestamp), ("i", integer(-1)), ("ph", _phase_or_none), ("s", _samples)),
    # The worker stops streaming: the messages it put onto the socket before this one,
    # those its full queue refused, and the tests it ran.
    "bye": (("t", timestamp), ("sent", count), ("dropped", count), ("tests", count)),
}
#: Most processes a test's tree names (its killed children).
MAX_PROCESSES = 256


def _killed(value: Any) -> list[list[Any]]:
    """``[[pid, name, signal, last rss], ...]``: the children a signal ended."""
    if type(value) is not list or len(value) > MAX_PROCESSES:
        raise ValueError(f"expected at most {MAX_PROCESSES} killed children")
    out = []
    for child in value:
        if type(child) is not list or len(child) != 4:
            raise ValueError(f"expected [pid, name, signal, rss], got {child!r:.40}")
        out.append(
            [integer(1, 1 << 32)(child[0]), text(64)(child[1]), integer(1, 255)(child[2]),
             size(child[3])]
        )  # fmt: skip
    return out


TREE_FIELDS: Fields = (
    ("peak", size),
    ("start", size),
    ("count", integer(0, 1 << 32)),
    ("max_rss", size),
    ("method", lambda value: "" if value == "" else choice(CHILD_METHODS)(value)),
    ("killed", _killed),
)


def _tree(value: Any) -> dict[str, Any] | None:
    """What a test's child processes came to (plugin/tree.py), or nil: none ran."""
    if value is None:
        return None
    try:
        return check_fields(value, TREE_FIELDS, "tree")
    except ProtocolError as exc:
        raise ValueError(exc.detail) from None


_HOST_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:")


def host_name(value: Any) -> str:
    """A host's name as its ``gethostname()`` says it: what the report prints beside the
    worker, so no space, no control character, no markup."""
    name: str = string(253)(value)
    if not _HOST_CHARACTERS.issuperset(name):
        raise ValueError(f"expected a host name, got {value!r:.40}")
    return name


#: Fields a message of a kind may carry or leave out.
OPTIONAL: dict[str, Fields] = {
    # The host the worker runs on (since workers on other hosts stream too).
    "hello": (("host", host_name),),
    # The memory limit of a test that has one, so that a crash over it can be named; the
    # total of the worker's process tree, where it has child processes.
    "start": (("lim", _limit), ("tree", size)),
    # ... and how many processes its descendants are.
    "sample": (("tree", size), ("procs", integer(0, 1 << 32))),
}

# A test ended: its complete record, so that a lost phase message loses nothing.  An
# array of these fields in this order, then ``rss_before, rss_after, peak_rss,
# duration`` of each of PHASES in turn (four nils for a phase that did not run).
END_FIELDS: Fields = (
    ("k", choice(("end",))),
    ("t", timestamp),
    ("i", count),
    ("id", nodeid),
    ("o", choice(TEST_OUTCOMES)),
    ("m", choice(PEAK_METHODS)),
    ("t0", timestamp),
)
END_LENGTH = len(END_FIELDS) + 4 * len(PHASES)
#: Fields an end may carry after those, by position (a later version may add more).
END_OPTIONAL: Fields = (("tree", _tree),)
_NO_PHASE = (None, None, None, None)


def end_message(
    time: float,
    index: int,
    test: str,
    outcome: str,
    method: str,
    started: float,
    phases: Mapping[str, PhaseFigures],
    tree: Mapping[str, Any] | None = None,
) -> list[Any]:
    """A test's ``end``; ``phases`` maps the names of the phases that ran to figures,
    ``tree`` says what its child processes came to, if it had any."""
    get = phases.get
    end = [
        "end", time, index, test, outcome, method, started,
        *get("setup", _NO_PHASE), *get("call", _NO_PHASE), *get("teardown", _NO_PHASE),
    ]  # fmt: skip
    if tree is not None:
        end.append(tree)
    return end


def check_message(raw: Any) -> Message:
    """A validated copy of one decoded message, or ProtocolError.

    Every kind comes out as a map, an ``end`` too: ``p`` maps the phases that ran to
    their figures, as tuples.
    """
    try:
        if type(raw) is list:
            return _check_end(raw)
        kind = raw.get("k") if type(raw) is dict else None
        fields = SCHEMAS.get(kind) if type(kind) is str else None
        if fields is None or type(kind) is not str:
            if kind == "end":
                raise ProtocolError("schema", "an end must be an array, not a map")
            raise ProtocolError("schema", f"unknown message kind {kind!r:.20}")
        message = check_fields(raw, fields, kind)
        check_optional(raw, OPTIONAL.get(kind, ()), kind, message)
        message["k"] = kind
        return message
    except RecursionError:
        # msgpack nests up to 1024 deep; showing such a value in a message recurses deeper.
        raise ProtocolError("schema", "a value nested too deep") from None


def _check_end(raw: list[Any]) -> Message:
    if len(raw) < END_LENGTH:
        raise ProtocolError("schema", f"end: expected {END_LENGTH} fields, got {len(raw)}")
    message: Message = {}
    name = ""
    try:
        for (name, check), value in zip(END_FIELDS, raw, strict=False):
            message[name] = check(value)
        phases: dict[str, PhaseFigures] = {}
        first = len(END_FIELDS)
        for name in PHASES:
            figures = raw[first : first + 4]
            first += 4
            if figures != [None, None, None, None]:
                phases[name] = _phase_figures(figures)
        if not phases:
            name = "p"
            raise ValueError("no phase has figures")
        for (name, check), value in zip(END_OPTIONAL, raw[END_LENGTH:], strict=False):
            message[name] = check(value)
    except ValueError as exc:
        where = f"p.{name}" if name in PHASES else name
        raise ProtocolError("schema", f"end.{where}: {exc}") from None
    message["p"] = phases
    return message


def pack_message(message: Mapping[str, Any] | Sequence[Any]) -> bytes:
    data: bytes = msgpack.packb(message)
    return data


def packer() -> Callable[[Any], bytes]:
    """:func:`pack_message` for one thread's own use: it keeps its packer (``packb``
    makes one per call, half of what packing a test's ``end`` costs)."""
    pack: Callable[[Any], bytes] = msgpack.Packer().pack
    return pack


def cut_nodeid(test: str) -> str:
    """``test`` as the stream carries it: as it is, or cut to MAX_NODEID characters with
    a marker that keeps it unique.  Whoever matches ids against the stream's (a crashed
    test named by xdist, the collection) cuts them the same way."""
    if len(test) <= MAX_NODEID:
        return test
    import hashlib

    digest = hashlib.sha256(test.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    marker = f"...[cut from {len(test)} characters, sha256 {digest}]"
    return test[: MAX_NODEID - len(marker)] + marker


# --- the fallback copy ---------------------------------------------------------------


def decode_records(blob: bytes, tests: int) -> tuple[list[Message], int]:
    """A worker's fallback blob, its ``tests`` ends one after the other: the records
    that pass the checks, and how many of the ``tests`` could not be read.

    One bad record costs that record only; bytes that are not msgpack cost the rest.
    """
    raws, _, _ = _unpack_all(blob, max(tests, 1))
    records = []
    for raw in raws:
        try:
            message = check_message(raw)
        except ProtocolError:
            continue
        if message["k"] == "end":
            records.append(message)
    return records, max(0, tests - len(records))
