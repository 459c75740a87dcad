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
  plus the largest prediction of the hungry tests it holds (it runs one at a time),
  whichever is larger: the stream
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

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from xdist.workermanage import WorkerController

    from pytest_memstream.collector.records import WorkerState
    from pytest_memstream.collector.state import RunState

MiB = 1 << 20
#: A test is hungry from this growth up, or from the budget's share below, if larger.
HUNGRY_FLOOR = 32 * MiB
#: A hungry test takes at least 1/HUNGRY_SHARE of a worker's fair share of the budget.
HUNGRY_SHARE = 8
#: What is kept back besides: for the page cache, the controller, and samples that come
#: an interval late.
MARGIN_FRACTION = 0.05
#: A worker's own memory before its tests take any (an xdist worker of pytest).
WORKER_BASE = 64 * MiB


class Domain(NamedTuple):
    """Memory one OOM killer guards: one machine, or one limited cgroup on it.  Workers on
    other hosts have their own (the far side's :func:`machine.describe`); workers on this
    machine, or on a host that turns out to be this machine, share this one's."""

    key: str
    #: What its workers may hold together (the budget's limit, before the margin).
    limit: int
    #: How it is named in the summary (``free in cgroup v1 /ci``, ``on build2 ...``).
    label: str


class MemoryDomains:
    """Which memory domain each worker runs in: this machine's, or for a worker on another
    host, the one its gateway's far side reports (machine.py's own source runs there, in
    one round trip, as the gateway comes up).  ``--memstream-max-total SIZE`` gives each
    domain SIZE; ``auto`` each its headroom as it was found."""

    def __init__(self, max_total: int | str, local_limit: int, local_source: str) -> None:
        from pytest_memstream.machine import describe

        self._max_total = max_total
        here = describe()
        self._here = str(here["domain"])
        label = "" if isinstance(max_total, int) else f" free in {local_source}"
        self.local = Domain(self._here, local_limit, label)
        self._by_gateway: dict[str, Domain] = {}

    def gateway_up(self, gateway: Any) -> None:
        """Ask the far side of ``gateway`` (a worker on another host) what memory it has."""
        far = _ask_memory(gateway)
        if far is None or far["domain"] == self._here:
            return  # unknown, or this very machine: it shares this machine's budget
        host = far["host"] or str(gateway.id)
        if isinstance(self._max_total, int):
            domain = Domain(far["domain"], self._max_total, f" on {host}")
        else:
            headroom = far["headroom"]
            limit = far["limit"] if headroom is None else headroom
            domain = Domain(far["domain"], limit, f" free on {host} in {far['source']}")
        self._by_gateway[gateway.id] = domain

    def of(self, worker: str) -> Domain | None:
        return self._by_gateway.get(worker)


def _ask_memory(gateway: Any) -> dict[str, Any] | None:
    from pytest_memstream import machine
    from pytest_memstream.plugin.remote import ask

    source = Path(machine.__file__).read_text(encoding="utf-8") + "\nchannel.send(describe())\n"
    answer = ask(gateway, source)
    if answer is None:  # its workers share our budget
        return None
    ok = (
        isinstance(answer.get("domain"), str)
        and isinstance(answer.get("host"), str)
        and isinstance(answer.get("source"), str)
        and type(answer.get("limit")) is int
        and (answer.get("headroom") is None or type(answer.get("headroom")) is int)
    )
    return answer if ok else None


