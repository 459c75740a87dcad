"""The pytest plugin (entry point ``memstream``): options, and who plays which role.

- An xdist worker whose ``workerinput`` carries a ``memstream`` spec measures its tests
  and streams them to the controller's sink.
- Otherwise, with ``--memstream``, this process is the controller: it starts the sink
  and, when no xdist workers will run the tests, also measures them itself as ``main``.
- Without ``--memstream`` nothing at all happens: no thread, no socket, no file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from pytest_memstream.plugin.limits import marker_line
from pytest_memstream.plugin.options import add_options, resolve

if TYPE_CHECKING:
    from pytest_memstream.plugin.recorder import Recorder

# Everything else (ZeroMQ, msgpack, psutil, the sink) is imported only once the plugin is
# switched on: an installed plugin that is off must not cost every pytest run an import.


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", marker_line())
    settings = resolve(config)
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is not None:
        spec = workerinput.get("memstream")
        if isinstance(spec, dict):
            config.pluginmanager.register(WorkerRole(config, spec), "memstream-worker")
        return
    if not settings.enabled or config.getoption("collectonly"):
        return
    from pytest_memstream import protocol
    from pytest_memstream.collector.sink import Sink, SinkError
    from pytest_memstream.collector.state import RunState
    from pytest_memstream.plugin.controller import Controller

    secret = protocol.new_secret()
    try:
        sink = Sink(RunState(), secret, settings.bind)
    except SinkError as exc:
        raise pytest.UsageError(f"memstream: {exc}") from None
    if settings.warn is not None:
        from pytest_memstream.plugin.warn import GrowthAlarm, TerminalLines

        lines = TerminalLines(config)
        config.add_cleanup(lines.close)
        config.pluginmanager.register(lines, "memstream-terminal-lines")
        sink.listeners.append(GrowthAlarm(sink.state, settings.warn, lines).check)
    sink.start()
    controller = Controller(config, settings, sink, secret, start_recorder)
    config.pluginmanager.register(controller, "memstream-controller")
    controller.write_session_file()


def start_recorder(config: pytest.Config, spec: dict[str, Any]) -> Recorder:
    """Measure the tests of this process and stream them as described by ``spec``."""
    from pytest_memstream.plugin.probe import open_probe
    from pytest_memstream.plugin.recorder import Recorder
    from pytest_memstream.plugin.stream import Stream
    from pytest_memstream.sender import Sender

    sender = Sender(spec["endpoint"], bytes.fromhex(spec["secret"]))
    probe = open_probe()
    stream = Stream(sender, probe, spec["worker"], float(spec["interval"]))
    recorder = Recorder(stream, probe, spec.get("limit"))
    config.pluginmanager.register(recorder, "memstream-recorder")
    return recorder


class WorkerRole:
    """An xdist worker: measure, stream, and hand the totals back in ``workeroutput``."""

    def __init__(self, config: pytest.Config, spec: dict[str, Any]) -> None:
        self.config = config
        self.recorder = start_recorder(config, spec)

    def pytest_sessionfinish(self) -> None:
        # Here, not in unconfigure: xdist sends workeroutput right after this hook.
        workeroutput: dict[str, Any] = self.config.workeroutput  # type: ignore[attr-defined]
        from pytest_memstream.plugin.stream import CLOSE_TIMEOUT

        workeroutput["memstream"] = self.recorder.close(CLOSE_TIMEOUT)
