"""limits: the hard cap. Tables for the window arithmetic and the Ledger, and a
simulation of weeks of paced sending across DST that must never break the cap
and never starve the queue.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import math
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from exactmaild.config.model import ALL_DAYS, Send, Weekday, Window
from exactmaild.core.limits import (
    DAY,
    LIMIT_WINDOWS,
    Ledger,
    LimitWindow,
    local_instant,
    wall_clock,
    window_bounds,
)
from exactmaild.core.schedule import is_open, next_send_time
from tests.helpers import at, utc

LON = ZoneInfo("Europe/London")
NYC = ZoneInfo("America/New_York")
SCL = ZoneInfo("America/Santiago")
SAO = ZoneInfo("America/Sao_Paulo")
INF = math.inf


# --------------------------------------------------------------------------
# local_instant and window_bounds


@pytest.mark.parametrize(
    ("tz", "day", "time", "last", "expected"),
    [
        (LON, "2026-03-27", "08:00", False, utc("2026-03-27 08:00")),
        (LON, "2026-03-30", "08:00", False, utc("2026-03-30 07:00")),
        # In the spring-forward gap: the end of the gap.
        (LON, "2026-03-29", "01:00", False, utc("2026-03-29 01:00")),
        (LON, "2026-03-29", "01:59", False, utc("2026-03-29 01:00")),
        (LON, "2026-03-29", "02:00", False, utc("2026-03-29 01:00")),
        (NYC, "2026-03-08", "02:30", False, utc("2026-03-08 07:00")),
        # The repeated hour: first, or last.
        (LON, "2026-10-25", "01:30", False, utc("2026-10-25 00:30")),
        (LON, "2026-10-25", "01:30", True, utc("2026-10-25 01:30")),
        (NYC, "2026-11-01", "01:30", False, utc("2026-11-01 05:30")),
        (NYC, "2026-11-01", "01:30", True, utc("2026-11-01 06:30")),
        # Midnight that does not exist: Santiago, 7 Sep 2025, day starts 01:00 -03.
        (SCL, "2025-09-07", "00:00", False, utc("2025-09-07 04:00")),
    ],
)
def test_local_instant(tz: ZoneInfo, day: str, time: str, last: bool, expected: float) -> None:
    got = local_instant(dt.date.fromisoformat(day), dt.time.fromisoformat(time), tz, last=last)
    assert got == expected


@pytest.mark.parametrize(
    ("tz", "now", "start", "end", "hours"),
    [
        (LON, at(LON, "2026-03-27 12:00"), utc("2026-03-27 00:00"), utc("2026-03-28 00:00"), 24),
        # Spring forward: a 23-hour day.
        (LON, at(LON, "2026-03-29 00:30"), utc("2026-03-29 00:00"), utc("2026-03-29 23:00"), 23),
        (LON, at(LON, "2026-03-29 23:59"), utc("2026-03-29 00:00"), utc("2026-03-29 23:00"), 23),
        # Fall back: a 25-hour day, from either pass of the repeated hour.
        (LON, at(LON, "2026-10-25 01:30"), utc("2026-10-24 23:00"), utc("2026-10-26 00:00"), 25),
        (
            LON,
            at(LON, "2026-10-25 01:30", fold=1),
            utc("2026-10-24 23:00"),
            utc("2026-10-26 00:00"),
            25,
        ),
        (NYC, at(NYC, "2026-03-08 12:00"), utc("2026-03-08 05:00"), utc("2026-03-09 04:00"), 23),
        (NYC, at(NYC, "2026-11-01 12:00"), utc("2026-11-01 04:00"), utc("2026-11-02 05:00"), 25),
        # Midnight inside a DST gap: the day starts at the first valid instant.
        (SCL, at(SCL, "2025-09-07 12:00"), utc("2025-09-07 04:00"), utc("2025-09-08 03:00"), 23),
        (SCL, at(SCL, "2025-09-06 12:00"), utc("2025-09-06 04:00"), utc("2025-09-07 04:00"), 24),
        (SAO, at(SAO, "2018-11-04 12:00"), utc("2018-11-04 03:00"), utc("2018-11-05 02:00"), 23),
        # Sao Paulo fell back at midnight to 23:00 Saturday: a 25-hour Saturday.
        (SAO, at(SAO, "2019-02-16 23:30"), utc("2019-02-16 02:00"), utc("2019-02-17 03:00"), 25),
        # The first and last instants of a day.
        (LON, utc("2026-03-27 00:00"), utc("2026-03-27 00:00"), utc("2026-03-28 00:00"), 24),
        (
            LON,
            utc("2026-03-28 00:00") - 1e-6,
            utc("2026-03-27 00:00"),
            utc("2026-03-28 00:00"),
            24,
        ),
    ],
)
def test_calendar_day_bounds(
    tz: ZoneInfo, now: float, start: float, end: float, hours: int
) -> None:
    assert window_bounds(now, tz, "calendar_day") == (start, end)
    assert end - start == hours * 3600
    assert start <= now < end


def test_rolling_bounds() -> None:
    now = at(LON, "2026-03-29 12:00")
    assert window_bounds(now, LON, "rolling_24h") == (now - 86400, now)


def test_unknown_window_kind() -> None:
    with pytest.raises(ValueError, match="limit window"):
        window_bounds(0.0, LON, "weekly")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit window"):
        Ledger("weekly", LON, 5)  # type: ignore[arg-type]


def test_wall_clock_truncates() -> None:
    just_before = utc("2026-03-27 08:00") - 0.0000004
    assert wall_clock(just_before, LON) == dt.datetime(2026, 3, 27, 7, 59, 59, 999999)


# --------------------------------------------------------------------------
# Ledger: calendar_day


def test_hard_cap_refuses_the_allowance_plus_one_th_send() -> None:
    send = Send(daily_limit=500, reserve=20)
    ledger = Ledger("calendar_day", LON, send.allowance)
    t = at(LON, "2026-03-27 08:00")
    for i in range(480):
        assert ledger.can_send(t + i, 1), i
        ledger.record(t + i, 1)
    assert ledger.used(t + 480) == 480
    assert ledger.remaining(t + 480) == 0
    assert not ledger.can_send(t + 480, 1)
    assert ledger.next_allowed(t + 480) == utc("2026-03-28 00:00")


@pytest.mark.parametrize(
    ("tz", "day", "next_midnight"),
    [
        (LON, "2026-03-29", utc("2026-03-29 23:00")),
        (LON, "2026-10-25", utc("2026-10-26 00:00")),
        (NYC, "2026-03-08", utc("2026-03-09 04:00")),
        (NYC, "2026-11-01", utc("2026-11-02 05:00")),
        (SCL, "2025-09-06", utc("2025-09-07 04:00")),
    ],
)
def test_calendar_cap_resets_at_local_midnight(
    tz: ZoneInfo, day: str, next_midnight: float
) -> None:
    ledger = Ledger("calendar_day", tz, 2)
    ledger.record(at(tz, f"{day} 09:00"))
    ledger.record(at(tz, f"{day} 10:00"))
    now = at(tz, f"{day} 11:00")
    assert not ledger.can_send(now)
    assert ledger.next_allowed(now) == next_midnight
    assert ledger.reset_at(now) == next_midnight
    assert ledger.can_send(next_midnight)
    assert not ledger.can_send(next_midnight - 0.001)
    assert ledger.used(next_midnight) == 0


def test_units_recipients() -> None:
    ledger = Ledger("calendar_day", LON, 10)
    now = at(LON, "2026-03-27 09:00")
    ledger.record(now, 7)
    assert ledger.used(now) == 7
    assert ledger.can_send(now, 3)
    assert not ledger.can_send(now, 4)
    assert ledger.next_allowed(now, 3) == now
    assert ledger.next_allowed(now, 4) == utc("2026-03-28 00:00")
    # Larger than the whole allowance: never, and the caller is told so.
    assert ledger.fits_at_all(10)
    assert not ledger.fits_at_all(11)
    assert not ledger.can_send(now + DAY, 11)
    assert ledger.next_allowed(now, 11) == INF
    with pytest.raises(ValueError, match="unit"):
        ledger.can_send(now, 0)
    with pytest.raises(ValueError, match="unit"):
        ledger.record(now, 0)


def test_forget_undoes_a_reservation() -> None:
    ledger = Ledger("calendar_day", LON, 3)
    t = at(LON, "2026-03-27 09:00")
    for i in range(3):
        ledger.record(t + i)
    assert not ledger.can_send(t + 10)
    ledger.forget(t + 2)
    assert ledger.used(t + 10) == 2
    assert ledger.can_send(t + 10)
    # Forgetting from the middle keeps the totals right.
    ledger.record(t + 5, 1)
    ledger.forget(t)
    assert ledger.used(t + 10) == 2
    assert len(ledger) == 2
    with pytest.raises(ValueError, match="no send"):
        ledger.forget(t)
    with pytest.raises(ValueError, match="no send"):
        ledger.forget(t + 1, 2)  # recorded with 1 unit, not 2


def test_out_of_order_records() -> None:
    ledger = Ledger("calendar_day", LON, 100)
    day = at(LON, "2026-03-27 12:00")
    for ts, units in [(day, 1), (day - DAY, 5), (day + 60, 2), (day - 3600, 3), (day + DAY, 7)]:
        ledger.record(ts, units)
    assert ledger.used(day) == 1 + 2 + 3
    assert ledger.used(day - DAY) == 5
    assert ledger.used(day + DAY) == 7
    ledger.forget(day - 3600, 3)
    assert ledger.used(day) == 3
    assert ledger.used(day + DAY) == 7


def test_prune_keeps_what_still_counts() -> None:
    ledger = Ledger("calendar_day", LON, 100)
    day = at(LON, "2026-03-27 12:00")
    for i in range(10):
        ledger.record(day - 3 * DAY + i * 3600 * 9, 1)  # spread over 3+ days
    before = ledger.used(day)
    ledger.prune(day)
    assert ledger.used(day) == before
    assert all(ts >= utc("2026-03-27 00:00") for ts in ledger._ts)
    assert len(ledger) == before
    ledger.record(day + 1, 1)
    assert ledger.used(day) == before + 1


def test_set_allowance_applies_at_once() -> None:
    ledger = Ledger("calendar_day", LON, 5)
    now = at(LON, "2026-03-27 09:00")
    for i in range(4):
        ledger.record(now + i)
    assert ledger.can_send(now + 10)
    ledger.set_allowance(3)  # a reload lowered the limit below what was sent
    assert ledger.remaining(now + 10) == 0
    assert not ledger.can_send(now + 10)
    assert ledger.next_allowed(now + 10) == utc("2026-03-28 00:00")
    ledger.set_allowance(6)
    assert ledger.remaining(now + 10) == 2
    ledger.set_allowance(0)
    assert not ledger.fits_at_all(1)
    assert ledger.next_allowed(now + 10) == INF
    with pytest.raises(ValueError, match="allowance"):
        ledger.set_allowance(-1)


def test_external_calendar_is_a_replaced_figure() -> None:
    ledger = Ledger("calendar_day", LON, 10)
    now = at(LON, "2026-03-27 09:00")
    ledger.record(now, 2)
    start = window_bounds(now, LON, "calendar_day")[0]
    ledger.set_external(start, 5)
    assert ledger.used(now) == 7
    ledger.set_external(start, 6)  # re-counted: replaces, does not add
    assert ledger.used(now + 60) == 8
    assert (ledger.own_used(now + 60), ledger.external_used(now + 60)) == (2, 6)
    assert ledger.can_send(now + 60, 2)
    assert not ledger.can_send(now + 60, 3)
    assert ledger.next_allowed(now + 60, 3) == utc("2026-03-28 00:00")
    # Yesterday's webmail count does not carry into tomorrow.
    assert ledger.used(utc("2026-03-28 00:00")) == 0
    ledger.prune(utc("2026-03-28 00:00"))
    assert (len(ledger), ledger.used(now)) == (0, 0)  # pruned with its day, webmail too
    with pytest.raises(ValueError, match="external"):
        ledger.set_external(start, -1)


# --------------------------------------------------------------------------
# Ledger: rolling_24h


def test_rolling_ages_out_one_by_one() -> None:
    ledger = Ledger("rolling_24h", LON, 3)
    t0 = at(LON, "2026-03-28 09:00")  # across the spring-forward night
    for i in range(3):
        ledger.record(t0 + 600 * i)
    now = t0 + 1800
    assert not ledger.can_send(now)
    assert ledger.next_allowed(now) == t0 + DAY
    assert ledger.next_allowed(now, 2) == t0 + 600 + DAY
    assert ledger.next_allowed(now, 3) == t0 + 1200 + DAY
    assert ledger.next_allowed(now, 4) == INF
    assert ledger.reset_at(now) == t0 + DAY
    # The window is (now - 24 h, now]: a send exactly 24 h old no longer counts.
    assert ledger.used(t0 + DAY) == 2
    assert ledger.used(t0 + DAY - 0.001) == 3
    assert ledger.can_send(t0 + DAY)
    # Real hours, not wall-clock: 09:00 GMT + 24 h is 10:00 BST.
    assert t0 + DAY == at(LON, "2026-03-29 10:00")
    ledger.prune(t0 + DAY + 1)
    assert len(ledger) == 2
    assert ledger.reset_at(t0 + DAY + 1) == t0 + 600 + DAY
    assert ledger.reset_at(t0 + 3 * DAY) == t0 + 3 * DAY  # nothing counted


def test_rolling_counts_sends_stamped_after_now() -> None:
    # Only after the clock was stepped back; counting them is the safe side.
    ledger = Ledger("rolling_24h", LON, 2)
    now = at(LON, "2026-03-27 09:00")
    ledger.record(now + 3600)
    ledger.record(now + 7200)
    assert ledger.used(now) == 2
    assert ledger.next_allowed(now) == now + 3600 + DAY


def test_rolling_external() -> None:
    ledger = Ledger("rolling_24h", LON, 5)
    count_time = at(LON, "2026-03-27 09:00")
    ledger.record(count_time - 3600, 1)
    ledger.record(count_time - 3000, 1)
    ledger.set_external(count_time - DAY, 3)  # counted (count_time - 24 h, count_time]
    lapses = count_time + DAY
    now = count_time + 120
    assert ledger.used(now) == 5
    # Our sends age out before the webmail figure lapses: they make the room.
    assert ledger.next_allowed(now) == count_time - 3600 + DAY
    assert ledger.next_allowed(now, 2) == count_time - 3000 + DAY
    # Needing 3: ours are not enough while webmail's 3 count; then there is room.
    assert ledger.next_allowed(now, 3) == lapses
    assert ledger.next_allowed(now, 5) == lapses
    assert ledger.used(lapses - 1) == 3
    assert ledger.used(lapses) == 0
    assert ledger.reset_at(now) == count_time - 3600 + DAY


def test_rolling_external_lapse_and_own_age_out_together() -> None:
    ledger = Ledger("rolling_24h", LON, 5)
    count_time = at(LON, "2026-03-27 09:00")
    ledger.set_external(count_time - DAY, 3)
    ledger.record(count_time, 1)
    ledger.record(count_time + 60, 1)
    now = count_time + 120
    assert ledger.used(now) == 5
    assert ledger.next_allowed(now, 1) == count_time + DAY  # ours ages out, webmail lapses
    assert ledger.used(count_time + DAY) == 1
    # All 5 need both of ours gone as well as the webmail figure.
    assert ledger.next_allowed(now, 5) == count_time + 60 + DAY
    assert ledger.can_send(count_time + 60 + DAY, 5)
    assert not ledger.can_send(count_time + 60 + DAY - 0.001, 5)


def test_rolling_external_alone_blocks_until_it_lapses() -> None:
    ledger = Ledger("rolling_24h", LON, 3)
    count_time = at(LON, "2026-03-27 09:00")
    ledger.set_external(count_time - DAY, 3)
    assert ledger.next_allowed(count_time) == count_time + DAY
    assert ledger.reset_at(count_time) == count_time + DAY


def test_many_entries_stay_fast() -> None:
    # Called before every send: must not degrade with thousands of entries.
    for kind in LIMIT_WINDOWS:
        ledger = Ledger(kind, LON, 10**9)
        t = at(LON, "2026-03-27 00:00")
        started = time.perf_counter()
        for i in range(20_000):
            now = t + i * 4.0
            assert ledger.can_send(now)
            ledger.record(now)
        elapsed = time.perf_counter() - started
        assert ledger.used(t + 80_000) == 20_000
        assert elapsed < 5.0, f"{kind}: {elapsed:.2f} s"


# --------------------------------------------------------------------------
# The simulation: weeks of sending, across DST, never over the cap.

# The 2026 DST changes the simulation runs across.
DST_CHANGES = {
    "Europe/London": [dt.date(2026, 3, 29), dt.date(2026, 10, 25)],
    "America/New_York": [dt.date(2026, 3, 8), dt.date(2026, 11, 1)],
}
DELAYS = [0.0, 0.0, 1.0, 30.0, 60.0, 288.0, 600.0, 3600.0, 7200.0]
SIM_DAYS = 21


@dataclass(frozen=True)
class Scenario:
    tz: ZoneInfo
    start: float
    kind: LimitWindow
    allowance: int
    delay: float
    immediately: bool
    days: tuple[Weekday, ...]
    window: Window | None
    arrivals: tuple[tuple[float, int], ...]  # (unix time, units), sorted


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    zone = draw(st.sampled_from(sorted(DST_CHANGES)))
    tz = ZoneInfo(zone)
    change = draw(st.sampled_from(DST_CHANGES[zone]))
    first_day = change - dt.timedelta(days=draw(st.integers(1, 10)))
    start = local_instant(first_day, dt.time(0), tz) + draw(st.integers(0, 86399))
    allowance = draw(st.integers(1, 50))
    chosen = draw(st.sets(st.sampled_from(ALL_DAYS), min_size=1))
    days = tuple(d for d in ALL_DAYS if d in chosen)
    window: Window | None = None
    if draw(st.booleans()):
        # At least 2 h long, so DST never swallows a whole window; may cross midnight.
        opens = draw(st.integers(0, 47)) * 30
        length = draw(st.integers(4, 48)) * 30
        closes = (opens + length) % (24 * 60)
        window = Window(dt.time(opens // 60, opens % 60), dt.time(closes // 60, closes % 60))
    # Arrivals in bursts, so the cap is actually reached. The first burst comes
    # at the start and the last three weeks later, so every run spans the DST
    # change (at most 10 days in) and at least three weeks.
    arrivals: list[tuple[float, int]] = []
    big = draw(st.integers(1, 4))  # units of an occasional large message
    offsets = [0, SIM_DAYS * 86400]
    offsets += draw(st.lists(st.integers(0, SIM_DAYS * 86400), max_size=6))
    for offset in offsets:
        at_ = start + offset
        spacing = draw(st.sampled_from([0, 1, 30, 600]))
        for i in range(draw(st.integers(1, 30))):
            units = draw(st.sampled_from([1, 1, 1, 2, allowance + big]))
            arrivals.append((at_ + i * spacing, units))
    arrivals.sort()
    return Scenario(
        tz=tz,
        start=start,
        kind=draw(st.sampled_from(LIMIT_WINDOWS)),
        allowance=allowance,
        delay=draw(st.sampled_from(DELAYS)),
        immediately=draw(st.booleans()),
        days=days,
        window=window,
        arrivals=tuple(arrivals),
    )


def simulate(sc: Scenario) -> tuple[list[tuple[float, int]], int]:
    """A minimal send loop on an injected clock. Returns the sends and the number
    of messages refused as too big for the allowance."""
    ledger = Ledger(sc.kind, sc.tz, sc.allowance)
    pending = deque(sc.arrivals)
    queue: deque[tuple[float, int]] = deque()
    sends: list[tuple[float, int]] = []
    refused = 0
    clock = sc.start
    last_send: float | None = None

    def arrive_until(t: float) -> None:
        while pending and pending[0][0] <= t:
            queue.append(pending.popleft())

    def all_constraints_hold(t: float, units: int) -> bool:
        paced = sc.immediately or (
            is_open(t, sc.tz, sc.days, sc.window)
            and (last_send is None or t >= last_send + sc.delay)
        )
        return paced and ledger.can_send(t, units)

    while pending or queue:
        if not queue:
            clock = max(clock, pending[0][0])
            arrive_until(clock)
            continue
        arrived, units = queue[0]
        due = next_send_time(
            clock,
            last_send=last_send,
            delay=sc.delay,
            immediately=sc.immediately,
            flush=False,
            ledger=ledger,
            units=units,
            tz=sc.tz,
            days=sc.days,
            window=sc.window,
        )
        if due == INF:
            assert units > sc.allowance
            assert not ledger.fits_at_all(units)
            queue.popleft()
            refused += 1
            continue
        assert due >= clock
        # No starvation: each message waits at most a week for an open day,
        # a day for the cap, and the delay.
        assert due - max(clock, arrived) <= 8 * DAY + sc.delay + 3600
        # ...and not a moment longer than the constraints demand.
        if due > clock:
            for probe in (clock, clock + (due - clock) / 3, clock + (due - clock) / 2, due - 0.001):
                if clock <= probe < due:
                    assert not all_constraints_hold(probe, units), (probe, due)
        clock = due
        arrive_until(clock)
        assert all_constraints_hold(clock, units)
        ledger.record(clock, units)
        sends.append((clock, units))
        last_send = clock
        queue.popleft()
        # As the daemon would, now and then; must never change an answer.
        if len(sends) % 7 == 0:
            ledger.prune(clock)
    return sends, refused


@settings(max_examples=500, deadline=None)
@given(sc=scenarios())
def test_simulated_weeks_never_exceed_the_cap(sc: Scenario) -> None:
    sends, refused = simulate(sc)
    sendable = [a for a in sc.arrivals if a[1] <= sc.allowance]
    # Everything that fits was sent, and only that.
    assert len(sends) == len(sendable)
    assert refused == len(sc.arrivals) - len(sendable)
    assert sorted(u for _, u in sends) == sorted(u for _, u in sendable)
    # Bounded drain after the last arrival: one open day per message at worst.
    if sends:
        assert sends[-1][0] <= sc.arrivals[-1][0] + len(sends) * (8 * DAY + sc.delay + 3600)
    if sc.kind == "calendar_day":
        per_day: defaultdict[dt.date, int] = defaultdict(int)
        for ts, units in sends:
            per_day[wall_clock(ts, sc.tz).date()] += units
        assert max(per_day.values(), default=0) <= sc.allowance, per_day
        if max(per_day.values(), default=0) == sc.allowance:
            event("cap reached")
    else:
        times = [ts for ts, _ in sends]
        cumulative = [0]
        for _, units in sends:
            cumulative.append(cumulative[-1] + units)
        for i, ts in enumerate(times):
            # Every 24 h interval ending at a send: (ts - 24 h, ts].
            first = bisect.bisect_right(times, ts - DAY)
            in_window = cumulative[i + 1] - cumulative[first]
            assert in_window <= sc.allowance, (ts, in_window)
            if in_window == sc.allowance:
                event("cap reached")
    if not sc.immediately:
        for ts, _ in sends:
            assert is_open(ts, sc.tz, sc.days, sc.window)
        gaps = [b - a for (a, _), (b, _) in itertools.pairwise(sends)]
        assert all(g >= sc.delay for g in gaps)


@pytest.mark.parametrize(
    ("tz", "first_day"),
    [
        (LON, "2026-10-24"),
        (NYC, "2026-03-07"),
        (SCL, "2025-09-05"),
        # Sao Paulo and Havana: the clocks went back across midnight, so two
        # calendar windows overlap (the later midnight happens twice).
        (SAO, "2019-02-15"),
        (ZoneInfo("America/Havana"), "2023-11-03"),
    ],
)
def test_remembered_window_matches_a_fresh_one(tz: ZoneInfo, first_day: str) -> None:
    """The ledger remembers the calendar window it last worked out; every
    answer must be what working it out afresh gives, in either direction of
    time, across DST changes."""
    ledger = Ledger("calendar_day", tz, 10)
    t0 = at(tz, f"{first_day} 00:00")
    instants = [t0 + k * 600.0 for k in range(4 * 144)]
    for now in instants + instants[::-1] + instants[::7]:
        start, end = window_bounds(now, tz, "calendar_day")
        assert ledger.reset_at(now) == end, now
        # A send just before the window's start never counts in it, one at its start does.
        probe = Ledger("calendar_day", tz, 10)
        probe._last_window = ledger._last_window
        probe.record(math.nextafter(start, -math.inf))
        probe.record(start)
        assert probe.used(now) == 1, now
