"""The controller's side of ``--memstream-max-total``: the budget, the predictions, the
hooks that hand xdist a memory-aware scheduler (plugin/schedule.py), and what a run
learns for the next one.

Made only when the option is given: without it the controller has none of this.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from pytest_memstream.plugin.schedule import WORKER_BASE

if TYPE_CHECKING:
    from pytest_memstream.collector.state import RunState
    from pytest_memstream.machine import MemoryLimit
    from pytest_memstream.plugin.options import Settings
    from pytest_memstream.plugin.schedule import Budget, MemoryDomains

#: Where the learnt predictions live in the pytest cache.
CACHE_KEY_LEARNT = "memstream/predictions"


class Owner(Protocol):
    """What this needs of the controller it sits beside (plugin/controller.py)."""

    config: pytest.Config
    settings: Settings
    problems: list[str]

    @property
    def state(self) -> RunState: ...

    @property
    def memory_limit(self) -> MemoryLimit: ...


class Scheduling:
    """A plugin beside the controller, registered with it when the option is given."""

    def __init__(self, controller: Owner, max_total: int | str) -> None:
        self.controller = controller
        self.max_total = max_total

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        # Known only now: xdist registers its DSession in a trylast pytest_configure.
        if session.config.pluginmanager.has_plugin("dsession"):
            # The budget's headroom as it is before xdist starts the workers (it does so
            # in its own pytest_sessionstart): they are counted by their own figures.
            self.domains  # noqa: B018
        else:
            self.controller.problems.append(
                "--memstream-max-total schedules pytest-xdist's workers, and this run had "
                "none (no -n, or no pytest-xdist): its tests ran one after the other as usual"
            )

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_newgateway(self, gateway: Any) -> None:
        if not getattr(gateway.spec, "popen", True):
            self.domains.gateway_up(gateway)  # its own memory, its own budget

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        """xdist's own scheduling, with hungry tests handed out by memory (schedule.py)."""
        dist = config.getoption("dist", "load")
        scheduler: Any
        if dist == "load":
            from pytest_memstream.plugin.schedule_load import MemoryAwareLoad

            scheduler = MemoryAwareLoad(config, log)
        elif dist == "worksteal":
            from pytest_memstream.plugin.schedule_worksteal import MemoryAwareWorksteal

            scheduler = MemoryAwareWorksteal(config, log)
        else:
            self.controller.problems.append(
                "--memstream-max-total schedules --dist load and worksteal only: with --dist "
                f"{dist} the tests ran as xdist handed them out"
            )
            return None
        scheduler.budget = self.budget
        return scheduler

    @functools.cached_property
    def predictions(self) -> dict[str, int]:
        cache: pytest.Cache | None = getattr(self.controller.config, "cache", None)
        return predictions(lambda key: None if cache is None else cache.get(key, None),
                           self.controller.settings.compare)  # fmt: skip

    @functools.cached_property
    def domains(self) -> MemoryDomains:
        from pytest_memstream.plugin.schedule import MemoryDomains

        limit = self.controller.memory_limit
        return MemoryDomains(self.max_total, _budget_bytes(self.max_total, limit), limit.source)

    @functools.cached_property
    def budget(self) -> Budget:
        from pytest_memstream.plugin.schedule import Budget

        domains = self.domains
        return Budget(domains.local, domains.of, self.predictions, self.controller.state)

    def learn(self, records: Sequence[Any]) -> None:
        """Keep what this run's tests took, for the next run's predictions."""
        learn(getattr(self.controller.config, "cache", None), self.predictions, records)

    def summary_line(self, collection: Sequence[str] | None) -> str | None:
        """What the scheduler did, None if xdist never asked for one."""
        if "budget" not in self.__dict__:
            return None
        from pytest_memstream.plugin.schedule import summary_line

        return summary_line(self.budget, collection)