class Budget:
    """What each memory domain may hold, what each test is predicted to take, and what is
    charged.  A domain's figures (see docs/schedule.md), for its limit ``L`` and its ``W``
    workers: a test is *hungry* from ``max(32 MiB, L / W / 8)``; the *margin* is ``W``
    times that plus 5% of ``L``; the *budget* is ``L`` less the margin."""

    def __init__(
        self,
        local: Domain,
        domain_of: Callable[[str], Domain | None],
        predictions: Mapping[str, int],
        state: RunState,
    ) -> None:
        self.local = local
        self._domain_of = domain_of
        self.predictions = dict(predictions)
        self._state = state
        #: worker id -> {collection index: predicted growth} of the hungry tests it holds
        self.charges: dict[str, dict[int, int]] = {}
        #: Tests handed out over the budget because nothing else could run; hungry tests
        #: held back at least once.
        self.forced = 0
        self.held: set[str] = set()
        #: Every domain a test was checked against, by key.
        self.seen: dict[str, Domain] = {}

    def domain(self, worker: str) -> Domain:
        found = self._domain_of(worker) or self.local
        self.seen.setdefault(found.key, found)
        return found

    def _workers(self, domain: Domain) -> list[WorkerState]:
        """The live workers of ``domain`` (under the state's lock)."""
        return [
            w
            for w in self._state.workers.values()
            if w.status in ("expected", "running") and self.domain(w.id).key == domain.key
        ]

    def _count(self, domain: Domain) -> int:
        """How many workers ``domain`` was given (the live ones, those done, not those a
        crash ended: a replacement takes their place)."""
        with self._state.cond:
            return max(
                1,
                sum(
                    1
                    for w in self._state.workers.values()
                    if w.status != "crashed" and self.domain(w.id).key == domain.key
                ),
            )

    def hungry_from(self, domain: Domain) -> int:
        return _hungry_from(domain.limit, self._count(domain))

    def budget(self, domain: Domain) -> int:
        workers = self._count(domain)
        # Tests that are not hungry run unchecked: each worker may be in one at once.
        margin = workers * _hungry_from(domain.limit, workers) + int(domain.limit * MARGIN_FRACTION)
        return max(0, domain.limit - margin)

    def need(self, nodeid: str) -> int:
        """The predicted growth of ``nodeid`` (0 without history)."""
        return self.predictions.get(nodeid, 0)

    def hungry(self, nodeid: str, domain: Domain) -> bool:
        return self.need(nodeid) >= self.hungry_from(domain)

    def total(self, domain: Domain) -> int:
        """The domain's predicted total: each of its workers' latest figure, or where it
        holds hungry tests, its figure before them plus the largest of their predictions
        (it runs one at a time), if larger."""
        total = 0
        with self._state.cond:
            for worker in self._workers(domain):
                latest = worker.held
                # Not heard from yet (it is still starting): what a worker usually takes.
                latest = latest or WORKER_BASE
                charged = self.charges.get(worker.id)
                if charged:
                    running = worker.running
                    base = latest
                    if running is not None:
                        start = running.tree_start
                        base = running.rss_start if start is None else start
                    # A worker runs one test at a time: what it holds at most.
                    latest = max(latest, base + max(charged.values()))
                total += latest
        return total

    def extra(self, nodeid: str, worker: str | None = None) -> int:
        """What handing ``nodeid`` to ``worker`` adds to the predicted total: its need, less
        what the hungry tests the worker already holds take (it runs one at a time)."""
        charged = self.charges.get(worker) if worker is not None else None
        need = self.need(nodeid)
        return max(0, need - max(charged.values())) if charged else need

    def fits(
        self, nodeid: str, domain: Domain, total: int | None = None, worker: str | None = None
    ) -> bool:
        """Whether ``nodeid`` fits in ``domain`` (on ``worker``, if given) on top of
        ``total`` (its predicted total, read now unless given)."""
        now = self.total(domain) if total is None else total
        return now + self.extra(nodeid, worker) <= self.budget(domain)

    def charge(self, worker: str, index: int, nodeid: str) -> None:
        self.charges.setdefault(worker, {})[index] = self.need(nodeid)

    def release(self, worker: str, index: int) -> None:
        self.charges.get(worker, {}).pop(index, None)

    def release_all(self, worker: str) -> None:
        self.charges.pop(worker, None)


def _hungry_from(limit: int, workers: int) -> int:
    """The growth from which a test is hungry, in a domain of ``limit`` and ``workers``."""
    return max(HUNGRY_FLOOR, limit // workers // HUNGRY_SHARE)


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
        domain = budget.domain(node.gateway.id)
        hungry_from = budget.hungry_from(domain)
        chosen: list[int] = []
        total: int | None = None  # read once, at the first hungry test
        for index in self.pending:
            if len(chosen) >= num:
                break
            nodeid = collection[index]
            if budget.need(nodeid) < hungry_from:
                chosen.append(index)
                continue
            if total is None:
                total = budget.total(domain)
            worker = node.gateway.id
            if budget.fits(nodeid, domain, total, worker):
                total += budget.extra(nodeid, worker)
                budget.charge(worker, index, nodeid)
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
        worker = node.gateway.id
        domain = budget.domain(worker)
        while len(self.node2pending[node]) < 2 and self.pending:
            index = min(self.pending, key=lambda i: budget.need(collection[i]))
            nodeid = collection[index]
            if budget.hungry(nodeid, domain) and not budget.fits(nodeid, domain, None, worker):
                budget.forced += 1
            budget.charge(worker, index, nodeid)
            self._hand_out(node, [index])
        if not self.pending:
            self._queue_emptied()

    def _queue_emptied(self) -> None:
        """Nothing waits any more: xdist's own way of telling workers there is no more."""
        raise NotImplementedError

    def _released(self, node: WorkerController, item_index: int) -> None:
        self.budget.release(node.gateway.id, item_index)


def summary_line(budget: Budget, collection: Sequence[str] | None) -> str:
    """What the scheduler did, for the terminal: each memory domain's budget, then what
    was held back."""
    from pytest_memstream.sizes import format_size

    domains = list(budget.seen.values()) or [budget.local]
    budgets = "; ".join(
        f"budget {format_size(budget.budget(d))} of {format_size(d.limit)}{d.label}, "
        f"{sum(1 for n in collection or () if budget.hungry(n, d))} hungry tests (growth of "
        f"{format_size(budget.hungry_from(d))} or more before)"
        for d in domains
    )
    return (
        f"memstream: scheduled by memory: {budgets}; {len(budget.held)} held back "
        f"for memory, {budget.forced} over the budget (nothing else could run)"
    )
