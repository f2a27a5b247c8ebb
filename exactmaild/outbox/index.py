"""The queue in memory: what is sent next, found without rescanning the spool.

Two orders, one per waiting state, and the operator's word above both:

- `new/` is first in, first out: built from one scan at start-up (oldest
  first), then fed by inotify as producers rename files in;
- `deferred/` is a heap by the time of the next try, so the earliest retry
  is found in O(log n): a scan of every deferred message per send would make
  a backlog of retries (a server down for a day) quadratic;
- `queue send-now` puts a queued or deferred message before both
  (`put_first`), however long until its retry; pacing and the cap still
  decide when it goes.

The index only orders names; the files and their state changes belong to
the Outbox and the Spool.
"""

from __future__ import annotations

import heapq
import math
from collections import deque

from exactmaild.core.states import DEFERRED, NEW, State
from exactmaild.outbox.scheduled import ScheduledIndex


class Fifo:
    """Names queued in `new/`, oldest first, each at most once."""

    def __init__(self) -> None:
        self._order: deque[str] = deque()
        self._names: set[str] = set()

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def reset(self, names: list[str]) -> None:
        self._order = deque(names)
        self._names = set(names)

    def append(self, name: str) -> bool:
        """Add at the back; False if it is queued already."""
        if name in self._names:
            return False
        self._order.append(name)
        self._names.add(name)
        return True

    def push_front(self, name: str) -> None:
        """Put a message given back unblamed (an account problem) first again."""
        if name not in self._names:
            self._order.appendleft(name)
            self._names.add(name)

    def first(self) -> str | None:
        return self._order[0] if self._order else None

    def names(self) -> list[str]:
        """Oldest first: the order they will be sent in."""
        return list(self._order)

    def discard(self, name: str) -> None:
        if name in self._names:
            self._names.discard(name)
            self._order.remove(name)

    def retain(self, names: set[str]) -> None:
        """Keep only these names, in their order (one pass: a batch cancel
        of thousands must not remove them one by one)."""
        self._order = deque(n for n in self._order if n in names)
        self._names &= names


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


class QueueIndex:
    """Both orders together: which message is next, and whether it still is.

    Due retries go before new mail (they waited longest); within each, the
    order above.
    """

    def __init__(self) -> None:
        self.new = Fifo()
        self.deferred = RetryIndex()
        # Mail for later: not in the queue until its time (`outbox.later`).
        self.later = ScheduledIndex()
        self._first: deque[str] = deque()  # `queue send-now`, in the order asked

    def __len__(self) -> int:
        return len(self.new) + len(self.deferred)

    def put_first(self, name: str) -> None:
        """Send this one next (it is in `new` or `deferred` already)."""
        if name in self._first:
            self._first.remove(name)
        self._first.appendleft(name)

    def _front(self) -> tuple[str, State] | None:
        while self._first:
            name = self._first[0]
            if name in self.new:
                return name, NEW
            if name in self.deferred:
                return name, DEFERRED
            self._first.popleft()  # sent, cancelled or held since
        return None

    def asked_first(self) -> list[str]:
        """The names `queue send-now` put first that still wait, in that order."""
        return [n for n in self._first if n in self.new or n in self.deferred]

    def first(self, now: float) -> tuple[str, State] | None:
        front = self._front()
        if front is not None:
            return front
        name = self.deferred.first_due(now)
        if name is not None:
            return name, DEFERRED
        name = self.new.first()
        return (name, NEW) if name is not None else None

    def is_first(self, name: str, src: State, now: float) -> bool:
        """Whether `name` is still next (a retry: still due, not rescheduled)."""
        front = self._front()
        if front is not None:
            return front == (name, src)
        if src == NEW:
            return self.new.first() == name
        return self.deferred.get(name) <= now

    def discard(self, name: str, src: State) -> None:
        if src == NEW:
            self.new.discard(name)
        else:
            self.deferred.discard(name)

    def all_due_now(self) -> None:
        """`flush`: every deferred message is due now."""
        for name in self.deferred.names():
            self.deferred.set(name, 0.0)
