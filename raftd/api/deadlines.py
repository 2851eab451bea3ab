"""Deadlines of requests served without a task of their own, kept by one timer task.

A connection that answers requests from callbacks (see
:meth:`raftd.api.service.NamespaceService.start_write`) still owes each of them an
answer by its deadline. Rather than a cancel scope per request, it tracks them here:
:meth:`DeadlineHeap.run` (a task in the connection's nursery) sleeps until the earliest
deadline and calls ``expire()`` on what is overdue. Requests answered before their
deadline are not removed one by one; they are dropped when they reach the top of the
heap, or when the heap has doubled since its last sweep, so the heap stays within about
twice the requests in flight and costs O(log n) a request.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Protocol

import trio

__all__ = ["DeadlineHeap", "Expiring"]

#: Heap size below which answered requests are left for the timer to drop.
SWEEP_FLOOR = 64


class Expiring(Protocol):
    """A request answered from a callback, as the heap sees it."""

    @property
    def deadline(self) -> float: ...

    @property
    def finished(self) -> bool: ...

    def expire(self) -> None:
        """The deadline passed: answer with the deadline's error (a no-op once finished)."""

    def abandon(self) -> None:
        """Stop without an answer (the connection is gone)."""


class DeadlineHeap:
    """See the module docstring. Not thread-safe: one trio loop."""

    def __init__(self) -> None:
        self.items: list[tuple[float, int, Expiring]] = []
        self._tiebreak = itertools.count()
        self._timer: trio.CancelScope | None = None
        self._floor = SWEEP_FLOOR

    def __len__(self) -> int:
        return len(self.items)

    def track(self, item: Expiring) -> None:
        """Expire ``item`` at its deadline unless it has finished by then."""
        heap = self.items
        heapq.heappush(heap, (item.deadline, next(self._tiebreak), item))
        timer = self._timer
        if timer is not None and item.deadline < timer.deadline:
            timer.deadline = item.deadline
        if len(heap) >= 2 * self._floor:
            heap[:] = [e for e in heap if not e[2].finished]
            heapq.heapify(heap)
            self._floor = max(SWEEP_FLOOR, len(heap))

    def abandon_all(self) -> None:
        """Abandon every request still tracked (the connection is closing)."""
        items, self.items = self.items, []
        for _, _, item in items:
            item.abandon()

    async def run(self) -> None:
        """Expire overdue requests until cancelled."""
        while True:
            heap = self.items
            now = trio.current_time()
            while heap and (heap[0][2].finished or heap[0][0] <= now):
                heapq.heappop(heap)[2].expire()
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as self._timer:
                await trio.sleep_forever()
            self._timer = None
