"""The levels of the queue and the allowance, as one frozen `Snapshot`.

The sender takes it under its lock; the metrics exposition, the systemd
STATUS= line and `exactmaild status` all read the same figures from it, so
they never disagree. `waiting()` lists the queue in send order for the
forecast (`core.forecast`), whose answers the sender adds to the Snapshot.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field

from exactmaild.core.forecast import Blocker, Waiting
from exactmaild.core.limits import Ledger
from exactmaild.core.states import DEFERRED, LATER, NEW, PUBLIC_NAME, REPORTED, State
from exactmaild.outbox.index import QueueIndex
from exactmaild.outbox.spool import Spool
from exactmaild.store.state import StateStore


@dataclass(frozen=True)
class Snapshot:
    """The levels monitoring reads, as of `now`."""

    sent_in_window: int
    sent_elsewhere_in_window: int
    daily_limit: int
    remaining: int
    window_reset_seconds: float
    queue: dict[str, int] = field(default_factory=dict)  # state -> count
    # Waiting messages by (state, lane): queued and deferred, urgent/normal/bulk.
    lanes: dict[tuple[str, str], int] = field(default_factory=dict)
    oldest_queued_age_seconds: float = 0.0
    last_send_timestamp: float | None = None
    last_receive_check_timestamp: float | None = None
    paused: bool = False
    storage_ok: bool = True
    # The forecast (core.forecast): None when nothing waits or it cannot be told.
    blocked_by: Blocker | None = None
    resumes_at: float | None = None
    next_send_at: float | None = None
    queue_done_at: float | None = None
    # The queue in send order, for the forecast (`waiting()`).
    waiting: tuple[Waiting, ...] = ()


# What a waiting message counts against the limit, by queue id and state.
Weigh = Callable[[str, State], int]


def waiting(index: QueueIndex, weigh: Weigh) -> list[Waiting]:
    """The queue as the sender will take it: new messages lane by lane, oldest
    first, deferred ones with their next try and scheduled ones with their
    time, each with its lane; `weigh` gives each one's units."""
    # `queue send-now` puts messages first whatever their state and lane.
    first = index.asked_first()
    queue = []
    for n in first:
        src: State = NEW if n in index.new else DEFERRED
        queue.append(Waiting(n, weigh(n, src), lane=index.lane(n, src), first=True))
    skip = set(first)
    for lane, fifo in index.new.lanes.items():
        queue += [Waiting(n, weigh(n, NEW), lane=lane) for n in fifo.names() if n not in skip]
    for lane, retries in index.deferred.lanes.items():
        queue += [
            Waiting(n, weigh(n, DEFERRED), retries.get(n), lane=lane)
            for n in retries.names()
            if n not in skip
        ]
    later = index.later
    queue += [
        Waiting(n, weigh(n, LATER), scheduled_at=later.get(n), lane=later.lane(n))
        for n in later.names()
    ]
    return queue


def measure(
    index: QueueIndex,
    spool: Spool,
    store: StateStore,
    ledger: Ledger,
    now: float,
    *,
    daily_limit: int,
    last_send: float | None,
    paused: bool,
    storage_ok: bool,
    weigh: Weigh | None = None,
) -> Snapshot:
    """The levels at `now`: the allowance as the ledger has it, and the queue
    (with `weigh`, also each waiting message in send order)."""
    oldest = 0.0
    head = index.new.first()
    if head is not None:
        with contextlib.suppress(OSError):
            oldest = now - spool.mtime(NEW, head)
    if index.deferred:
        with contextlib.suppress(OSError, sqlite3.Error):
            for name in index.deferred.names()[:100]:
                info = store.message(name)
                if info and info.first_try:
                    oldest = max(oldest, now - info.first_try)
    queue = {PUBLIC_NAME[NEW]: len(index.new), PUBLIC_NAME[DEFERRED]: len(index.deferred)}
    for state in REPORTED:
        if state not in (NEW, DEFERRED):
            with contextlib.suppress(OSError):
                queue[PUBLIC_NAME[state]] = spool.count(state)
    used = ledger.used(now)
    ext = ledger.external_used(now)
    return Snapshot(
        sent_in_window=used - ext,
        sent_elsewhere_in_window=ext,
        daily_limit=daily_limit,
        remaining=ledger.remaining(now),
        window_reset_seconds=ledger.reset_at(now) - now,
        queue=queue,
        lanes={(PUBLIC_NAME[st], lane): n for (st, lane), n in index.counts().items()},
        oldest_queued_age_seconds=max(0.0, oldest),
        last_send_timestamp=last_send,
        paused=paused,
        storage_ok=storage_ok,
        waiting=() if weigh is None else tuple(waiting(index, weigh)),
    )
