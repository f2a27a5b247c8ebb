"""The scheduled index: messages in `later/` by the time they may go.

Beside the `RetryIndex` (deferred messages by their next try) and consulted
by the `QueueIndex` the same way: a heap with lazy deletion beside a dict of
the current times, so the next time due is found in O(log n) and the sender
never reads a file to learn it. What comes due joins the queue through the
Outbox (`outbox.later`), which owns the renames.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection

from exactmaild.core.lanes import Lane
from exactmaild.outbox.retries import RetryIndex


class ScheduledIndex(RetryIndex):
    """Names waiting in `later/`, each with its Deferred-Delivery time and
    its priority lane (read with the time, from the same header section):
    the `RetryIndex`'s heap and times, and a lane each."""

    def __init__(self) -> None:
        super().__init__()
        self._lane: dict[str, Lane] = {}

    def lane(self, name: str) -> Lane:
        return self._lane.get(name, "normal")

    def set(self, name: str, when: float, lane: Lane | None = None) -> None:
        """`name` goes at `when` (`lane`: None keeps the one it had)."""
        super().set(name, when)
        if lane is not None:
            self._lane[name] = lane

    def discard(self, name: str) -> None:
        super().discard(name)
        self._lane.pop(name, None)

    def retain(self, names: Collection[str]) -> None:
        """Keep only these (after `queue cancel` or `hold` took some away)."""
        self._at = {n: t for n, t in self._at.items() if n in names}
        self._lane = {n: ln for n, ln in self._lane.items() if n in self._at}

    def pop_due(self, now: float) -> list[tuple[str, Lane]]:
        """Take out every name whose time has come, earliest first (ties by
        name), each with its lane."""
        due = []
        while (top := self._top()) is not None and top[0] <= now:
            heapq.heappop(self._heap)
            del self._at[top[1]]
            due.append((top[1], self._lane.pop(top[1], "normal")))
        return due
