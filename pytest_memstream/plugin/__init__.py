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
    keep_test_paths,
    marker_line,
    resolve,
)

if TYPE_CHECKING:
    from pytest_memstream.handover import WorkerSpec

# Everything else (ZeroMQ, msgpack, psutil, the sink) is imported only once the plugin is
# switched on: an installed plugin that is off must not cost every pytest run an import.


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> None:
    # Before pytest parses the command line for good: an optional baseline name must not
    # take the test path that follows it (pytest --memstream-save tests/test_x.py).
    keep_test_paths(args, early_config.invocation_params.dir)


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` with ``--memstream-max-total``: no more workers than the budget holds.
    (xdist asks in ``pytest_cmdline_main``, before the controller exists.)"""
    settings = resolve(config)
    if not settings.enabled or settings.max_total is None:
        return None
    from pytest_memstream.plugin.scheduling import auto_workers

    return auto_workers(config, settings.max_total)


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

    controller = start_controller(config, settings)
    config.pluginmanager.register(controller, "memstream-controller")
    if controller.scheduling is not None:
        config.pluginmanager.register(controller.scheduling, "memstream-scheduling")
    if settings.markdown_path is not None or settings.junit_path is not None:
        from pytest_memstream.plugin.ci import CiReports

        config.pluginmanager.register(CiReports(controller), "memstream-ci")