def _budget_bytes(max_total: int | str, limit: MemoryLimit) -> int:
    """--memstream-max-total in bytes: as given, or for ``auto`` the headroom at the start
    (the limited cgroup's limit less what it holds, else ``MemAvailable``)."""
    if isinstance(max_total, int):
        return max_total
    headroom = limit.headroom()
    return limit.limit if headroom is None else headroom


def workers_for(budget_bytes: int, predictions: Mapping[str, int]) -> int:
    """How many workers ``budget_bytes`` holds at once, each in a usual test: a worker's
    own memory and the 90th percentile of the predicted growths (hungry tests beyond
    that are the scheduler's to space out)."""
    growths = sorted(predictions.values())
    usual = growths[int(len(growths) * 0.9)] if growths else 0
    return max(1, budget_bytes // (WORKER_BASE + usual))


def predictions(read: Callable[[str], Any], compare: str | Path | None) -> dict[str, int]:
    """``{node id: predicted growth}``: what earlier runs with ``--memstream-max-total``
    learnt, and the baseline compared against (``default`` without ``compare``), the
    larger of the two.  ``read(key)``: a value of the pytest cache, None where none."""
    from pytest_memstream.collector.baseline import CACHE_KEY, check_baseline
    from pytest_memstream.plugin.options import DEFAULT_BASELINE

    raw = read(CACHE_KEY_LEARNT)
    known = {}
    if isinstance(raw, dict):
        known = {k: v for k, v in raw.items() if isinstance(k, str) and type(v) is int and v >= 0}
    where = DEFAULT_BASELINE if compare is None else compare
    try:
        if isinstance(where, Path):
            document = json.loads(where.read_text(encoding="utf-8")) if where.is_file() else None
        else:
            document = read(CACHE_KEY + where)
        baseline = None if document is None else check_baseline(document)
    except (OSError, ValueError):  # the comparison, if any, says what is wrong with it
        baseline = None
    for nodeid, figures in (baseline or {}).get("tests", {}).items():
        values = [v for v in figures["tree_growth"] if v is not None]
        if values:
            known[nodeid] = max(known.get(nodeid, 0), *values)
    return known


def read_cache_early(config: pytest.Config) -> Callable[[str], Any]:
    """``read(key)`` for the pytest cache before pytest opens it: xdist asks how many
    workers ``-n auto`` means in ``pytest_cmdline_main``, before ``config.cache`` exists.
    Reads ``{cache_dir}/v/{key}``, the JSON file pytest's cache keeps each value in."""
    text = os.path.expandvars(os.path.expanduser(str(config.getini("cache_dir"))))
    directory = config.rootpath / text  # an absolute path stays what it is

    def read(key: str) -> Any:
        try:
            return json.loads((directory / "v" / key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    return read


def auto_workers(config: pytest.Config, max_total: int | str) -> int:
    """``-n auto`` with ``--memstream-max-total``: xdist's own count (the CPUs), capped by
    how many workers the budget holds, each in its usual test."""
    from xdist.plugin import pytest_xdist_auto_num_workers as by_cpu

    from pytest_memstream.machine import memory_limit

    cpus: int = by_cpu(config)
    limit = max_total if isinstance(max_total, int) else _budget_bytes(max_total, memory_limit())
    compare = config.getoption("memstream_compare", None)
    known = predictions(read_cache_early(config), compare)
    return max(1, min(cpus, workers_for(limit, known)))


def learn(cache: pytest.Cache | None, known: Mapping[str, int], records: Sequence[Any]) -> None:
    """Keep each test's growth for the next run (``records``: the run's TestRecords): its
    tree's, or for a test that crashed its worker, at least what it had reached."""
    if cache is None:
        return
    learnt_now = dict(known)
    for record in records:
        growth = record.tree_growth
        if record.outcome == "crashed":
            growth = max(growth, learnt_now.get(record.nodeid, 0))
        learnt_now[record.nodeid] = max(0, int(growth))
    cache.set(CACHE_KEY_LEARNT, learnt_now)
