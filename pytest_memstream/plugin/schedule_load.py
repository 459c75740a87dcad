"""``--dist load`` with ``--memstream-max-total``: xdist's load scheduling, with hungry
tests handed out by budget (plugin/schedule.py has what both schedulers share).

Imported only when xdist asks for a scheduler: pytest-xdist is not a dependency.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xdist.scheduler import LoadScheduling

from pytest_memstream.plugin.schedule import MemoryAware

if TYPE_CHECKING:
    from xdist.workermanage import WorkerController


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
