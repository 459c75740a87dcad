"""Hostile input on the sink's port during a real -n 2 run changes nothing in its report."""

from __future__ import annotations

import pytest
from conftest import RunMemstream

# A controller-side plugin: once both workers are streaming, it throws hostile frames at
# the sink, waits (with a deadline) until the sink has counted every one it can count,
# and then lets the blocking test finish. With FUZZ=0 it only lets the test finish.
FUZZER = """
import json, os, random, socket, threading, time
import msgpack, pytest, zmq
from pytest_memstream import protocol

COUNTED = 11_000  # frames whose rejection the sink can count, by reason
DONE = "fuzz-done"


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def hostile_frames(secret, rng):
    def signed(body):
        return [protocol.sign(secret, body), body]

    good = {"v": protocol.VERSION, "k": "start", "w": "gw0", "q": 0, "t": 1.0, "i": 0, "id": "x::y",
            "rss": 1}
    for _ in range(2000):  # random bytes, one part
        yield [rng.randbytes(rng.randrange(1, 300))]
    for _ in range(2000):  # random bytes with a made-up MAC
        yield [rng.randbytes(16), rng.randbytes(rng.randrange(1, 300))]
    for _ in range(2000):  # signed, but truncated msgpack
        body = protocol.pack([dict(good, q=rng.randrange(10**6))])
        yield signed(body[: rng.randrange(1, len(body))])
    for _ in range(1000):  # signed msgpack that is not a batch, or uses an extension type
        yield signed(rng.choice([msgpack.packb({"a": 1}), msgpack.packb(msgpack.ExtType(1, b"x"))]))
    for _ in range(1500):  # signed, wrong types and ranges
        field, value = rng.choice(
            [("q", "seven"), ("rss", -1), ("t", "now"), ("i", 1.5), ("id", 7), ("k", "boom")]
        )
        yield signed(protocol.pack([dict(good, **{field: value})]))
    call = {"call": (1, 1, 1, 0.1)}
    end = protocol.end_message("gw0", 1.0, 0, "x::y", "passed", "hwm", 1.0, call)
    for _ in range(600):  # signed ends (arrays) with a value no field takes, or cut short
        raw = list(end)
        raw[rng.randrange(len(raw))] = rng.choice([-1, "", [1], {"a": 1}, True, 1.5e300])
        if rng.random() < 0.2:
            raw = raw[: rng.randrange(len(raw))]
        yield signed(protocol.pack([raw]))
    for _ in range(500):  # signed, a protocol from the future
        yield signed(protocol.pack([dict(good, v=protocol.VERSION + 1)]))
    for n in range(700):  # signed, a worker this run never started
        yield signed(protocol.pack([dict(good, w=f"gw{100 + n}")]))
    for _ in range(700):  # signed replays of numbers gw0 and gw1 already used
        yield signed(protocol.pack([dict(good, w=rng.choice(["gw0", "gw1"]), q=0)]))


def fuzz(config, controller):
    state = controller.state
    deadline = time.monotonic() + 60
    while not all(state.workers.get(w) and state.workers[w].next_seq > 0 for w in ("gw0", "gw1")):
        assert time.monotonic() < deadline, "the workers never streamed"
        time.sleep(0.01)
    sessions = (config.rootpath / ".pytest_cache/d/memstream").glob("session-*")
    info = json.loads(next(sessions).read_text())
    secret = bytes.fromhex(info["secret"])
    before = rss()
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(info["endpoint"])
    sent = 0
    for frame in hostile_frames(secret, random.Random(1)):
        push.send_multipart(frame)
        sent += 1
    assert sent == COUNTED
    host, port = info["endpoint"][len("tcp://"):].rsplit(":", 1)
    for _ in range(20):  # not ZeroMQ at all
        with socket.create_connection((host, int(port))) as raw:
            raw.sendall(os.urandom(64) + b"GET / HTTP/1.0\\r\\n\\r\\n")
    oversized = context.socket(zmq.PUSH)  # ZeroMQ drops this peer: frames over the cap
    oversized.connect(info["endpoint"])
    for _ in range(3):
        oversized.send_multipart([b"x" * 16, b"\\x00" * (protocol.MAX_FRAME + 4096)])
    while sum(state.rejects.values()) < COUNTED:
        assert time.monotonic() < deadline, dict(state.rejects)
        time.sleep(0.01)
    result = {"sent": sent, "rss_growth": rss() - before}
    (config.rootpath / "fuzz.json").write_text(json.dumps(result))
    push.close(linger=0)
    oversized.close(linger=0)
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
    clean = run_memstream("-n", "2", "-v")
    (pytester.path / "fuzz-done").unlink()
    monkeypatch.setenv("FUZZ", "1")
    fuzzed = run_memstream("-n", "2", "-v")
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
    for reason in ("frame", "auth", "msgpack", "schema", "version", "unknown-worker", "replay"):
        assert rejected[reason] > 0, reason
    # Nothing hostile is kept: 10,000 frames leave the controller's memory where it was.
    assert fuzz["rss_growth"] < 32 << 20
    fuzzed.result.stdout.fnmatch_lines(["memstream: rejected input: *auth*frame*msgpack*"])
