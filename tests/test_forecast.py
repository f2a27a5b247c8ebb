"""forecast: when each waiting message goes, and what blocks sending now.

The simulation runs the sending thread's step loop (pick lane by lane, ask
`next_send_time`, wait for the due time, a higher lane's retry or the next
message for later, send, read the next one ahead; mail for later joins the
back of its own lane when the sender looks for its next message) on an
injected clock over weeks that cross a DST change and several cap resets,
under a rate ceiling or none, and compares it send by send, to the second,
with the forecast made at the start and again after every send. It also
checks the lanes' promises on every run: the cap holds in every window,
urgent mail is never behind normal or bulk mail (nor normal behind bulk),
and with an urgent reserve of N, N urgent sends stay possible until the
cap. Tables pin the blocked reasons and the flush.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import deque
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from hypothesis import event, given, settings
from hypothesis import strategies as st

from exactmaild.core.forecast import Pacing, Waiting, blocked, forecast, transition
from exactmaild.core.hours import ALL_DAYS, Weekday, Window
from exactmaild.core.lanes import LANES, RANK, Lane
from exactmaild.core.limits import LIMIT_WINDOWS, Ledger, LimitWindow, local_instant, wall_clock
from exactmaild.core.schedule import next_send_time
from tests.helpers import at
from tests.test_limits import DST_CHANGES

LON = ZoneInfo("Europe/London")
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri")
OFFICE = Window(dt.time(8), dt.time(17))


@dataclass(frozen=True)
class Case:
    start: float
    kind: LimitWindow
    allowance: int
    pacing: Pacing
    earlier: tuple[float, ...]  # sends already counted before the start
    queue: tuple[Waiting, ...]
    paused_until: float | None
    dst: float  # the instant of the DST change the run must cross


@st.composite
def cases(draw: st.DrawFn) -> Case:
    zone = draw(st.sampled_from(sorted(DST_CHANGES)))
    tz = ZoneInfo(zone)
    change_day = draw(st.sampled_from(DST_CHANGES[zone]))
    first_day = change_day - dt.timedelta(days=draw(st.integers(1, 3)))
    start = local_instant(first_day, dt.time(0), tz) + draw(st.integers(0, 86399))
    allowance = draw(st.integers(1, 8))
    chosen = draw(st.sets(st.sampled_from(ALL_DAYS), min_size=4))
    days = tuple(d for d in ALL_DAYS if d in chosen)
    window: Window | None = None
    if draw(st.booleans()):
        opens = draw(st.integers(0, 47)) * 30
        length = draw(st.integers(4, 48)) * 30
        closes = (opens + length) % (24 * 60)
        window = Window(dt.time(opens // 60, opens % 60), dt.time(closes // 60, closes % 60))
    pacing = Pacing(
        delay=draw(st.sampled_from([0.0, 1.0, 30.0, 600.0, 3600.0, 7200.0])),
        immediately=draw(st.booleans()),
        tz=tz,
        days=days,
        window=window,
        urgent_reserve=draw(st.integers(0, allowance - 1)),
        urgent_any_time=draw(st.booleans()),
        min_gap=draw(st.sampled_from([0.0, 0.0, 6.0, 60.0])),  # send.max_per_minute
    )
    earlier = tuple(start - s for s in draw(st.lists(st.integers(1, 86400), max_size=allowance)))
    # Enough messages for several limit windows: the run crosses the DST change.
    queue: list[Waiting] = []
    for i in range(draw(st.integers(4 * allowance, 6 * allowance + 10))):
        units = draw(st.sampled_from([1, 1, 1, 2, allowance + 1]))
        retry = scheduled = None
        kind = draw(st.integers(0, 5))
        if kind == 0:
            retry = start + draw(st.integers(-3600, 3 * 86400))
        elif kind == 1:  # mail for later (a time in the past means now)
            scheduled = start + draw(st.integers(-3600, 3 * 86400))
        lane: Lane = draw(st.sampled_from(LANES))
        queue.append(Waiting(f"m{i:03d}", units, retry, lane, scheduled_at=scheduled))
    paused = start + draw(st.integers(1, 7200)) if draw(st.integers(0, 3)) == 0 else None
    dst = local_instant(change_day, dt.time(12), tz)
    kind = draw(st.sampled_from(LIMIT_WINDOWS))
    return Case(start, kind, allowance, pacing, tuple(sorted(earlier)), tuple(queue), paused, dst)


def ledger_of(c: Case) -> Ledger:
    ledger = Ledger(c.kind, c.pacing.tz, c.allowance)
    for ts in c.earlier:
        ledger.record(ts)
    return ledger


def run_sender(c: Case) -> list[tuple[str, float]]:
    """The sending thread's loop (send/sender.py `Sender.step`) on an injected
    clock, every send accepted at once: the sends it makes, in order."""
    p = c.pacing
    ledger = ledger_of(c)
    units = {w.name: w.units for w in c.queue}
    lane = {w.name: w.lane for w in c.queue}
    new = {
        ln: deque(
            w.name
            for w in c.queue
            if w.retry_at is None and w.scheduled_at is None and w.lane == ln
        )
        for ln in LANES
    }
    later = sorted((w.scheduled_at, w.name) for w in c.queue if w.scheduled_at is not None)
    retry = {w.name: w.retry_at for w in c.queue if w.retry_at is not None}
    last_send = max(c.earlier, default=None)
    clock = c.start
    ready: str | None = None
    sends: list[tuple[str, float]] = []

    def first(now: float, lanes: tuple[Lane, ...] = LANES) -> str | None:
        for ln in lanes:
            due = [(t, n) for n, t in retry.items() if t <= now and lane[n] == ln]
            if due:
                return min(due)[1]
            if new[ln]:
                return new[ln][0]
        return None

    def let_in(now: float) -> None:  # Later.release_due(): to the back of its lane
        while later and later[0][0] <= now:
            name = later.pop(0)[1]
            new[lane[name]].append(name)

    def still_next(name: str, now: float) -> bool:
        # Mail of a higher lane that arrived or came due meanwhile goes first.
        let_in(now)
        if first(now, LANES[: RANK[lane[name]]]) is not None:
            return False
        q = new[lane[name]]
        return (q[0] == name) if name in q else retry.get(name, math.inf) <= now

    def look(now: float) -> str | None:
        """Outbox.next_due(): what came due in later/ joins new/, then the pick."""
        let_in(now)
        return first(now)

    def wake() -> float:  # Outbox.next_retry_time(): a retry or mail for later
        return min([*retry.values(), *(t for t, _ in later)], default=math.inf)

    for _ in range(100_000):
        if not (any(new.values()) or retry or later):
            return sends
        if c.paused_until is not None and clock < c.paused_until:
            clock = c.paused_until
            continue
        job = ready if ready is not None and still_next(ready, clock) else look(clock)
        ready = None
        if job is None:
            clock = wake()
            continue
        due = next_send_time(
            clock,
            last_send=last_send,
            delay=p.delay,
            immediately=p.immediately,
            flush=False,
            ledger=ledger,
            units=units[job],
            tz=p.tz,
            days=p.days,
            window=p.window,
            keep=p.keep(lane[job]),
            any_time=p.any_time(lane[job]),
            min_gap=p.min_gap,
        )
        if math.isinf(due):
            sends.append((job, due))  # failed as too large: never sent
        elif due > clock:
            ready = job
            # It wakes for a retry of a higher lane or for mail for later
            # (which may be of a higher lane): either may go first.
            higher = LANES[: RANK[lane[job]]]
            nxt = min((t for n, t in retry.items() if lane[n] in higher), default=math.inf)
            nxt = min([nxt, *(t for t, _ in later)])
            clock = due if nxt <= clock else min(due, nxt)
            continue
        else:
            assert ledger.can_send(clock, units[job], p.keep(lane[job]))
            ledger.record(clock, units[job])
            sends.append((job, clock))
            last_send = clock
        if job in new[lane[job]]:
            new[lane[job]].remove(job)
        retry.pop(job, None)
        ready = look(clock)  # read ahead while the server reads this one
    raise AssertionError("the simulated sender did not finish")


@settings(max_examples=300, deadline=None)
@given(c=cases())
def test_forecast_agrees_with_the_sends_send_by_send(c: Case) -> None:
    sends = run_sender(c)
    f = forecast(
        c.start,
        ledger_of(c),
        c.queue,
        c.pacing,
        last_send=max(c.earlier, default=None),
        paused_until=c.paused_until,
    )
    # The forecast made at the start, send by send, to the second (exactly, in fact).
    assert list(f.sends) == sends
    finite = [t for _, t in sends if math.isfinite(t)]
    assert f.queue_done_at == (max(finite) if finite else None)
    assert f.next_send_at == (min(finite) if finite else None)
    # ... and made again after each send, from what the sender then knows.
    ledger = ledger_of(c)
    done: set[str] = set()
    last = max(c.earlier, default=None)
    for k, (name, t) in enumerate(sends):
        done.add(name)
        if math.isinf(t):
            continue
        ledger.record(t, next(w.units for w in c.queue if w.name == name))
        last = t
        rest = [w for w in c.queue if w.name not in done]
        again = forecast(t, ledger, rest, c.pacing, last_send=last, paused_until=c.paused_until)
        later = [s for s in sends[k + 1 :]]
        assert list(again.sends) == later, k
    if finite and finite[0] < c.dst < finite[-1]:
        event("crossed the DST change")
    days = {wall_clock(t, c.pacing.tz).date() for t in finite}
    if len(days) > 1:
        event("the cap reset mid-queue")


@settings(max_examples=300, deadline=None)
@given(c=cases())
def test_lanes_keep_their_promises(c: Case) -> None:
    sends = run_sender(c)
    by_name = {w.name: w for w in c.queue}
    n = c.pacing.urgent_reserve
    ledger, urgent = ledger_of(c), Ledger(c.kind, c.pacing.tz, c.allowance)
    for k, (name, t) in enumerate(sends):
        if math.isinf(t):
            continue
        w = by_name[name]
        ledger.record(t, w.units)
        if w.lane == "urgent":
            urgent.record(t, w.units)
        # The cap holds in every window; normal and bulk leave the reserve.
        assert ledger.used(t) <= c.allowance
        if w.lane != "urgent":
            assert ledger.used(t) <= c.allowance - n
        # Nothing of a higher lane that could go was behind this one.
        later = {m for m, _ in sends[k + 1 :]}
        for v in c.queue:
            # A retry once its time came; mail for later once it was let in.
            ready = (v.retry_at is None or v.retry_at <= t) and (
                v.scheduled_at is None or v.scheduled_at <= t
            )
            if v.name in later and ready and RANK[v.lane] < RANK[w.lane]:
                raise AssertionError(f"{v.lane} {v.name} went after {w.lane} {name}")
        # N urgent sends stay possible until the cap: what normal and bulk
        # used leaves at least N (less the urgent sends made) in the window,
        # unless sends from before the run (made under no reserve) used it.
        if ledger_of(c).used(t) == 0:
            assert ledger.remaining(t) >= n - urgent.used(t)
            event("urgent reserve checked")
    if n and any(w.lane == "urgent" for w in c.queue):
        event("a reserve with urgent mail")


def test_forecast_crosses_dst_and_a_cap_reset() -> None:
    """A fixed case: 2 a day on weekdays 08:00-17:00, an hour apart, over the
    night the clocks go back, with a deferred message coming due in between."""
    pacing = Pacing(3600.0, False, LON, WEEKDAYS, OFFICE)
    ledger = Ledger("calendar_day", LON, 2)
    ledger.record(at(LON, "2026-10-23 09:00"))
    now = at(LON, "2026-10-23 15:30")  # Friday, one of two left today
    queue = [
        Waiting("a"),
        Waiting("b"),
        Waiting("c", retry_at=at(LON, "2026-10-24 10:00")),
        Waiting("d"),
    ]
    f = forecast(now, ledger, queue, pacing, last_send=at(LON, "2026-10-23 09:00"))
    assert f.sends == (
        ("a", now),
        ("b", at(LON, "2026-10-26 08:00")),  # Monday, GMT now: cap and weekend
        ("c", at(LON, "2026-10-26 09:00")),  # due since Saturday, picked after b
        ("d", at(LON, "2026-10-27 08:00")),  # the cap again
    )
    assert f.blocked_by is None and f.next_send_at == now
    assert f.queue_done_at == at(LON, "2026-10-27 08:00")
    assert ledger.used(now) == 1  # the caller's ledger is untouched


def test_blocked_by_and_resumes_at() -> None:
    pacing = Pacing(60.0, False, LON, WEEKDAYS, OFFICE)
    full = Ledger("calendar_day", LON, 1)
    full.record(at(LON, "2026-03-24 09:00"))
    empty = Ledger("calendar_day", LON, 1)
    tue_21 = at(LON, "2026-03-24 21:00")
    tue_10 = at(LON, "2026-03-24 10:00")
    wed_8 = at(LON, "2026-03-25 08:00")
    wed_0 = at(LON, "2026-03-25 00:00")
    assert blocked(tue_21, ledger=empty, units=1, pacing=pacing) == ("window", wed_8)
    assert blocked(tue_21, ledger=empty, units=None, pacing=pacing) == (None, None)
    assert blocked(tue_10, ledger=full, units=1, pacing=pacing) == ("limit", wed_0)
    assert blocked(tue_10, ledger=empty, units=1, pacing=pacing) == (None, None)
    assert blocked(tue_10, ledger=empty, units=1, pacing=pacing, paused_until=tue_10 + 60) == (
        "paused",
        tue_10 + 60,
    )
    assert blocked(tue_10, ledger=empty, units=None, pacing=pacing, storage_ok=False) == (
        "storage",
        None,
    )
    # The cap reached and the window closed: the window is what opens later.
    assert blocked(tue_21, ledger=full, units=1, pacing=pacing)[0] == "window"
    # A forecast at the cap: the next send at the next opening, not at midnight.
    f = forecast(tue_10, full, [Waiting("a")], pacing, last_send=None)
    assert (f.blocked_by, f.resumes_at, f.next_send_at) == ("limit", wed_0, wed_8)


def test_flush_sends_what_fits_now_and_paces_the_rest() -> None:
    pacing = Pacing(10.0, False, LON, WEEKDAYS, OFFICE)
    ledger = Ledger("calendar_day", LON, 3)
    now = at(LON, "2026-03-24 21:00")  # window closed
    queue = [Waiting(f"m{i}") for i in range(5)]
    f = forecast(now, ledger, queue, pacing, last_send=now - 1, flush=True)
    times = [t for _, t in f.sends]
    assert times[:3] == [now, now, now]
    # At the cap the flush is over: no firing at midnight, the next opening, paced.
    assert times[3:] == [at(LON, "2026-03-25 08:00"), at(LON, "2026-03-25 08:00:10")]


def test_storage_trouble_forecasts_nothing() -> None:
    pacing = Pacing(10.0, True, LON, WEEKDAYS, None)
    f = forecast(0.0, Ledger("calendar_day", LON, 3), [Waiting("a")], pacing,
                 last_send=None, storage_ok=False)  # fmt: skip
    assert (f.blocked_by, f.next_send_at, f.queue_done_at, f.sends) == ("storage", None, None, ())


def test_transitions_are_logged_once_each() -> None:
    assert transition((None, None), ("window", 1.0)) == "sending_window_closed"
    assert transition(("window", 1.0), ("window", 1.0)) is None
    assert transition(("window", 1.0), (None, None)) == "sending_window_opened"
    assert transition((None, None), ("limit", 1.0)) == "daily_limit_reached"
    assert transition(("limit", 1.0), (None, None)) == "daily_limit_reset"
    assert transition(("limit", 1.0), ("window", 2.0)) == "sending_window_closed"
    assert transition((None, None), ("paused", 2.0)) is None
