"""The scheduled index: messages in `later/` by the time they may go.

Beside the `RetryIndex` (deferred messages by their next try) and consulted
by the `QueueIndex` the same way: a heap with lazy deletion beside a dict of
the current times, so the next time due is found in O(log n) and the sender
never reads a file to learn it. What comes due joins the queue through the
Outbox (`outbox.later`), which owns the renames.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection

from exactmaild.core.lanes import Lane


class ScheduledIndex:
    """Names waiting in `later/`, each with its Deferred-Delivery time and
    its priority lane (read with the time, from the same header section)."""

    def __init__(self) -> None:
        self._at: dict[str, float] = {}
        self._lane: dict[str, Lane] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._at)

    def __contains__(self, name: object) -> bool:
        return name in self._at

    def names(self) -> list[str]:
        return list(self._at)

    def get(self, name: str) -> float:
        return self._at.get(name, math.inf)

    def lane(self, name: str) -> Lane:
        return self._lane.get(name, "normal")

    def set(self, name: str, when: float, lane: Lane | None = None) -> None:
        """`name` goes at `when` (`lane`: None keeps the one it had)."""
        self._at[name] = when
        if lane is not None:
            self._lane[name] = lane
        heapq.heappush(self._heap, (when, name))

    def discard(self, name: str) -> None:
        self._at.pop(name, None)
        self._lane.pop(name, None)

    def retain(self, names: Collection[str]) -> None:
        """Keep only these (after `queue cancel` or `hold` took some away)."""
        self._at = {n: t for n, t in self._at.items() if n in names}
        self._lane = {n: ln for n, ln in self._lane.items() if n in self._at}

    def _top(self) -> tuple[float, str] | None:
        while self._heap:
            when, name = self._heap[0]
            if self._at.get(name) == when:
                return when, name
            heapq.heappop(self._heap)  # superseded or discarded
        return None

    def next_time(self) -> float:
        top = self._top()
        return top[0] if top else math.inf

    def pop_due(self, now: float) -> list[tuple[str, Lane]]:
        """Take out every name whose time has come, earliest first (ties by
        name), each with its lane."""
        due = []
        while (top := self._top()) is not None and top[0] <= now:
            heapq.heappop(self._heap)
            del self._at[top[1]]
            due.append((top[1], self._lane.pop(top[1], "normal")))
        return due


__all__ = ["ScheduledIndex"]
