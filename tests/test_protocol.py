"""The wire format: what is accepted, and that everything else is rejected with a reason."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import pytest
import zmq

from pytest_memstream import protocol
from pytest_memstream.protocol import ProtocolError
from pytest_memstream.sender import Sender

SECRET = b"s" * 32


def message(kind: str = "start", **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"v": protocol.VERSION, "k": kind, "w": "gw0", "q": 0, "t": 1.7e9}
    body = {
        "start": {"i": 0, "id": "test_a.py::test_a", "rss": 1 << 20},
        "sample": {"i": 0, "ph": "call", "s": [[1.7e9, 1 << 20]]},
    }[kind]
    return {**base, **body, **fields}


END = {
    "v": protocol.VERSION,
    "k": "end",
    "w": "gw0",
    "t": 1.7e9,
    "i": 0,
    "id": "t.py::t",
    "o": "passed",
    "m": "hwm",
    "t0": 1.7e9,
    "p": {"call": (1, 2, 3, 0.5)},
    "q": 0,
}


def end(**fields: Any) -> list[Any]:
    """An ``end`` as a worker sends it (an array), with ``fields`` of it changed by name;
    ``p`` maps the phases that ran to their four figures."""
    values = {**END, **fields}
    raw = protocol.end_message(
        values["w"], values["t"], values["i"], values["id"], values["o"], values["m"],
        values["t0"], values["p"],
    )  # fmt: skip
    raw[0], raw[1], raw[-1] = values["v"], values["k"], values["q"]
    return raw


def test_a_signed_frame_round_trips() -> None:
    frames = protocol.encode_frame(SECRET, [message(), message("sample", q=1)])
    batch = protocol.decode_frame(SECRET, frames)
    assert [protocol.check_message(m)["k"] for m in batch] == ["start", "sample"]


@pytest.mark.parametrize("count", [1, 15, 16, 300])
def test_messages_packed_once_are_numbered_by_their_frame(count: int) -> None:
    # How a worker sends: each message packed when it is made, numbered in the frame.
    kinds = ["end", "start", "sample"]
    packed = [
        protocol.pack(end(i=n))
        if n % 3 == 0
        else protocol.pack_message(message(kinds[n % 3], q=99))
        for n in range(count)
    ]
    batch = protocol.decode_frame(SECRET, protocol.encode_packed_frame(SECRET, packed, 41))
    checked = [protocol.check_message(m) for m in batch]
    assert [m["q"] for m in checked] == list(range(41, 41 + count))
    assert [m["k"] for m in checked] == [kinds[n % 3] for n in range(count)]
    # Unnumbered, the same bytes are a valid fallback record (numbered 0).
    assert protocol.decode_records(packed[0])[0]["q"] == 0


@pytest.mark.parametrize("packed", [message(q=5), end(q=5), end()[:-1]])
def test_a_packed_frame_refuses_a_message_not_packed_for_it(packed: Any) -> None:
    with pytest.raises(ValueError, match="must end with its q"):
        protocol.encode_packed_frame(SECRET, [protocol.pack(packed)], 0)


def test_an_int_time_is_accepted_as_a_float() -> None:
    assert protocol.check_message(message(t=1700000000))["t"] == 1.7e9


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([b"only one part"], "frame"),
        ([b"x" * 16, b"\x91\x80", b"extra"], "frame"),
        ([b"\x00" * 16, protocol.pack([message()])], "auth"),
        ([b"", protocol.pack([message()])], "auth"),
    ],
)
def test_frames_that_are_not_ours(frames: list[bytes], reason: str) -> None:
    with pytest.raises(ProtocolError) as excinfo:
        protocol.decode_frame(SECRET, frames)
    assert excinfo.value.reason == reason


def test_a_wrong_secret_is_rejected() -> None:
    frames = protocol.encode_frame(b"other" * 8, [message()])
    with pytest.raises(ProtocolError, match="auth: bad or missing MAC"):
        protocol.decode_frame(SECRET, frames)


@pytest.mark.parametrize(
    "body",
    [
        b"\xc1",  # never used in msgpack
        msgpack.packb([message()])[:-3],  # truncated
        msgpack.packb(msgpack.ExtType(5, b"data")),
        msgpack.packb({1: 2}),  # non-string key
        msgpack.packb("x" * 100_000),  # string over the limit
    ],
)
def test_hostile_bodies_fail_msgpack_or_frame(body: bytes) -> None:
    with pytest.raises(ProtocolError) as excinfo:
        protocol.decode_frame(SECRET, [protocol.sign(SECRET, body), body])
    assert excinfo.value.reason in ("msgpack", "frame")


def test_oversized_frame_is_rejected_before_decoding() -> None:
    body = b"\x00" * (protocol.MAX_FRAME + 1)
    with pytest.raises(ProtocolError, match="size"):
        protocol.decode_frame(SECRET, [protocol.sign(SECRET, body), body])


@pytest.mark.parametrize(
    ("changes", "reason", "text"),
    [
        ({"v": 3}, "version", "unsupported protocol version 3"),
        ({"v": True}, "version", "unsupported protocol version True"),
        ({"k": "explode"}, "schema", "unknown message kind 'explode'"),
        ({"q": -1}, "schema", "start.q: expected an int"),
        ({"q": True}, "schema", "start.q: expected an int"),
        ({"rss": 1 << 60}, "schema", "start.rss"),
        ({"rss": 1.5}, "schema", "start.rss"),
        ({"id": ""}, "schema", "start.id"),
        ({"id": 7}, "schema", "start.id"),
        ({"t": float("nan")}, "schema", "start.t"),
        ({"w": "gw0; rm -rf"}, "schema", "bad worker id"),
    ],
)
def test_schema_and_range_checks(changes: dict[str, Any], reason: str, text: str) -> None:
    with pytest.raises(ProtocolError) as excinfo:
        protocol.check_message(message(**changes))
    assert excinfo.value.reason == reason
    assert text in str(excinfo.value)


def test_missing_field_is_named() -> None:
    raw = message()
    del raw["rss"]
    with pytest.raises(ProtocolError, match=r"start\.rss: missing"):
        protocol.check_message(raw)


def test_an_end_is_read_into_a_map_of_the_phases_that_ran() -> None:
    phases = {"setup": (1, 2, 2, 0.5), "teardown": (4, 3, 5, 0.0)}
    checked = protocol.check_message(end(p=phases, q=7))
    assert checked == {**END, "p": phases, "q": 7}
    assert list(checked["p"]) == ["setup", "teardown"]


def test_an_end_in_a_map_is_refused_by_name() -> None:
    with pytest.raises(ProtocolError, match="schema: an end must be an array of 22 fields"):
        protocol.check_message(dict(END, p={"call": [1, 2, 3, 0.5]}))


#: Where in an end the three phases' figures are (four each).
FIGURES = len(protocol.END_FIELDS)


@pytest.mark.parametrize(
    ("slot", "value", "text"),
    [
        (None, None, "end.p: no phase has figures"),  # every phase nil
        (FIGURES + 4, None, "end.p.call: expected an int"),  # a phase half there
        (FIGURES + 7, -1.0, "end.p.call: expected a number"),
        (FIGURES + 1, True, "end.p.setup: expected an int"),
        (FIGURES + 10, 1 << 60, "end.p.teardown: expected an int"),
        (FIGURES + 12, -1, "end.q: expected an int"),
    ],
)
def test_end_phases_are_checked(slot: int | None, value: Any, text: str) -> None:
    raw = end(p={"setup": (1, 1, 1, 0.1), "call": (1, 2, 3, 0.5), "teardown": (2, 2, 2, 0.1)})
    if slot is None:
        raw[FIGURES : FIGURES + 12] = [None] * 12
    else:
        raw[slot] = value
    with pytest.raises(ProtocolError, match=text):
        protocol.check_message(raw)


@pytest.mark.parametrize(
    ("raw", "reason", "text"),
    [
        ([], "schema", "end: expected an array of 22 fields, got 0"),
        ([1, "end"], "version", "unsupported protocol version 1"),
        (["x"] * protocol.END_LENGTH, "version", "unsupported protocol version 'x'"),
        ([protocol.VERSION, "end"], "schema", "end: expected an array of 22 fields, got 2"),
        ([*end(), 1], "schema", "end: expected an array of 22 fields, got 23"),
        (end(k="start"), "schema", "end.k: expected one of ['end']"),
        (end(w="gw 0"), "schema", "bad worker id"),
    ],
)
def test_an_end_of_the_wrong_shape_says_what_is_wrong(raw: Any, reason: str, text: str) -> None:
    with pytest.raises(ProtocolError) as excinfo:
        protocol.check_message(raw)
    assert excinfo.value.reason == reason
    assert text in str(excinfo.value)


def nested(depth: int) -> bytes:
    """msgpack for a list nested ``depth`` deep (msgpack itself allows 1024)."""
    return b"\x91" * depth + b"\x90"


@pytest.mark.parametrize("slot", [0, 1, 6, protocol.END_LENGTH - 1])
def test_a_value_nested_deeper_than_python_can_show_is_a_schema_reject(slot: int) -> None:
    fields = [msgpack.packb(value) for value in end()]
    fields[slot] = nested(1020)
    frame = protocol.sign(SECRET, body := b"\x91\xdc\x00\x16" + b"".join(fields))
    (raw,) = protocol.decode_frame(SECRET, [frame, body])
    with pytest.raises(ProtocolError, match="schema: a value nested too deep"):
        protocol.check_message(raw)
    body = b"\x91\x82\xa1v" + nested(1020) + b"\xa1k\xa5start"  # a map's version
    (raw,) = protocol.decode_frame(SECRET, [protocol.sign(SECRET, body), body])
    with pytest.raises(ProtocolError, match="schema: a value nested too deep"):
        protocol.check_message(raw)


def test_a_viewer_message_nested_too_deep_is_a_schema_reject() -> None:
    body = b"\x83\xa1v\x01\xa1k\xa4beat\xa3seq" + nested(1020)
    with pytest.raises(ProtocolError, match="schema: beat: a value nested too deep"):
        protocol.decode_viewer(SECRET, [protocol.sign(SECRET, body), body], frozenset({"beat"}))


MISSING = object()


def test_the_usual_end_knows_every_field_of_an_end() -> None:
    # protocol._usual_end unpacks these by hand: a field added to an end must be added
    # there too (this fails until it is).
    names = [name for name, _ in protocol.END_FIELDS]
    assert names == ["v", "k", "w", "t", "i", "id", "o", "m", "t0"]
    assert len(end()) == protocol.END_LENGTH == 22  # the length README documents
    assert "end" not in protocol.OPTIONAL


def checked(raw: Any, *checks: Callable[[Any], dict[str, Any]]) -> list[dict[str, Any] | str]:
    """What each check makes of ``raw``: the message, or the reason it was refused."""
    outcomes: list[dict[str, Any] | str] = []
    for check in checks:
        try:
            outcomes.append(check(raw))
        except ProtocolError as exc:
            outcomes.append(exc.reason)
    return outcomes


THREE = {"setup": (1, 2, 3, 0.5), "call": (3, 4, 9, 0.25), "teardown": (4, 4, 4, 0.0)}


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"p": THREE},
        {"p": THREE, "t": 1700000000, "t0": 1700000000},
        {"p": {**THREE, "call": (3, 4, 9, 1)}},
        {"p": THREE, "v": 1.0},
        {"p": THREE, "v": True},
        {"p": THREE, "k": "End"},
        {"p": THREE, "k": ["end"]},
        {"p": THREE, "w": "gw 0"},
        {"p": THREE, "w": "g" * 65},
        {"p": THREE, "q": -1},
        {"p": THREE, "q": True},
        {"p": THREE, "q": 1 << 60},
        {"p": THREE, "i": 1.0},
        {"p": THREE, "t": float("nan")},
        {"p": THREE, "t0": float("inf")},
        {"p": THREE, "t0": True},
        {"p": THREE, "id": ""},
        {"p": THREE, "id": "x" * (protocol.MAX_NODEID + 1)},
        {"p": THREE, "o": "lost"},
        {"p": THREE, "o": ["passed"]},
        {"p": THREE, "m": "guessed"},
        {"p": {**THREE, "call": (1, 2, True, 0.1)}},
        {"p": {**THREE, "call": (1, 2, 3, 1e300)}},
        {"p": {**THREE, "call": (1, 2, 3, float("nan"))}},
        {"p": {**THREE, "setup": (-1, 2, 3, 0.1)}},
        {"p": {**THREE, "teardown": (1, 2, 1 << 60, 0.1)}},
        {"p": {**THREE, "teardown": (1, 2, 3, "0.1")}},
    ],
)
def test_the_usual_end_is_checked_as_any_end_is(changes: dict[str, Any]) -> None:
    # The sink checks an end of the usual shape in one go: it must accept exactly what
    # the field-by-field check accepts, and give the same result.
    raw = end(**changes)
    outcomes = checked(raw, protocol.check_message, protocol._check_end)
    assert outcomes[0] == outcomes[1]
    # And the fast path is taken where it should be: every valid end of three phases
    # with float times.
    usual = protocol._usual_end(raw)
    assert usual in (None, outcomes[1])
    phases = changes.get("p", {})
    durations = [figures[3] for figures in phases.values()]
    usual_shape = len(phases) == 3 and all(type(d) is float for d in durations)
    if changes.keys() == {"p"} and usual_shape and not isinstance(outcomes[0], str):
        assert usual is not None and usual["p"] == phases


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"ph": ""},
        {"ph": "setup", "i": -1},
        {"s": [[1.7e9 + n / 10, n << 20] for n in range(protocol.MAX_SAMPLES)]},
        {"s": [[1.7e9, 1 << 20]] * (protocol.MAX_SAMPLES + 1)},
        {"s": []},
        {"s": [[1.7e9, 1 << 20], [1.7e9]]},
        {"s": [(1.7e9, 1 << 20)]},
        {"s": [[1700000000, 1 << 20]]},
        {"s": [[1.7e9, 1.0]]},
        {"s": [[1.7e9, True]]},
        {"s": [[1.7e9, -1]]},
        {"s": [[1.7e9, 1 << 60]]},
        {"s": [[float("nan"), 1]]},
        {"s": [[1e12, 1]]},
        {"s": {"t": 1.7e9}},
        {"t": 1700000000},
        {"t": float("inf")},
        {"t": -1.0},
        {"v": 1},
        {"v": True},
        {"v": 2.0},
        {"k": "Sample"},
        {"k": ["sample"]},
        {"w": ""},
        {"w": "gw 0"},
        {"w": "g" * 65},
        {"w": 7},
        {"q": -1},
        {"q": True},
        {"q": 1 << 60},
        {"i": -2},
        {"i": 1.0},
        {"ph": "lunch"},
        {"ph": None},
        {"extra": 1},
    ],
)
def test_the_usual_sample_is_checked_as_any_message_is(changes: dict[str, Any]) -> None:
    # The sink checks a sample of the usual shape in one go: it must accept exactly what
    # the field-by-field check accepts, and give the same result.
    raw = message("sample", **changes)
    outcomes = checked(raw, protocol.check_message, protocol._check_fields)
    assert outcomes[0] == outcomes[1]
    assert list(outcomes[0]) == list(outcomes[1])  # the same fields, in the same order
    usual = protocol._usual_sample(raw) if len(raw) == 8 else None
    assert usual in (None, outcomes[1])
    # The fast path is taken for every valid sample of the usual shape.
    usual_shape = "t" not in changes and "extra" not in changes and "s" not in changes
    if usual_shape and not isinstance(outcomes[0], str):
        assert usual is not None


def test_samples_are_checked() -> None:
    with pytest.raises(ProtocolError, match=r"sample\.s"):
        protocol.check_message(message("sample", s=[[1.0, 2, 3]]))
    with pytest.raises(ProtocolError, match=r"sample\.s"):
        protocol.check_message(message("sample", s=[[1.0, 1]] * (protocol.MAX_SAMPLES + 1)))


def test_fallback_records_decode_and_reject_other_kinds() -> None:
    blob = protocol.pack(end()) + protocol.pack(end(i=1))
    assert [r["i"] for r in protocol.decode_records(blob)] == [0, 1]
    with pytest.raises(ProtocolError, match="fallback holds a 'start' message"):
        protocol.decode_records(protocol.pack(message()))
    with pytest.raises(ProtocolError):
        protocol.decode_records(blob[:-2])  # a half-written blob


def test_a_fallback_cut_anywhere_in_its_last_record_is_refused() -> None:
    last = protocol.pack(end(i=1))
    blob = protocol.pack(end()) + last
    for cut in range(1, len(last)):
        with pytest.raises(ProtocolError, match="msgpack: truncated after 1 records"):
            protocol.decode_records(blob[:-cut])


def test_optional_fields_may_be_left_out_but_are_checked_when_present() -> None:
    assert "lim" not in protocol.check_message(message())
    assert protocol.check_message(message(lim=[1 << 20, "peak"]))["lim"] == [1 << 20, "peak"]
    for bad in ([0, "growth"], [1, "rss"], [1], "200M"):
        with pytest.raises(ProtocolError, match=r"schema: start\.lim: "):
            protocol.check_message(message(lim=bad))


@pytest.mark.parametrize("field", ["o", "m"])
def test_an_unhashable_choice_is_a_schema_reject(field: str) -> None:
    with pytest.raises(ProtocolError, match=rf"end\.{field}: expected one of"):
        protocol.check_message(end(**{field: ["passed"]}))


def test_a_batch_too_big_for_one_frame_is_split_and_keeps_its_numbers() -> None:
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVTIMEO, 10_000)  # a lost frame fails the test, not hangs it
    try:
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        sender = Sender(f"tcp://127.0.0.1:{port}", SECRET)
        long_id = "t.py::" + "x" * 3000  # 600 of them are far more than one frame holds
        packed = [protocol.pack_message(message("start", id=long_id)) for _ in range(600)]
        assert sender.send_packed(packed, 7)
        numbers: list[int] = []
        while len(numbers) < 600:
            frames = pull.recv_multipart()
            assert len(frames[1]) <= protocol.MAX_FRAME
            numbers += [m["q"] for m in protocol.decode_frame(SECRET, frames)]
        sender.close()
    finally:
        pull.close(linger=0)
        context.term()
    assert numbers == list(range(7, 607))
    assert sender.sent == 600
