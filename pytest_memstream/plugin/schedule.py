"""Memory-aware scheduling under xdist: ``--memstream-max-total SIZE|auto``.

xdist's own load and worksteal scheduling, with one change: a *hungry* test (one whose
predicted growth is large, see :class:`Budget`) is handed to a worker only when the run's
predicted total stays under the budget.  Everything else flows as xdist sends it.

- A prediction is a test's growth in an earlier run: the process tree's growth where it
  is known (its ``tree_growth``), from the saved baselines and from what this scheduler
  learnt in earlier runs (the pytest cache); a test that crashed its worker needs at
  least what it had reached.  A test without history is not hungry: it runs, and is
  learnt for next time.
- The predicted total is each worker's latest figure (its tree's total, from the sink),
  or, where a hungry test was given to it, the figure the worker started that test from
  plus the predictions of the hungry tests it holds, whichever is larger: the stream
  corrects the picture, it does not drive it.  A hungry test is charged when it is
  handed out and released when xdist marks it complete.
- xdist runs a test only once its worker holds the next one: a test held back can keep a
  worker waiting, and xdist's loop acts only on workers' events.  So no worker is ever
  left without a test to run while every one waits: if nothing fits and nobody runs, the
  smallest waiting test goes.

The scheduler runs on the controller's main thread, inside xdist's loop; the sink thread
updates the run's state: the scheduler reads it under the state's lock and never talks to
a socket.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from xdist.scheduler import LoadScheduling, WorkStealingScheduling

if TYPE_CHECKING:
    from xdist.workermanage import WorkerController

    from pytest_memstream.collector.state import RunState

MiB = 1 << 20
#: A test is hungry from this growth up, or from the budget's share below, if larger.
HUNGRY_FLOOR = 32 * MiB
#: A hungry test takes at least 1/HUNGRY_SHARE of a worker's fair share of the budget.
HUNGRY_SHARE = 8
#: What is kept back besides: for the page cache, the controller, and samples that come
#: an interval late.
MARGIN_FRACTION = 0.05
#: Where the learnt predictions live in the pytest cache.
CACHE_KEY_LEARNT = "memstream/predictions"


class Budget:
    """What the run may hold, what each test is predicted to take, and what is charged."""

    def __init__(
        self,
        limit: int,
        workers: int,
        predictions: Mapping[str, int],
        state: RunState,
    ) -> None:
        self.limit = limit
        self.hungry_from = max(HUNGRY_FLOOR, limit // max(1, workers) // HUNGRY_SHARE)
        # Tests that are not hungry run unchecked: each worker may be in one at once.
        self.margin = workers * self.hungry_from + int(limit * MARGIN_FRACTION)
        self.budget = max(0, limit - self.margin)
        self.predictions = dict(predictions)
        self._state = state
        #: worker id -> {collection index: predicted growth} of the hungry tests it holds
        self.charges: dict[str, dict[int, int]] = {}
        #: Tests handed out over the budget because nothing else could run; hungry tests
        #: held back at least once.
        self.forced = 0
        self.held: set[str] = set()

    def need(self, nodeid: str) -> int:
        """The predicted growth of ``nodeid`` (0 without history)."""
        return self.predictions.get(nodeid, 0)

    def hungry(self, nodeid: str) -> bool:
        return self.need(nodeid) >= self.hungry_from

    def total(self) -> int:
        """The run's predicted total: every worker's latest figure, or where it holds
        hungry tests, its figure before them plus their predictions, if larger."""
        total = 0
        with self._state.cond:
            for worker in self._state.workers.values():
                if worker.status not in ("expected", "running"):
                    continue
                latest = worker.tree if worker.tree is not None else worker.rss
                # Not heard from yet (it is still starting): what a worker usually takes.
                latest = latest or WORKER_BASE
                charged = self.charges.get(worker.id)
                if charged:
                    running = worker.running
                    base = latest
                    if running is not None:
                        start = running.tree_start
                        base = running.rss_start if start is None else start
                    latest = max(latest, base + sum(charged.values()))
                total += latest
        return total

    def fits(self, nodeid: str, total: int | None = None) -> bool:
        """Whether ``nodeid`` fits on top of ``total`` (the predicted total, read now
        unless given)."""
        return (self.total() if total is None else total) + self.need(nodeid) <= self.budget

    def charge(self, worker: str, index: int, nodeid: str) -> None:
        self.charges.setdefault(worker, {})[index] = self.need(nodeid)

    def release(self, worker: str, index: int) -> None:
        self.charges.get(worker, {}).pop(index, None)

    def release_all(self, worker: str) -> None:
        self.charges.pop(worker, None)


class MemoryAware:
    """What both schedulers add to xdist's: the hungry tests are handed out by budget.

    Mixed in before xdist's class: ``_send_tests`` is the one place xdist hands tests to
    a worker, in both schedulers (xdist 3.x).
    """

    budget: Budget
    pending: list[int]
    collection: list[str] | None
    node2pending: dict[WorkerController, list[int]]

    def _send_tests(self, node: WorkerController, num: int) -> None:
        assert self.collection is not None
        budget, collection = self.budget, self.collection
        chosen: list[int] = []
        total: int | None = None  # read once, at the first hungry test
        for index in self.pending:
            if len(chosen) >= num:
                break
            nodeid = collection[index]
            if not budget.hungry(nodeid):
                chosen.append(index)
                continue
            if total is None:
                total = budget.total()
            if budget.fits(nodeid, total):
                budget.charge(node.gateway.id, index, nodeid)
                total += budget.need(nodeid)
                chosen.append(index)
            else:
                budget.held.add(nodeid)
        self._hand_out(node, chosen)

    def _hand_out(self, node: WorkerController, indices: list[int]) -> None:
        if not indices:
            return
        taken = set(indices)
        self.pending[:] = [i for i in self.pending if i not in taken]
        self.node2pending[node].extend(indices)
        node.send_runtest_some(indices)

    def _unstall(self) -> None:
        """If no worker can run a test while tests wait, the smallest waiting ones go:
        to the worker that holds most, until it holds two (a worker runs a test only
        once it holds the next one, or is told there is none)."""
        nodes = [n for n in self.node2pending if not n.shutting_down]
        if not self.pending or not nodes or any(len(self.node2pending[n]) >= 2 for n in nodes):
            return
        assert self.collection is not None
        collection, budget = self.collection, self.budget
        node = max(nodes, key=lambda n: len(self.node2pending[n]))
        while len(self.node2pending[node]) < 2 and self.pending:
            index = min(self.pending, key=lambda i: budget.need(collection[i]))
            budget.charge(node.gateway.id, index, collection[index])
            budget.forced += 1
            self._hand_out(node, [index])
        if not self.pending:
            self._queue_emptied()

    def _queue_emptied(self) -> None:
        """Nothing waits any more: xdist's own way of telling workers there is no more."""
        raise NotImplementedError

    def _released(self, node: WorkerController, item_index: int) -> None:
        self.budget.release(node.gateway.id, item_index)


