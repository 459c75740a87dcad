"""The wire formats: what is accepted, and that everything else is rejected with a reason."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
import zmq

from pytest_memstream import security
from pytest_memstream.protocol import ProtocolError, viewer
from pytest_memstream.protocol import stream as wire
from pytest_memstream.protocol.checks import MAX_NODEID
from pytest_memstream.sender import Sender


def message(kind: str = "start", **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"k": kind, "t": 1.7e9}
    body = {
        "start": {"i": 0, "id": "test_a.py::test_a", "rss": 1 << 20},
        "sample": {"i": 0, "ph": "call", "s": [[1.7e9, 1 << 20]]},
    }[kind]
    return {**base, **body, **fields}


END = {
    "k": "end",
    "t": 1.7e9,
    "i": 0,
    "id": "t.py::t",
    "o": "passed",
    "m": "hwm",
    "t0": 1.7e9,
    "p": {"call": (1, 2, 3, 0.5)},
}


def end(**fields: Any) -> list[Any]:
    """An ``end`` as a worker sends it (an array), with ``fields`` of it changed by name;
    ``p`` maps the phases that ran to their four figures."""
    values = {**END, **fields}
    raw = wire.end_message(
        values["t"], values["i"], values["id"], values["o"], values["m"], values["t0"],
        values["p"],
    )  # fmt: skip
    raw[0] = values["k"]
    return raw


def test_a_frame_round_trips_with_its_header() -> None:
    packed = [wire.pack_message(message()), wire.pack_message(end())]
    header, payload = wire.frame("gw3", 41, 7, packed)
    assert wire.decode_header(header) == wire.Header("gw3", 41, 2, 7)
    batch = wire.decode_payload(payload, 2)
    assert [wire.check_message(m)["k"] for m in batch] == ["start", "end"]


@pytest.mark.parametrize(
    ("header", "reason", "text"),
    [
        (msgpack.packb([2, "gw0", 0, 1, 0]), "version", "unsupported stream protocol version 2"),
        (msgpack.packb([True, "gw0", 0, 1, 0]), "version", "version True"),
        (msgpack.packb({"v": 3}), "frame", "a header must be an array"),
        (msgpack.packb([wire.VERSION, "gw0", 0]), "frame", "a header of 3 fields"),
        (msgpack.packb([wire.VERSION, "gw 0", 0, 1, 0]), "frame", "expected a worker id"),
        (msgpack.packb([wire.VERSION, "gw0", -1, 1, 0]), "frame", "expected an int"),
        (msgpack.packb([wire.VERSION, "gw0", 0, 0, 0]), "frame", "expected an int in [1, 4096]"),
        (msgpack.packb([wire.VERSION, "gw0", 0, 5000, 0]), "frame", "[1, 4096]"),
        (msgpack.packb([wire.VERSION, "gw0", 0, 1, 1.5]), "frame", "expected an int"),
        (b"\xc1", "msgpack", ""),
        (b"\x95" + b"\x00" * 300, "frame", "a header of 301 bytes"),
    ],
)
def test_a_bad_header_says_what_is_wrong(header: bytes, reason: str, text: str) -> None:
    with pytest.raises(ProtocolError) as excinfo:
        wire.decode_header(header)
    assert excinfo.value.reason == reason
    assert text in str(excinfo.value)


@pytest.mark.parametrize(
    ("payload", "count", "text"),
    [
        (wire.pack_message(message()), 2, "the header says 2 messages, the payload holds 1"),
        (wire.pack_message(message()) * 3, 2, "the header says 2 messages, the payload holds 3"),
        (wire.pack_message(message())[:-3], 1, "holds 0"),
        (b"\xc1", 1, "holds 0 ("),
        (msgpack.packb(msgpack.ExtType(5, b"data")), 1, "exceeds max_ext_len"),
        (msgpack.packb({1: 2}), 1, "holds 0"),
        (msgpack.packb("x" * 100_000), 1, "holds 0"),
    ],
)
def test_a_payload_that_is_not_what_its_header_says_is_a_frame_reject(
    payload: bytes, count: int, text: str
) -> None:
    with pytest.raises(ProtocolError) as excinfo:
        wire.decode_payload(payload, count)
    assert excinfo.value.reason == "frame"
    assert text in str(excinfo.value)


def test_an_oversized_payload_is_rejected_before_decoding() -> None:
    with pytest.raises(ProtocolError, match="size"):
        wire.decode_payload(b"\x00" * (wire.MAX_FRAME + 1), 1)


def test_an_int_time_is_accepted_as_a_float() -> None:
    assert wire.check_message(message(t=1700000000))["t"] == 1.7e9


@pytest.mark.parametrize(
    ("changes", "text"),
    [
        ({"k": "explode"}, "unknown message kind 'explode'"),
        ({"k": 7}, "unknown message kind 7"),
        ({"k": "end"}, "an end must be an array, not a map"),
        ({"i": -1}, "start.i: expected an int"),
        ({"i": True}, "start.i: expected an int"),
        ({"rss": 1 << 60}, "start.rss"),
        ({"rss": 1.5}, "start.rss"),
        ({"id": ""}, "start.id"),
        ({"id": 7}, "start.id"),
        ({"id": "x" * (MAX_NODEID + 1)}, "start.id"),
        ({"t": float("nan")}, "start.t"),
        ({"t": -1.0}, "start.t"),
    ],
)
def test_schema_and_range_checks(changes: dict[str, Any], text: str) -> None:
    with pytest.raises(ProtocolError) as excinfo:
        wire.check_message(message(**changes))
    assert excinfo.value.reason == "schema"
    assert text in str(excinfo.value)


def test_missing_field_is_named_and_unknown_fields_are_ignored() -> None:
    raw = message()
    del raw["rss"]
    with pytest.raises(ProtocolError, match=r"start\.rss: missing"):
        wire.check_message(raw)
    assert "later" not in wire.check_message(message(later=1))


def test_an_end_is_read_into_a_map_of_the_phases_that_ran() -> None:
    phases = {"setup": (1, 2, 2, 0.5), "teardown": (4, 3, 5, 0.0)}
    checked = wire.check_message(end(p=phases))
    assert checked == {**END, "p": phases}
    assert list(checked["p"]) == ["setup", "teardown"]


def test_an_end_from_a_later_version_with_more_fields_is_read() -> None:
    # docs/versioning.md: a later version may add optional fields at the end.
    assert wire.check_message([*end(), None, 123, "more"])["i"] == 0


TREE = {"peak": 500, "start": 100, "count": 2, "max_rss": 300, "method": "rusage",
        "killed": [[4242, "python", 9, 200]]}  # fmt: skip


def test_an_end_may_say_what_its_child_processes_came_to() -> None:
    assert "tree" not in wire.check_message(end())
    assert wire.check_message([*end(), None])["tree"] is None
    raw = wire.end_message(
        1.7e9, 0, "t.py::t", "passed", "hwm", 1.7e9, {"call": (1, 2, 3, 0.5)}, TREE
    )
    assert wire.check_message(raw)["tree"] == TREE


@pytest.mark.parametrize(
    "changes",
    [
        {"peak": -1},
        {"count": 1.0},
        {"method": "guessed"},
        {"killed": [[0, "python", 9, 1]]},
        {"killed": [[1, "p" * 65, 9, 1]]},
        {"killed": [[1, "python", 0, 1]]},
        {"killed": [[1, "python", 9]]},
        {"killed": [[1, "python", 9, 1]] * 257},
    ],
)
def test_a_tree_is_checked(changes: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError, match=r"^schema: end\.tree: "):
        wire.check_message([*end(), dict(TREE, **changes)])


#: Where in an end the three phases' figures are (four each).
FIGURES = len(wire.END_FIELDS)


@pytest.mark.parametrize(
    ("slot", "value", "text"),
    [
        (None, None, "end.p: no phase has figures"),  # every phase nil
        (FIGURES + 4, None, "end.p.call: expected an int"),  # a phase half there
        (FIGURES + 7, -1.0, "end.p.call: expected a number"),
        (FIGURES + 1, True, "end.p.setup: expected an int"),
        (FIGURES + 10, 1 << 60, "end.p.teardown: expected an int"),
        (1, float("inf"), "end.t: expected a number"),
        (2, 1.0, "end.i: expected an int"),
        (4, "lost", "end.o: expected one of"),
        (4, ["passed"], "end.o: expected one of"),
        (5, "guessed", "end.m: expected one of"),
        (6, True, "end.t0: expected a number"),
    ],
)
def test_end_fields_are_checked(slot: int | None, value: Any, text: str) -> None:
    raw = end(p={"setup": (1, 1, 1, 0.1), "call": (1, 2, 3, 0.5), "teardown": (2, 2, 2, 0.1)})
    if slot is None:
        raw[FIGURES : FIGURES + 12] = [None] * 12
    else:
        raw[slot] = value
    with pytest.raises(ProtocolError, match=text):
        wire.check_message(raw)


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ([], "end: expected 19 fields, got 0"),
        (["end"], "end: expected 19 fields, got 1"),
        (end()[:-1], "end: expected 19 fields, got 18"),
        (end(k="start"), "end.k: expected one of ['end']"),
    ],
)
def test_an_end_of_the_wrong_shape_says_what_is_wrong(raw: Any, text: str) -> None:
    with pytest.raises(ProtocolError) as excinfo:
        wire.check_message(raw)
    assert excinfo.value.reason == "schema"
    assert text in str(excinfo.value)


def nested(depth: int) -> bytes:
    """msgpack for a list nested ``depth`` deep (msgpack itself allows 1024)."""
    return b"\x91" * depth + b"\x90"


@pytest.mark.parametrize("slot", [0, 1, 6, wire.END_LENGTH - 1])
def test_a_value_nested_deeper_than_python_can_show_is_a_schema_reject(slot: int) -> None:
    three = {"setup": (1, 2, 3, 0.5), "call": (3, 4, 9, 0.25), "teardown": (4, 4, 4, 0.0)}
    fields = [msgpack.packb(value) for value in end(p=three)]
    fields[slot] = nested(1020)
    # Python up to 3.12 cannot even show such a value (RecursionError); 3.13 can.
    (raw,) = wire.decode_payload(b"\xdc\x00\x13" + b"".join(fields), 1)
    with pytest.raises(ProtocolError, match=r"^schema: ") as excinfo:
        wire.check_message(raw)
    (raw,) = wire.decode_payload(b"\x82\xa1t" + nested(1020) + b"\xa1k\xa5start", 1)
    with pytest.raises(ProtocolError, match=r"^schema: "):
        wire.check_message(raw)
    assert len(str(excinfo.value)) < 300


def test_a_viewer_message_nested_too_deep_is_a_schema_reject() -> None:
    body = b"\x83\xa1v\x02\xa1k\xa4beat\xa3seq" + nested(1020)
    with pytest.raises(ProtocolError, match=r"^schema: beat"):
        viewer.decode(body, frozenset({"beat"}))


def test_end_layout_is_what_the_docs_say() -> None:
    names = [name for name, _ in wire.END_FIELDS]
    assert names == ["k", "t", "i", "id", "o", "m", "t0"]
    assert len(end()) == wire.END_LENGTH == 19  # the length docs/protocol.md documents


@pytest.mark.parametrize(
    "changes",
    [
        {"ph": ""},
        {"ph": "setup", "i": -1},
        {"s": [[1.7e9 + n / 10, n << 20] for n in range(wire.MAX_SAMPLES)]},
        {"s": [[1700000000, 1 << 20]]},
        {"t": 1700000000},
    ],
)
def test_samples_of_every_usual_shape_are_accepted(changes: dict[str, Any]) -> None:
    assert wire.check_message(message("sample", **changes))["k"] == "sample"


@pytest.mark.parametrize(
    "changes",
    [
        {"s": [[1.7e9, 1 << 20]] * (wire.MAX_SAMPLES + 1)},
        {"s": []},
        {"s": [[1.7e9, 1 << 20], [1.7e9]]},
        {"s": [[1.0, 2, 3]]},
        {"s": [[1.7e9, 1.0]]},
        {"s": [[1.7e9, True]]},
        {"s": [[1.7e9, -1]]},
        {"s": [[1.7e9, 1 << 60]]},
        {"s": [[float("nan"), 1]]},
        {"s": [[1e12, 1]]},
        {"s": {"t": 1.7e9}},
        {"t": float("inf")},
        {"k": "Sample"},
        {"k": ["sample"]},
        {"i": -2},
        {"i": 1.0},
        {"ph": "lunch"},
        {"ph": None},
    ],
)
def test_samples_are_checked(changes: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as excinfo:
        wire.check_message(message("sample", **changes))
    assert excinfo.value.reason == "schema"


def test_optional_fields_may_be_left_out_but_are_checked_when_present() -> None:
    assert "lim" not in wire.check_message(message())
    assert wire.check_message(message(lim=[1 << 20, "peak"]))["lim"] == [1 << 20, "peak"]
    for bad in ([0, "growth"], [1, "rss"], [1], "200M"):
        with pytest.raises(ProtocolError, match=r"schema: start\.lim: "):
            wire.check_message(message(lim=bad))


def test_a_hello_may_name_its_host_and_only_as_a_host_name() -> None:
    hello = {"k": "hello", "t": 1.7e9, "pid": 7, "method": "hwm", "interval": 0.1, "rss": 1,
             "platform": "linux"}  # fmt: skip
    assert "host" not in wire.check_message(hello)  # a sink of before still reads it
    assert wire.check_message(dict(hello, host="build-2.lan"))["host"] == "build-2.lan"
    for bad in ("", "two words", "\x1b[2J", "h" * 254, 7):
        with pytest.raises(ProtocolError, match=r"schema: hello\.host: "):
            wire.check_message(dict(hello, host=bad))


# --- the fallback copy ---------------------------------------------------------------


def test_fallback_records_decode_and_other_kinds_are_not_records() -> None:
    blob = wire.pack_message(end()) + wire.pack_message(end(i=1))
    records, unreadable = wire.decode_records(blob, 2)
    assert [r["i"] for r in records] == [0, 1]
    assert unreadable == 0
    records, unreadable = wire.decode_records(wire.pack_message(message()) + blob, 3)
    assert ([r["i"] for r in records], unreadable) == ([0, 1], 1)


def test_one_bad_record_in_a_fallback_costs_that_record_only() -> None:
    bad = end(i=1)
    bad[3] = "x" * (MAX_NODEID + 1)  # a test id longer than the protocol carries
    blob = b"".join(wire.pack_message(r) for r in (end(i=0), bad, end(i=2), end(i=3)))
    records, unreadable = wire.decode_records(blob, 4)
    assert [r["i"] for r in records] == [0, 2, 3]
    assert unreadable == 1


def test_a_fallback_cut_anywhere_in_its_last_record_keeps_the_records_before() -> None:
    last = wire.pack_message(end(i=1))
    blob = wire.pack_message(end()) + last
    for cut in range(1, len(last)):
        records, unreadable = wire.decode_records(blob[:-cut], 2)
        assert [r["i"] for r in records] == [0]
        assert unreadable == 1


def test_a_long_test_id_is_cut_to_what_the_protocol_carries_and_stays_unique() -> None:
    assert wire.cut_nodeid("t.py::t") == "t.py::t"
    exact = "x" * MAX_NODEID
    assert wire.cut_nodeid(exact) == exact
    one, two = "t.py::t[" + "L" * 9000 + "]", "t.py::t[" + "L" * 9001 + "]"
    cut = wire.cut_nodeid(one)
    assert len(cut) == MAX_NODEID
    assert cut.startswith("t.py::t[LLL") and "cut from 9009 characters" in cut
    assert cut != wire.cut_nodeid(two)
    assert wire.cut_nodeid(one) == cut  # the same id, cut twice, matches itself
    assert wire.check_message(end(id=cut))["id"] == cut


# --- a real socket -------------------------------------------------------------------


def test_a_batch_too_big_for_one_frame_is_split_and_keeps_its_numbers() -> None:
    keys = security.RunKeys(b"s" * 32)
    context = zmq.Context()
    zap = security.ZapHandler(context, keys, lambda: ["gw0"])
    pull = context.socket(zmq.PULL)
    security.serve(pull, keys, security.STREAM)
    try:
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        sender = Sender(f"tcp://127.0.0.1:{port}", "gw0", keys.server.public, keys.worker("gw0"))
        long_id = "t.py::" + "x" * 3000  # 600 of them are far more than one frame holds
        packed = [wire.pack_message(message("start", id=long_id)) for _ in range(600)]
        assert sender.send(packed, 7)
        numbers: list[int] = []
        poller = zmq.Poller()
        poller.register(pull, zmq.POLLIN)
        poller.register(zap.socket, zmq.POLLIN)
        while len(numbers) < 600:
            ready = dict(poller.poll(10_000))
            assert ready, "a frame was lost"
            if zap.socket in ready:
                zap.handle()
            if pull in ready:
                header_frame, payload = pull.recv_multipart(copy=False)
                assert header_frame.get("User-Id") == "gw0"
                assert len(payload.bytes) <= wire.MAX_FRAME
                header = wire.decode_header(header_frame.bytes)
                numbers += range(header.first, header.first + header.messages)
                assert len(wire.decode_payload(payload.bytes, header.messages)) == header.messages
        sender.close()
    finally:
        zap.close()
        pull.close(linger=0)
        context.term()
    assert numbers == list(range(7, 607))
    assert sender.sent == 600
