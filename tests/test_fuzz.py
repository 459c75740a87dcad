"""Hostile input on the sink's port during a real -n 2 run changes nothing in its report."""

from __future__ import annotations

import pytest
from runs import RunMemstream

# A controller-side plugin: once both workers are streaming, it throws hostile frames at
# the sink, waits (with a deadline) until the sink has counted every one it can count,
# and then lets the blocking test finish. With FUZZ=0 it only lets the test finish.
FUZZER = """
import json, os, random, socket, threading, time
import msgpack, pytest, zmq
from pytest_memstream import security
from pytest_memstream.protocol import stream as wire

COUNTED = 10_000  # frames whose rejection the sink counts one by one, by reason
STRANGERS = 5  # peers with keys of no run: each counted once
DONE = "fuzz-done"
FAR = 10**6  # numbers far past what the real gw0 ever uses


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def hostile_frames(rng):
    def frame(messages, first=None, count=None, worker="gw0", version=wire.VERSION):
        payload = b"".join(m if isinstance(m, bytes) else msgpack.packb(m) for m in messages)
        first = FAR + rng.randrange(FAR) if first is None else first
        count = len(messages) if count is None else count
        return [msgpack.packb([version, worker, first, count, 0]), payload]

    good = {"k": "start", "t": 1.0, "i": 0, "id": "x::y", "rss": 1}
    for _ in range(1500):  # random bytes, one part
        yield [rng.randbytes(rng.randrange(1, 300))]
    for _ in range(1500):  # random bytes, two parts
        yield [rng.randbytes(rng.randrange(1, 40)), rng.randbytes(rng.randrange(1, 300))]
    for _ in range(1500):  # truncated msgpack, or fewer or more messages than the header says
        body = msgpack.packb(good)
        cut = body[: rng.randrange(1, len(body))]
        yield rng.choice([frame([cut]), frame([good], count=2), frame([good, good], count=1)])
    for _ in range(1000):  # msgpack that is not a message, or uses an extension type
        yield frame([rng.choice([msgpack.packb([1, 2]), msgpack.packb(msgpack.ExtType(1, b"x"))])])
    for _ in range(1500):  # wrong types and ranges
        field, value = rng.choice(
            [("k", 7), ("rss", -1), ("t", "now"), ("i", 1.5), ("id", 7), ("k", "boom")]
        )
        yield frame([dict(good, **{field: value})])
    end = wire.end_message(1.0, 0, "x::y", "passed", "hwm", 1.0, {"call": (1, 1, 1, 0.1)})
    for _ in range(600):  # ends (arrays) with a value no field takes, or cut short
        raw = list(end)
        raw[rng.randrange(len(raw))] = rng.choice([-1, "", [1], {"a": 1}, True, 1.5e300])
        if rng.random() < 0.2:
            raw = raw[: rng.randrange(len(raw))]
        yield frame([raw])
    for _ in range(500):  # a protocol from the future, or the past
        yield frame([good], version=rng.choice([2, wire.VERSION + 1]))
    for n in range(700):  # gw0's key, speaking for another worker
        yield frame([good], worker=rng.choice(["gw1", f"gw{100 + n}"]))
    for _ in range(500):  # numbers gw0 already used
        yield frame([good], first=0)
    for _ in range(700):  # numbers no worker reaches
        yield frame([good], first=rng.choice([2**52, 2**40, wire.MAX_BATCH * 10**4]))


def fuzz(config, controller):
    state = controller.state
    deadline = time.monotonic() + 60
    while not all(state.workers.get(w) and state.workers[w].received for w in ("gw0", "gw1")):
        assert time.monotonic() < deadline, "the workers never streamed"
        time.sleep(0.01)
    sessions = (config.rootpath / ".pytest_cache/d/memstream").glob("session-*")
    info = json.loads(next(sessions).read_text())
    keys = security.RunKeys(bytes.fromhex(info["secret"]))
    before = rss()
    context = zmq.Context()

    def peer(key):
        push = context.socket(zmq.PUSH)
        if key is not None:
            security.connect_as(push, keys.server.public, key)
        push.connect(info["endpoint"])
        return push

    push = peer(keys.worker("gw0"))
    sent = 0
    for frame in hostile_frames(random.Random(1)):
        push.send_multipart(frame)
        sent += 1
    assert sent == COUNTED
    strangers = [peer(os.urandom(32)) for _ in range(STRANGERS)] + [peer(None)]
    for stranger in strangers:
        stranger.send_multipart([b"x", b"y"])
    host, port = info["endpoint"][len("tcp://"):].rsplit(":", 1)
    for _ in range(20):  # not ZeroMQ at all
        with socket.create_connection((host, int(port))) as raw:
            raw.sendall(os.urandom(64) + b"GET / HTTP/1.0\\r\\n\\r\\n")
    oversized = peer(keys.worker("gw1"))  # ZeroMQ drops this peer: frames over the cap
    for _ in range(3):
        oversized.send_multipart([b"x" * 16, b"\\x00" * (wire.MAX_FRAME + 4096)])
    while sum(state.rejects.values()) < COUNTED + STRANGERS + 1:
        assert time.monotonic() < deadline, dict(state.rejects)
        time.sleep(0.01)
    result = {"sent": sent, "rss_growth": rss() - before}
    (config.rootpath / "fuzz.json").write_text(json.dumps(result))
    for socket_ in [push, oversized, *strangers]:
        socket_.close(linger=0)
    context.term()


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session):
    config = session.config
    if hasattr(config, "workerinput"):
        return
    def run():
        try:
            if os.environ.get("FUZZ") == "1":
                fuzz(config, config.pluginmanager.get_plugin("memstream-controller"))
        finally:
            (config.rootpath / DONE).write_text("done")
    threading.Thread(target=run, daemon=True).start()
"""