class MemoryAwareLoad(MemoryAware, LoadScheduling):
    """xdist's ``--dist load``, with hungry tests handed out by budget."""

    def mark_test_complete(
        self, node: WorkerController, item_index: int, duration: float = 0
    ) -> None:
        self._released(node, item_index)
        super().mark_test_complete(node, item_index, duration)
        # Memory freed by one worker may let another one have its next test.
        for other in list(self.node2pending):
            if other is not node:
                self.check_schedule(other)
        self._unstall()

    def check_schedule(self, node: WorkerController, duration: float = 0) -> None:
        super().check_schedule(node, duration)
        self._unstall()

    def schedule(self) -> None:
        super().schedule()
        self._unstall()

    def remove_node(self, node: WorkerController) -> str | None:
        self.budget.release_all(node.gateway.id)
        crashed: str | None = super().remove_node(node)
        self._unstall()
        return crashed

    def _queue_emptied(self) -> None:
        for node in list(self.node2pending):
            LoadScheduling.check_schedule(self, node)  # with no tests left: a shutdown


class MemoryAwareWorksteal(MemoryAware, WorkStealingScheduling):
    """xdist's ``--dist worksteal``, with hungry tests handed out by budget.

    Worksteal hands every test out in its first split, and shuts down an idle worker
    that has nothing to steal: while hungry tests wait for memory, an idle worker waits
    for them instead.
    """

    def mark_test_complete(
        self, node: WorkerController, item_index: int, duration: float | None = None
    ) -> None:
        self._released(node, item_index)
        super().mark_test_complete(node, item_index, duration)

    def check_schedule(self) -> None:
        held = [i for i in self.pending if self._waits(i)]
        if not held:
            super().check_schedule()
            return
        # Let xdist hand out (and steal) what may go now; the held ones wait aside, and
        # no worker is shut down while they do.
        waiting = set(held)
        self.pending[:] = [i for i in self.pending if i not in waiting]
        try:
            for node, pending in list(self.node2pending.items()):
                if not node.shutting_down and len(pending) < 2 and self.pending:
                    self._send_tests(node, max(1, len(self.pending) // len(self.node2pending)))
        finally:
            self.pending[:] = held + self.pending
        # Held tests that fit now go to the idle workers.
        for node, pending in list(self.node2pending.items()):
            if not node.shutting_down and len(pending) < 2:
                self._send_tests(node, 2 - len(pending))
        self._unstall()

    def _queue_emptied(self) -> None:
        WorkStealingScheduling.check_schedule(self)  # steals, or shuts idle workers down

    def _waits(self, index: int) -> bool:
        assert self.collection is not None
        nodeid = self.collection[index]
        return self.budget.hungry(nodeid) and not self.budget.fits(nodeid)

    def remove_node(self, node: WorkerController) -> str | None:
        self.budget.release_all(node.gateway.id)
        crashed: str | None = super().remove_node(node)
        return crashed


def make_scheduler(
    config: pytest.Config, log: Any, budget: Budget
) -> MemoryAwareLoad | MemoryAwareWorksteal | None:
    """The memory-aware scheduler for ``--dist``, None where there is none (xdist's)."""
    dist = config.getoption("dist", "load")
    if dist == "load":
        scheduler: MemoryAwareLoad | MemoryAwareWorksteal = MemoryAwareLoad(config, log)
    elif dist == "worksteal":
        scheduler = MemoryAwareWorksteal(config, log)
    else:
        return None
    scheduler.budget = budget
    return scheduler


def summary_line(budget: Budget, source: str, collection: Sequence[str] | None) -> str:
    """What the scheduler did, for the terminal."""
    from pytest_memstream.sizes import format_size

    hungry = sum(1 for nodeid in collection or () if budget.hungry(nodeid))
    return (
        f"memstream: scheduled by memory: budget {format_size(budget.budget)} of "
        f"{format_size(budget.limit)}{source}, {hungry} hungry tests (growth of "
        f"{format_size(budget.hungry_from)} or more before), {len(budget.held)} held back "
        f"for memory, {budget.forced} over the budget (nothing else could run)"
    )


def workers_for(budget_bytes: int, predictions: Mapping[str, int]) -> int:
    """How many workers ``budget_bytes`` holds at once, each in a usual test: a worker's
    own memory and the 90th percentile of the predicted growths (hungry tests beyond
    that are the scheduler's to space out)."""
    growths = sorted(predictions.values())
    usual = growths[int(len(growths) * 0.9)] if growths else 0
    return max(1, budget_bytes // (WORKER_BASE + usual))


#: A worker's own memory before its tests take any (an xdist worker of pytest).
WORKER_BASE = 64 * MiB


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
    if isinstance(max_total, int):
        limit = max_total
    else:
        found = memory_limit()
        headroom = found.headroom()
        limit = found.limit if headroom is None else headroom
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
