"""The forecast: when each waiting message will go, and what holds sending back now.

It runs the sending thread's own decisions forward on a copy of the ledger:
the same pick (`queue send-now` first, then lane by lane, urgent to bulk:
a due retry first, else the oldest new message, chosen when the previous
send went; a retry of a higher lane coming due meanwhile goes first; mail
for later joins the back of its own lane when its time comes), the same
`next_send_time()` (delay, the rate ceiling, opening hours, days, the cap
and its limit window, DST included, the urgent reserve and
`urgent_any_time`), the account pause, and each forecast send counted in
the copy as the real one would be. So the forecast is what the daemon will
do if every send is accepted and nothing new arrives; later arrivals of
the same or a lower lane queue behind and never move an earlier message's
time (urgent mail arriving later goes ahead of normal and bulk mail, as it
should).

`blocked()` says what stops sending at an instant and when that ends; the
sender logs its transitions and `status` shows it. Pure: every call takes
`now` and data; the caller's ledger is never changed.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo

from exactmaild.core.hours import Weekday, Window
from exactmaild.core.lanes import LANES, Lane, kept_back
from exactmaild.core.limits import Ledger
from exactmaild.core.picks import Picks
from exactmaild.core.picks import Waiting as Waiting  # callers import it from here
from exactmaild.core.schedule import ceiling_floor, is_open, next_open, next_send_time

Blocker = Literal["window", "limit", "paused", "storage", "provider_quota"]
BLOCKERS: tuple[Blocker, ...] = ("window", "limit", "paused", "storage", "provider_quota")


@dataclass(frozen=True)
class Pacing:
    """The settings that pace sends (`send.*` and `schedule.*` of the config)."""

    delay: float
    immediately: bool
    tz: ZoneInfo
    days: tuple[Weekday, ...]
    window: Window | None
    min_gap: float = 0.0  # the rate ceiling: 60 s / send.max_per_minute
    urgent_reserve: int = 0
    urgent_any_time: bool = False

    def keep(self, lane: Lane) -> int:
        """What a message of `lane` must leave of the allowance."""
        return kept_back(lane, self.urgent_reserve)

    def any_time(self, lane: Lane) -> bool:
        """Whether a message of `lane` may go outside the hours."""
        return self.urgent_any_time and lane == "urgent"

    def due(
        self,
        now: float,
        *,
        last_send: float | None,
        flush: bool,
        ledger: Ledger,
        units: int,
        lane: Lane = "normal",
    ) -> float:
        """When a send of `units` in `lane` may go (`next_send_time` with these settings)."""
        return next_send_time(
            now,
            last_send=last_send,
            delay=self.delay,
            immediately=self.immediately,
            flush=flush,
            ledger=ledger,
            units=units,
            tz=self.tz,
            days=self.days,
            window=self.window,
            keep=self.keep(lane),
            any_time=self.any_time(lane),
            min_gap=self.min_gap,
        )

    def flushing(self, now: float, due: float, last_send: float | None) -> bool:
        """Whether a flush goes on with a send due at `due`: only the rate
        ceiling may hold it back; a wait for the cap or the hours ends it."""
        return due <= ceiling_floor(now, last_send, self.min_gap)


@dataclass(frozen=True)
class Forecast:
    """`sends`: (queue id, expected send time) in the order they go; math.inf
    for a message that can never go (larger than the whole allowance).
    The other times are None when nothing is waiting or nothing can be told
    (storage trouble, no open day)."""

    sends: tuple[tuple[str, float], ...]
    next_send_at: float | None
    queue_done_at: float | None
    blocked_by: Blocker | None
    resumes_at: float | None
    # Per lane that has mail waiting: (lane, messages, when its last one goes).
    lanes: tuple[tuple[Lane, int, float | None], ...] = ()

    def at(self) -> dict[str, float]:
        return dict(self.sends)

    def going_now(self, now: float, gap: float = 0.0) -> int:
        """How many of the first `sends` go now: at `now`, or, under a rate
        ceiling (`gap`, 60 s / send.max_per_minute), one gap after another
        from it, as a flush sends them."""
        k = 0
        while k < len(self.sends) and self.sends[k][1] <= now + k * gap:
            k += 1
        return k


def blocked(
    now: float,
    *,
    ledger: Ledger,
    units: int | None,
    pacing: Pacing,
    paused_until: float | None = None,
    storage_ok: bool = True,
    quota: bool = False,
    lane: Lane = "normal",
) -> tuple[Blocker | None, float | None]:
    """What stops the next message (of `units`; None: nothing waits) from going
    at `now`, and when that ends (None: not known).

    Storage trouble and the account pause hold everything back (`quota`: the
    pause is for the provider's own quota, "provider_quota"). The window
    and the cap only matter for a message that is waiting; the window is
    named first, since it is what ends later in the usual case (the cap
    reached at 16:00 resets at midnight, the window opens at 08:00). The
    delay between sends and a retry's time are pacing, not a block. `lane`
    (the next message's): the urgent reserve holds normal and bulk mail back
    as the cap does, and `urgent_any_time` lets urgent mail past the window.
    """
    if not storage_ok:
        return "storage", None
    if paused_until is not None and now < paused_until:
        return ("provider_quota" if quota else "paused"), paused_until
    if units is None:
        return None, None
    open_now = pacing.any_time(lane) or is_open(now, pacing.tz, pacing.days, pacing.window)
    if not pacing.immediately and not open_now:
        opens = next_open(now, pacing.tz, pacing.days, pacing.window)
        return "window", None if math.isinf(opens) else opens
    keep = pacing.keep(lane)
    if ledger.fits_at_all(units, keep) and not ledger.can_send(now, units, keep):
        return "limit", ledger.next_allowed(now, units, keep)
    return None, None


def forecast(
    now: float,
    ledger: Ledger,
    queue: Sequence[Waiting],
    pacing: Pacing,
    *,
    last_send: float | None,
    paused_until: float | None = None,
    storage_ok: bool = True,
    flush: bool = False,
    quota: bool = False,
) -> Forecast:
    """The expected send time of every message in `queue`, as the sender will go.

    `queue`: new messages in arrival order, deferred ones with `retry_at`
    (any order: they go by their next try), scheduled ones with
    `scheduled_at` (any order: each joins the back of the new messages at its
    time, ties by name, as `outbox.scheduled` lets them in). `flush`: as right
    after `exactmaild flush`: retries are due now, the pause is lifted, and
    what fits the cap now goes now; the rest is paced (a flush does not
    bring mail for later forward). `quota`: the pause is the provider's quota.
    """
    led = copy.deepcopy(ledger)
    picks = Picks(queue, now, flush)
    if flush:
        paused_until = None
    picks.let_in(now)
    first = picks.peek(now)
    why, until = blocked(
        now,
        ledger=led,
        units=None if first is None else first.units,
        pacing=pacing,
        paused_until=paused_until,
        storage_ok=storage_ok,
        quota=quota,
        lane="normal" if first is None else first.lane,
    )
    if not storage_ok:
        return Forecast((), None, None, why, until)
    t = now if paused_until is None else max(now, paused_until)
    last = last_send
    sends: list[tuple[str, float]] = []
    while picks:
        # Picked as the sender picks: when the previous send went.
        w = picks.take(t)
        if w is None:
            t = picks.next_time()
            continue
        due = pacing.due(t, last_send=last, flush=flush, ledger=led, units=w.units, lane=w.lane)
        # A retry (or mail for later) of a higher lane that comes due
        # meanwhile goes first: the sender drops the message it was holding.
        r = None if math.isinf(due) else picks.higher_due(w, due)  # inf: failed at once
        if r is not None:
            picks.put_back(w)
            t = r
            continue
        sends.append((w.name, due))
        if math.isinf(due):
            continue  # failed by the sender as too large, or no day is open
        # A flush covers what can go at once; the first message that must
        # wait ends it, as it ends the sender's.
        flush = flush and pacing.flushing(t, due, last)
        led.record(due, w.units)
        t = last = due
    finite = [s for _, s in sends if math.isfinite(s)]
    return Forecast(
        tuple(sends),
        min(finite) if finite else None,
        max(finite) if finite else None,
        why,
        until,
        _by_lane(queue, sends),
    )


def _by_lane(
    queue: Sequence[Waiting], sends: list[tuple[str, float]]
) -> tuple[tuple[Lane, int, float | None], ...]:
    lane = {w.name: w.lane for w in queue}
    count = dict.fromkeys(LANES, 0)
    done: dict[Lane, float | None] = dict.fromkeys(LANES)
    for name, t in sends:
        ln = lane[name]
        count[ln] += 1
        if math.isfinite(t):
            done[ln] = max(t, done[ln] or t)
    return tuple((ln, count[ln], done[ln]) for ln in LANES if count[ln])


def transition(
    before: tuple[Blocker | None, float | None], after: tuple[Blocker | None, float | None]
) -> str | None:
    """The log event for a change of what blocks sending, or None (no change).

    Window and cap only: the account pause logs its own events where it
    starts and ends, and storage trouble where it is met.
    """
    was, now = before[0], after[0]
    if was == now:
        return None
    if now == "window":
        return "sending_window_closed"
    if now == "limit":
        return "daily_limit_reached"
    if was == "window":
        return "sending_window_opened"
    if was == "limit":
        return "daily_limit_reset"
    return None
