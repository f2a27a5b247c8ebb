"""What holds sending back and when the queue goes: the sender's view of the forecast.

The sending thread reports, at each step, what the next message waits for;
`Blocking` asks the pure core (`core.forecast.blocked`, `transition`) what
that means and logs the window closing and opening and the cap reached and
reset while mail waits: one line per change, never one per wake-up.
`Forecaster` adds the forecast's answers to the levels the metrics,
STATUS= and `status` read.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Sequence

from exactmaild.config.model import Config
from exactmaild.core.forecast import (
    Blocker,
    Forecast,
    Pacing,
    Waiting,
    blocked,
    forecast,
    transition,
)
from exactmaild.core.lanes import LANES, Lane
from exactmaild.core.limits import Ledger
from exactmaild.core.log import Log
from exactmaild.outbox import Snapshot


def pacing_of(cfg: Config, ledger: Ledger) -> Pacing:
    """The pacing settings of `cfg`, in the ledger's timezone."""
    send, sched = cfg.send, cfg.schedule
    return Pacing(
        send.delay,
        send.immediately,
        ledger.tz,
        sched.days,
        sched.window,
        send.min_gap,
        urgent_reserve=send.urgent_reserve,
        urgent_any_time=send.urgent_any_time,
    )


class Forecaster:
    """The forecast for the levels, worked out again only when what it rests
    on changed: a queue of 100,000 takes seconds, and the levels are read
    every few seconds (metrics, STATUS=). What blocks sending is asked afresh
    each time (the window closes by itself); the times are kept until the
    queue, the ledger, the pacing or the pause change, or the next send is due.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # read by the metrics thread and the main loop
        self._key: object = None
        self._made: Forecast | None = None
        self._first: Waiting | None = None

    def __call__(
        self,
        levels: Snapshot,
        now: float,
        ledger: Ledger,
        queue: Sequence[Waiting],
        pacing: Pacing,
        last_send: float | None,
        paused_until: float | None,
        *,
        quota: bool = False,
    ) -> Snapshot:
        """`levels` with the forecast of `queue` from `now` added (`quota`: the
        pause is for the provider's own quota)."""
        with self._lock:
            ok = levels.storage_ok
            key = (tuple(queue), len(ledger), ledger.used(now), pacing, last_send, paused_until,
                   ok, quota)  # fmt: skip
            f = self._made
            stale = f is None or (f.next_send_at is not None and now > f.next_send_at)
            if key != self._key or stale:
                f = forecast(now, ledger, queue, pacing, last_send=last_send,
                             paused_until=paused_until, storage_ok=ok, quota=quota)  # fmt: skip
                by_name = {w.name: w for w in queue}
                self._key, self._made = key, f
                self._first = by_name[f.sends[0][0]] if f.sends else None
            assert f is not None
            first = self._first
            why, until = blocked(now, ledger=ledger, units=None if first is None else first.units,
                                 pacing=pacing,
                                 paused_until=paused_until, storage_ok=ok, quota=quota,
                                 lane=first.lane if first else "normal")  # fmt: skip
            return dataclasses.replace(
                levels,
                blocked_by=why,
                resumes_at=until,
                next_send_at=f.next_send_at,
                queue_done_at=f.queue_done_at,
            )

    def blocked_only(
        self,
        levels: Snapshot,
        now: float,
        ledger: Ledger,
        pacing: Pacing,
        paused_until: float | None,
        *,
        quota: bool = False,
    ) -> Snapshot:
        """`levels` with what blocks sending now, but no forecast times (a
        backlog too long to forecast at every look: `exactmaild status` does)."""
        units = 1 if sum(levels.queue.values()) else None
        # The highest lane that has mail waiting goes first (send-now aside).
        waiting = {ln for (_, ln), n in levels.lanes.items() if n}
        lane: Lane = next((ln for ln in LANES if ln in waiting), "normal")
        why, until = blocked(now, ledger=ledger, units=units, pacing=pacing,
                             paused_until=paused_until, storage_ok=levels.storage_ok,
                             quota=quota, lane=lane)  # fmt: skip
        with self._lock:
            self._key, self._made = None, None
        return dataclasses.replace(levels, blocked_by=why, resumes_at=until)


class Blocking:
    def __init__(self, log: Log) -> None:
        self.log = log
        self.state: tuple[Blocker | None, float | None] = (None, None)

    def clear(self) -> None:
        """Nothing waits, so nothing is held back (and nothing to log)."""
        self.state = (None, None)

    def note(
        self,
        now: float,
        units: int | None,
        pacing: Pacing,
        ledger: Ledger,
        queued: int,
        lane: Lane = "normal",
    ) -> None:
        """`units`: the next message's (of `lane`), if it must wait; None if it goes now."""
        after = blocked(now, ledger=ledger, units=units, pacing=pacing, lane=lane)
        event = transition(self.state, after)
        self.state = after
        if event is not None:
            until = after[1]
            self.log.info(
                event,
                queued=queued,
                until=None
                if until is None
                else dt.datetime.fromtimestamp(until, pacing.tz).isoformat(),
            )
