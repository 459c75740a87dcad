"""The measuring role: an xdist worker, or the one pytest process as worker ``main``.

Either way a :class:`Recorder` measures the tests of this process and streams them to
the controller's sink, as a :class:`~pytest_memstream.handover.WorkerSpec` says; the
figures go back through ``workeroutput`` (or, for ``main``, straight to the controller).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_memstream.handover import WorkerFailure, WorkerSpec
    from pytest_memstream.plugin.recorder import Recorder


def start_recorder(config: pytest.Config, spec: WorkerSpec) -> Recorder:
    """Measure the tests of this process and stream them as described by ``spec``."""
    from pytest_memstream.plugin.probe import open_probe
    from pytest_memstream.plugin.recorder import Recorder
    from pytest_memstream.plugin.stream import Stream
    from pytest_memstream.plugin.tree import open_tree
    from pytest_memstream.sender import Sender

    sender = None
    if spec["endpoint"]:
        key, server_key = bytes.fromhex(spec["key"]), bytes.fromhex(spec["server_key"])
        sender = Sender(spec["endpoint"], spec["worker"], server_key, key)
    tree = None
    try:
        probe = open_probe()
        if spec.get("children", True):
            tree = open_tree()
        stream = Stream(sender, probe, float(spec["interval"]), tree)
        recorder = Recorder(stream, probe, spec.get("limit"), tree)
    except BaseException:
        if sender is not None:
            sender.close()
        if tree is not None:
            tree.close()
        raise
    config.pluginmanager.register(recorder, "memstream-recorder")
    return recorder


def start_failure(exc: Exception) -> str:
    """Why this process could not measure its tests, for the report."""
    return f"could not start measuring: {type(exc).__name__}: {exc}"


def failure_output(failure: str) -> WorkerFailure:
    """What a process that could not measure hands back instead of its totals."""
    from pytest_memstream.protocol.stream import VERSION

    return {"version": VERSION, "error": failure}


class WorkerRole:
    """An xdist worker: measure, stream, and hand the totals back in ``workeroutput``."""

    def __init__(self, config: pytest.Config, spec: WorkerSpec) -> None:
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
            workeroutput["memstream"] = failure_output(self.failure)
