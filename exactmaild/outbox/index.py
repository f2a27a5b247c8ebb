"""The queue in memory: what is sent next, found without rescanning the spool.

Two orders, one per waiting state, each kept per priority lane
(`core.lanes`: urgent, normal, bulk), and the operator's word above all:

- `new/` is first in, first out within a lane: built from one scan at
  start-up (oldest first), then fed by inotify as producers rename files in;
- `deferred/` is a heap by the time of the next try, so the earliest retry
  is found in O(log n): a scan of every deferred message per send would make
  a backlog of retries (a server down for a day) quadratic;
- the lanes go in order: a lane's due retries, then its new mail, before
  anything of the next lane. A message's lane is read once, when it is
  taken in (`lane_of`, from the first few KiB of its file), never at a pick;
- `queue send-now` puts a queued or deferred message before all of them
  (`put_first`), however long until its retry; pacing and the cap still
  decide when it goes.

The index only orders names; the files and their state changes belong to
the Outbox and the Spool.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable

from exactmaild.core.lanes import LANES, RANK, Lane
from exactmaild.core.states import DEFERRED, NEW, State
from exactmaild.outbox.retries import RetryIndex
from exactmaild.outbox.scheduled import ScheduledIndex

# Reads the lane of a queued message (name, state); the Outbox gives the Spool's.
LaneOf = Callable[[str, State], Lane]


def _all_normal(name: str, state: State) -> Lane:
    return "normal"


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


class LaneFifo:
    """`new/` as one `Fifo` per lane, behind the Fifo's own methods; `names()`
    and `first()` in send order (urgent lane first)."""

    def __init__(self, lane_of: LaneOf) -> None:
        self.lanes: dict[Lane, Fifo] = {lane: Fifo() for lane in LANES}
        self._lane_of = lane_of

    def __len__(self) -> int:
        return sum(len(f) for f in self.lanes.values())

    def __contains__(self, name: object) -> bool:
        return self.lane(name) is not None

    def lane(self, name: object) -> Lane | None:
        for lane, fifo in self.lanes.items():
            if name in fifo:
                return lane
        return None

    def reset(self, names: list[str]) -> None:
        """The whole queue again (start-up, an overflowed inotify queue):
        names already known keep their lane unread."""
        by_lane: dict[Lane, list[str]] = {lane: [] for lane in LANES}
        for name in names:
            by_lane[self.lane(name) or self._lane_of(name, NEW)].append(name)
        for lane, fifo in self.lanes.items():
            fifo.reset(by_lane[lane])

    def append(self, name: str, lane: Lane | None = None) -> bool:
        """Add at the back of its lane (`lane`: known already, else read);
        False if it is queued already."""
        if name in self:
            return False
        return self.lanes[lane or self._lane_of(name, NEW)].append(name)

    def push_front(self, name: str) -> None:
        if name not in self:
            self.lanes[self._lane_of(name, NEW)].push_front(name)

    def first(self) -> str | None:
        for fifo in self.lanes.values():
            if (name := fifo.first()) is not None:
                return name
        return None

    def names(self) -> list[str]:
        """In send order: lane by lane, oldest first within each."""
        return [n for fifo in self.lanes.values() for n in fifo.names()]

    def discard(self, name: str) -> None:
        for fifo in self.lanes.values():
            fifo.discard(name)

    def retain(self, names: set[str]) -> None:
        for fifo in self.lanes.values():
            fifo.retain(names)


class LaneRetries:
    """`deferred/` as one `RetryIndex` per lane, behind the RetryIndex's own methods."""

    def __init__(self, lane_of: LaneOf) -> None:
        self.lanes: dict[Lane, RetryIndex] = {lane: RetryIndex() for lane in LANES}
        self._lane_of = lane_of

    def __len__(self) -> int:
        return sum(len(r) for r in self.lanes.values())

    def __contains__(self, name: object) -> bool:
        return self.lane(name) is not None

    def lane(self, name: object) -> Lane | None:
        for lane, retries in self.lanes.items():
            if name in retries:
                return lane
        return None

    def names(self) -> list[str]:
        return [n for r in self.lanes.values() for n in r.names()]

    def get(self, name: str) -> float:
        lane = self.lane(name)
        return math.inf if lane is None else self.lanes[lane].get(name)

    def set(self, name: str, when: float) -> None:
        """A new time for `name` (it keeps its lane if it has one)."""
        self.lanes[self.lane(name) or self._lane_of(name, DEFERRED)].set(name, when)

    def discard(self, name: str) -> None:
        for r in self.lanes.values():
            r.discard(name)

    def next_time(self, above: Lane | None = None) -> float:
        """The next try of any lane, or (`above`) of the lanes sent before that one."""
        lanes = LANES if above is None else LANES[: RANK[above]]
        return min((self.lanes[lane].next_time() for lane in lanes), default=math.inf)

    def first_due(self, now: float) -> str | None:
        """A due retry of the highest lane that has one."""
        for r in self.lanes.values():
            if (name := r.first_due(now)) is not None:
                return name
        return None


class QueueIndex:
    """Both orders together: which message is next, and whether it still is.

    Lane by lane, urgent first: a lane's due retries go before its new mail
    (they waited longest); within each, the order above.
    """

    def __init__(self, lane_of: LaneOf = _all_normal) -> None:
        self.new = LaneFifo(lane_of)
        self.deferred = LaneRetries(lane_of)
        # Mail for later: not in the queue until its time (`outbox.later`),
        # then at the back of its own lane.
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

    def lane(self, name: str, src: State) -> Lane:
        """The lane of a waiting message ("normal" if it is not waiting)."""
        return (self.new.lane(name) if src == NEW else self.deferred.lane(name)) or "normal"

    def counts(self) -> dict[tuple[State, Lane], int]:
        """Waiting messages by state and lane."""
        out: dict[tuple[State, Lane], int] = {}
        for lane in LANES:
            out[NEW, lane] = len(self.new.lanes[lane])
            out[DEFERRED, lane] = len(self.deferred.lanes[lane])
        return out

    def first(self, now: float) -> tuple[str, State] | None:
        front = self._front()
        if front is not None:
            return front
        return self._first_from(LANES, now)

    def _first_from(self, lanes: Iterable[Lane], now: float) -> tuple[str, State] | None:
        for lane in lanes:
            name = self.deferred.lanes[lane].first_due(now)
            if name is not None:
                return name, DEFERRED
            name = self.new.lanes[lane].first()
            if name is not None:
                return name, NEW
        return None

    def is_first(self, name: str, src: State, now: float) -> bool:
        """Whether `name` is still next (a retry: still due, not rescheduled;
        nothing of a higher lane arrived or came due since it was picked)."""
        front = self._front()
        if front is not None:
            return front == (name, src)
        lane = self.lane(name, src)
        if self._first_from(LANES[: RANK[lane]], now) is not None:
            return False
        if src == NEW:
            return self.new.lanes[lane].first() == name
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