TESTS = """
import pathlib, time
import pytest

@pytest.mark.parametrize("n", range(30))
def test_small(n):
    data = b"s" * ((n % 5) << 20)

def test_blocks_until_fuzzed(request):
    # Run by each worker (--dist each): both stay up until the fuzzer is done.
    done = request.config.rootpath / "fuzz-done"
    deadline = time.monotonic() + 120
    while not done.exists():
        assert time.monotonic() < deadline
        time.sleep(0.01)
"""


@pytest.mark.slow
def test_hostile_frames_change_nothing(
    pytester: pytest.Pytester, run_memstream: RunMemstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    pytester.makeconftest(FUZZER)
    pytester.makepyfile(test_fuzzed=TESTS)
    monkeypatch.setenv("FUZZ", "0")
    clean = run_memstream("-n", "2", "--dist", "each", "-v")
    (pytester.path / "fuzz-done").unlink()
    monkeypatch.setenv("FUZZ", "1")
    fuzzed = run_memstream("-n", "2", "--dist", "each", "-v")
    assert clean.result.ret == fuzzed.result.ret == pytest.ExitCode.OK

    def shape(run: object) -> tuple[object, ...]:
        report = run.report  # type: ignore[attr-defined]
        tests = sorted((t["nodeid"], t["outcome"], t["source"]) for t in report["tests"])
        workers = sorted(
            (w["id"], w["status"], w["lost"], w["recovered"]) for w in report["workers"]
        )
        return tuple(tests), tuple(workers)

    assert shape(fuzzed) == shape(clean)
    fuzz = json.loads((pytester.path / "fuzz.json").read_text())
    assert fuzz["sent"] >= 10_000
    rejected = fuzzed.report["run"]["rejected"]
    assert clean.report["run"]["rejected"] == {}
    assert sum(rejected.values()) >= fuzz["sent"]
    reasons = ("frame", "msgpack", "schema", "version", "identity", "replay", "sequence")
    for reason in reasons:
        assert rejected[reason] > 0, reason
    # A peer whose key is refused is counted once, however often it tries.
    assert rejected["refused"] == 5
    assert rejected["handshake"] >= 1
    # Nothing hostile is kept: 10,000 frames leave the controller's memory where it was.
    assert fuzz["rss_growth"] < 32 << 20
    fuzzed.result.stdout.fnmatch_lines(["memstream: rejected input: *frame*handshake*identity*"])
