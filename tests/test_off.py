"""When the plugin is off it does nothing at all; disabling it or xdist never breaks a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

PROBE = """
import json, os, sys, threading
import pytest

def _snapshot(config, where):
    sockets = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            sockets += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    threads = sorted(t.name for t in threading.enumerate())
    out = config.rootpath / f"probe-{where}-{os.getpid()}.json"
    heavy = [m for m in ("zmq", "msgpack", "psutil", "rich") if m in sys.modules]
    ours = sorted(m for m in sys.modules if m.startswith("pytest_memstream"))
    seen = {"threads": threads, "sockets": sockets, "heavy": heavy, "ours": ours}
    out.write_text(json.dumps(seen))

def test_probe(request):
    _snapshot(request.config, "test")

def pytest_unconfigure(config):
    if not hasattr(config, "workerinput"):
        _snapshot(config, "controller")
"""


OFF_MODULES = ["pytest_memstream", "pytest_memstream.plugin", "pytest_memstream.plugin.options"]


def probes(path: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(path.glob("probe-*.json"))]


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["single", "xdist"])
def test_off_means_no_thread_socket_or_file(pytester: pytest.Pytester, xdist: list[str]) -> None:
    pytester.makeconftest(PROBE)
    pytester.makepyfile(test_a="from conftest import test_probe\n")
    result = pytester.runpytest_subprocess(*xdist)
    result.assert_outcomes(passed=1)
    seen = probes(pytester.path)
    assert seen, "the probe did not run"
    for probe in seen:
        assert not [t for t in probe["threads"] if "memstream" in t]
        assert probe["sockets"] == 0
        assert probe["heavy"] == []  # an installed plugin that is off imports nothing big
        # nor more of its own than declaring its flags takes (each module ~0.5 ms a process)
        assert probe["ours"] == OFF_MODULES
    assert not (pytester.path / ".pytest_cache" / "d" / "memstream").exists()
    assert "memstream:" not in result.stdout.str()

    # The same probe does see the plugin when it is on, so the check above can fail.
    for p in pytester.path.glob("probe-*.json"):
        p.unlink()
    on = pytester.runpytest_subprocess("--memstream", *xdist)
    on.assert_outcomes(passed=1)
    assert any(any("memstream" in t for t in probe["threads"]) for probe in probes(pytester.path))
    assert all(len(probe["ours"]) > len(OFF_MODULES) for probe in probes(pytester.path))


def test_disabled_plugin_and_disabled_xdist(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a="def test_a():\n    pass\n")
    pytester.runpytest_subprocess("-p", "no:memstream").assert_outcomes(passed=1)
    # --memstream does not exist once the plugin is disabled: a usage error, as for any flag.
    gone = pytester.runpytest_subprocess("-p", "no:memstream", "--memstream")
    assert gone.ret == pytest.ExitCode.USAGE_ERROR
    alone = pytester.runpytest_subprocess("-p", "no:xdist", "--memstream")
    alone.assert_outcomes(passed=1)
    alone.stdout.fnmatch_lines(["memstream: 1 test on 1 worker, *"])


def test_collect_only_under_xdist(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a="def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    result = pytester.runpytest_subprocess("--collect-only", "-n", "2", "--memstream")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*2 tests collected*"])
    assert "memstream: top" not in result.stdout.str()


def test_session_file_is_private_and_removed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_a="""
        import json, os, stat

        def test_session_file(request):
            directory = request.config.rootpath / ".pytest_cache" / "d" / "memstream"
            (path,) = directory.glob("session-*.json")
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
            content = json.loads(path.read_text())
            assert content["endpoint"].startswith("tcp://127.0.0.1:")
            assert len(bytes.fromhex(content["secret"])) == 32
        """
    )
    result = pytester.runpytest_subprocess("--memstream", "-n", "2")
    result.assert_outcomes(passed=1)
    assert not list((pytester.path / ".pytest_cache" / "d" / "memstream").glob("session-*"))
