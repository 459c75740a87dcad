"""The pytest plugin (entry point ``memstream``): options, and who plays which role.

- An xdist worker whose ``workerinput`` carries a ``memstream`` spec measures its tests
  and streams them to the controller's sink.
- Otherwise, with ``--memstream``, this process is the controller: it starts the sink
  and, when no xdist workers will run the tests, also measures them itself as ``main``.
- Without ``--memstream`` nothing at all happens: no thread, no socket, no file.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from pytest_memstream.plugin.options import (
    add_options,
    check_report_paths,
    marker_line,
    resolve,
)

if TYPE_CHECKING:
    from pytest_memstream.collector.sink import Sink
    from pytest_memstream.plugin.recorder import Recorder
    from pytest_memstream.plugin.warn import TerminalLines

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
    check_report_paths(config, settings)
    from pytest_memstream.plugin.controller import Controller, SinkStarter

    alarm: Callable[[Sink], None] = _no_alarm
    if settings.warn is not None:
        from pytest_memstream.plugin.warn import TerminalLines

        lines = TerminalLines(config)
        config.add_cleanup(lines.close)
        config.pluginmanager.register(lines, "memstream-terminal-lines")
        alarm = functools.partial(_add_alarm, settings.warn, lines)
    from pytest_memstream.security import RunKeys

    keys = RunKeys(os.urandom(32))
    starter = SinkStarter(keys, settings.bind, alarm)
    controller = Controller(config, settings, starter, keys, start_recorder)
    config.pluginmanager.register(controller, "memstream-controller")


def _no_alarm(sink: Sink) -> None:
    pass


def _add_alarm(size: int, lines: TerminalLines, sink: Sink) -> None:
    """Announce hungry tests on the terminal: the sink checks after each batch it applies."""
    from pytest_memstream.plugin.warn import GrowthAlarm

    sink.on_applied.append(GrowthAlarm(sink.state, size, lines).check)


def start_recorder(config: pytest.Config, spec: dict[str, Any]) -> Recorder:
    """Measure the tests of this process and stream them as described by ``spec``."""
    from pytest_memstream.plugin.probe import open_probe
    from pytest_memstream.plugin.recorder import Recorder
    from pytest_memstream.plugin.stream import Stream
    from pytest_memstream.sender import Sender

    worker = spec["worker"]
    sender = None
    if spec["endpoint"]:
        key, server_key = bytes.fromhex(spec["key"]), bytes.fromhex(spec["server_key"])
        sender = Sender(spec["endpoint"], worker, server_key, key)
    try:
        probe = open_probe()
        stream = Stream(sender, probe, float(spec["interval"]))
        recorder = Recorder(stream, probe, spec.get("limit"))
    except BaseException:
        if sender is not None:
            sender.close()
        raise
    config.pluginmanager.register(recorder, "memstream-recorder")
    return recorder


def start_failure(exc: Exception) -> str:
    """Why this process could not measure its tests, for the report."""
    return f"could not start measuring: {type(exc).__name__}: {exc}"


class WorkerRole:
    """An xdist worker: measure, stream, and hand the totals back in ``workeroutput``."""

    def __init__(self, config: pytest.Config, spec: dict[str, Any]) -> None:
        self.config = config
        self._spec = spec
        self.recorder: Recorder | None = None
        #: Why the recorder could not start, if it could not: the tests run unmeasured.
        self.failure = ""

    def _start(self) -> Recorder | None:
        """The recorder, started if it is not and it can be; None if it cannot."""
        if self.recorder is None and not self.failure:
            try:
                self.recorder = start_recorder(self.config, self._spec)
            except Exception as exc:  # costs the report this worker's tests, not the run
                self.failure = start_failure(exc)
        return self.recorder

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # The worker starts streaming once xdist has sent its collection: the controller
        # gives out no test until every worker has sent its own, and starting (ZeroMQ's
        # import above all) then takes the time a worker waits, instead of delaying the
        # collection that every worker waits for.
        recorder = self._start()
        if recorder is not None:
            recorder.note_items(self.config, session.items)
        else:
            from pytest_memstream.plugin.limits import check_unmeasured

            check_unmeasured(self.config, session.items, self._spec.get("limit"), self.failure)

    def pytest_sessionfinish(self) -> None:
        # Here, not in unconfigure: xdist sends workeroutput right after this hook.
        # A collection that never finished has not started the recorder: it says so,
        # with 0 tests.
        workeroutput: dict[str, Any] = self.config.workeroutput  # type: ignore[attr-defined]
        recorder = self._start()
        if recorder is not None:
            workeroutput["memstream"] = recorder.close()
        else:
            from pytest_memstream.protocol.stream import VERSION

            workeroutput["memstream"] = {"version": VERSION, "error": self.failure}
