"""The retry index: deferred messages by their next try.

A heap with lazy deletion beside a dict of the current times, so the next
try due is found in O(log n) and the sender never reads a file to learn it.
`outbox/index.py` keeps one per lane; `outbox/scheduled.py`'s index of mail
for later is one with a lane per name.
"""

from __future__ import annotations

import heapq
import math


class RetryIndex:
    """Deferred messages by their next try: a heap with lazy deletion beside a
    dict of the current times."""

    def __init__(self) -> None:
        self._at: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._at)

    def __contains__(self, name: object) -> bool:
        return name in self._at

    def names(self) -> list[str]:
        return list(self._at)

    def get(self, name: str) -> float:
        return self._at.get(name, math.inf)

    def set(self, name: str, when: float) -> None:
        self._at[name] = when
        heapq.heappush(self._heap, (when, name))

    def discard(self, name: str) -> None:
        self._at.pop(name, None)

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

    def first_due(self, now: float) -> str | None:
        top = self._top()
        return top[1] if top and top[0] <= now else None


__all__ = ["RetryIndex"]
