"""``--dist worksteal`` with ``--memstream-max-total``: xdist's work stealing, with hungry
tests handed out by budget (plugin/schedule.py has what both schedulers share).

A module of its own: pytest-xdist has had worksteal only since 3.2, and this one is
imported only when a run asks for it (pytest-xdist is not a dependency).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xdist.scheduler import WorkStealingScheduling

from pytest_memstream.plugin.schedule import HUNGRY_FLOOR, MemoryAware

if TYPE_CHECKING:
    from xdist.workermanage import WorkerController


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
        """Whether test ``index`` is hungry and fits no worker's domain now."""
        assert self.collection is not None
        nodeid, budget = self.collection[index], self.budget
        if budget.need(nodeid) < HUNGRY_FLOOR:
            return False  # most tests: hungry nowhere
        domains = {budget.domain(n.gateway.id) for n in self.node2pending if not n.shutting_down}
        return all(
            budget.hungry(nodeid, domain) and not budget.fits(nodeid, domain)
            for domain in domains or {budget.local}
        )

    def remove_node(self, node: WorkerController) -> str | None:
        self.budget.release_all(node.gateway.id)
        crashed: str | None = super().remove_node(node)
        return crashed
