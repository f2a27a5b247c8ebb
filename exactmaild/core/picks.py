"""What waits to be sent, and the sender's pick order, replayed for the forecast.

`Waiting` is one waiting message as the forecast (`core.forecast`) takes it;
`Picks` orders them as the sender's queue index does: those `queue
send-now` put first, then lane by lane (urgent, normal, bulk) a lane's due
retries by their time and its new messages in arrival order. Mail for later
joins the back of its own lane's new messages when its time comes (ties by
name), as `outbox.later` lets it in. Pure: no I/O, every call takes the time.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from exactmaild.core.lanes import LANES, RANK, Lane


@dataclass(frozen=True, slots=True)
class Waiting:
    """A message waiting to be sent: its queue id, what it counts against the
    limit, for a deferred one the time of its next try, for mail for later
    (`later/`) the time it joins the queue, its lane, and whether `queue
    send-now` put it first."""

    name: str
    units: int = 1
    retry_at: float | None = None
    lane: Lane = "normal"
    first: bool = False
    scheduled_at: float | None = None


class Picks:
    """What waits, in the order the sender takes it."""

    def __init__(self, queue: Sequence[Waiting], now: float, flush: bool) -> None:
        self.front: deque[Waiting] = deque(w for w in queue if w.first)
        self.new: dict[Lane, deque[Waiting]] = {lane: deque() for lane in LANES}
        self.retries: dict[Lane, list[tuple[float, int, Waiting]]] = {lane: [] for lane in LANES}
        # Mail for later, per lane: a higher lane's coming due can displace a held message.
        self.later: dict[Lane, list[tuple[float, str, Waiting]]] = {lane: [] for lane in LANES}
        self._retry_key: dict[int, tuple[float, int]] = {}
        for i, w in enumerate(queue):
            if w.first:
                continue
            if w.scheduled_at is not None:
                heapq.heappush(self.later[w.lane], (w.scheduled_at, w.name, w))
            elif w.retry_at is None:
                self.new[w.lane].append(w)
            else:
                at = min(w.retry_at, now) if flush else w.retry_at
                heapq.heappush(self.retries[w.lane], (at, i, w))

    def __bool__(self) -> bool:
        return (
            bool(self.front)
            or any(self.new.values())
            or any(self.retries.values())
            or any(self.later.values())
        )

    def let_in(self, t: float) -> None:
        """Mail for later whose time has come joins the back of its lane."""
        for lane, heap in self.later.items():
            while heap and heap[0][0] <= t:
                self.new[lane].append(heapq.heappop(heap)[2])

    def _choose(self, t: float, *, pop: bool) -> Waiting | None:
        if self.front:
            return self.front.popleft() if pop else self.front[0]
        for lane in LANES:
            heap = self.retries[lane]
            if heap and heap[0][0] <= t:
                if not pop:
                    return heap[0][2]
                at, i, w = heapq.heappop(heap)
                self._retry_key[id(w)] = (at, i)
                return w
            if self.new[lane]:
                return self.new[lane].popleft() if pop else self.new[lane][0]
        return None

    def take(self, t: float) -> Waiting | None:
        """The message the sender picks at `t`; None: only later retries or
        mail for later wait."""
        self.let_in(t)
        return self._choose(t, pop=True)

    def peek(self, now: float) -> Waiting | None:
        """The message the sender would pick at `now` (or wait for, if only
        retries or mail for later wait: whichever comes due first)."""
        w = self._choose(now, pop=False)
        if w is not None:
            return w
        heads = [(h[0][0], 0, h[0][2]) for h in self.retries.values() if h]
        heads += [(h[0][0], 1, h[0][2]) for h in self.later.values() if h]
        return min(heads, key=lambda x: x[:2])[2] if heads else None

    def next_time(self) -> float:
        """When the next retry or message for later comes due."""
        heads = [h[0][0] for h in self.retries.values() if h]
        heads += [h[0][0] for h in self.later.values() if h]
        return min(heads, default=math.inf)

    def higher_due(self, w: Waiting, due: float) -> float | None:
        """When a retry or message for later of a lane above `w`'s comes due
        before `due`, if one does."""
        if w.first:
            return None
        above = [lane for lane in LANES if RANK[lane] < RANK[w.lane]]
        times = [self.retries[ln][0][0] for ln in above if self.retries[ln]]
        times += [self.later[ln][0][0] for ln in above if self.later[ln]]
        soonest = min(times, default=math.inf)
        return soonest if soonest <= due else None

    def put_back(self, w: Waiting) -> None:
        if w.retry_at is None:
            self.new[w.lane].appendleft(w)
        else:
            at, i = self._retry_key.pop(id(w))
            heapq.heappush(self.retries[w.lane], (at, i, w))


__all__ = ["Picks", "Waiting"]
