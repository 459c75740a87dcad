"""The pytest plugin (entry point ``memstream``): its options, and who plays which role.

- An xdist worker whose ``workerinput`` carries a ``memstream`` spec measures its tests
  and streams them to the controller's sink (plugin/worker.py).
- Otherwise, with ``--memstream``, this process is the controller: it starts the sink
  and, when no xdist workers will run the tests, also measures them itself as ``main``
  (plugin/controller.py).
- Without ``--memstream`` nothing at all happens: no thread, no socket, no file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import pytest

from pytest_memstream.plugin.options import (
    add_options,
    check_report_paths,
    marker_line,
    resolve,
)

if TYPE_CHECKING:
    from pytest_memstream.handover import WorkerSpec

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
            from pytest_memstream.plugin.worker import WorkerRole

            # As the controller wrote it (execnet carries it unchanged).
            role = WorkerRole(config, cast("WorkerSpec", spec))
            config.pluginmanager.register(role, "memstream-worker")
        return
    if not settings.enabled or config.getoption("collectonly"):
        return
    check_report_paths(config, settings)
    from pytest_memstream.plugin.controller import start_controller

    config.pluginmanager.register(start_controller(config, settings), "memstream-controller")
