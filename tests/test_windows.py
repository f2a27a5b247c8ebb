"""windows: open hours, next opening, next send and next check, across DST.

Expected instants are written as local wall-clock times and converted with
zoneinfo, so a wrong hour on a DST day fails loudly.
"""

from __future__ import annotations

import datetime as dt
import math
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exactmaild.core.hours import ALL_DAYS, Schedule, Weekday, Window
from exactmaild.core.limits import Ledger, LimitWindow, local_instant
from exactmaild.core.schedule import describe_next, is_open, next_check, next_open, next_send_time
from tests.helpers import at, utc

LON = ZoneInfo("Europe/London")
NYC = ZoneInfo("America/New_York")
SCL = ZoneInfo("America/Santiago")
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri")
OFFICE = Window(dt.time(8), dt.time(17))
NIGHT = Window(dt.time(22), dt.time(6))
INF = math.inf


def win(text: str) -> Window:
    start, end = text.split("-")
    return Window(dt.time.fromisoformat(start), dt.time.fromisoformat(end))


# --------------------------------------------------------------------------
# is_open


@pytest.mark.parametrize(
    ("tz", "when", "fold", "days", "window", "expected"),
    [
        (LON, "2026-03-27 07:59", 0, WEEKDAYS, OFFICE, False),
        (LON, "2026-03-27 08:00", 0, WEEKDAYS, OFFICE, True),
        (LON, "2026-03-27 16:59", 0, WEEKDAYS, OFFICE, True),
        (LON, "2026-03-27 17:00", 0, WEEKDAYS, OFFICE, False),  # end is exclusive
        (LON, "2026-03-28 10:00", 0, WEEKDAYS, OFFICE, False),  # Saturday
        (LON, "2026-03-30 08:00", 0, WEEKDAYS, OFFICE, True),  # Monday, now BST
        # No window: all day on the days.
        (LON, "2026-03-28 00:00", 0, ("sat", "sun"), None, True),
        (LON, "2026-03-27 23:59", 0, ("sat", "sun"), None, False),
        # Crossing midnight belongs to the day it started on.
        (LON, "2026-03-27 22:00", 0, ("fri",), NIGHT, True),
        (LON, "2026-03-28 05:59", 0, ("fri",), NIGHT, True),  # Saturday morning, Friday's window
        (LON, "2026-03-28 06:00", 0, ("fri",), NIGHT, False),
        (LON, "2026-03-28 23:00", 0, ("fri",), NIGHT, False),
        (LON, "2026-03-27 05:00", 0, ("fri",), NIGHT, False),  # Thursday's window: not listed
        (LON, "2026-03-27 21:59", 0, ("fri",), NIGHT, False),
        # 00:00-00:00 is the whole day.
        (LON, "2026-03-27 00:00", 0, ("fri",), win("00:00-00:00"), True),
        (LON, "2026-03-27 23:59", 0, ("fri",), win("00:00-00:00"), True),
        (LON, "2026-03-28 00:00", 0, ("fri",), win("00:00-00:00"), False),
        # 08:00-08:00 is 24 h from 08:00.
        (LON, "2026-03-28 07:59", 0, ("fri",), win("08:00-08:00"), True),
        (LON, "2026-03-28 08:00", 0, ("fri",), win("08:00-08:00"), False),
        # Spring forward (London 01:00 -> 02:00 on Sun 29 Mar): wall clock hours.
        (LON, "2026-03-29 02:00", 0, ALL_DAYS, win("01:30-03:00"), True),
        (LON, "2026-03-29 00:59", 0, ALL_DAYS, win("01:30-03:00"), False),
        # Fall back (02:00 BST -> 01:00 GMT on Sun 25 Oct): the repeated hour is open twice.
        (LON, "2026-10-25 01:15", 0, ALL_DAYS, win("01:00-01:30"), True),
        (LON, "2026-10-25 01:15", 1, ALL_DAYS, win("01:00-01:30"), True),
        (LON, "2026-10-25 01:45", 0, ALL_DAYS, win("01:00-01:30"), False),
        (NYC, "2026-03-06 16:59", 0, WEEKDAYS, OFFICE, True),
        (NYC, "2026-03-07 12:00", 0, WEEKDAYS, OFFICE, False),
    ],
)
def test_is_open(
    tz: ZoneInfo,
    when: str,
    fold: int,
    days: tuple[Weekday, ...],
    window: Window | None,
    expected: bool,
) -> None:
    assert is_open(at(tz, when, fold), tz, days, window) is expected


# --------------------------------------------------------------------------
# next_open


@pytest.mark.parametrize(
    ("tz", "now", "days", "window", "expected"),
    [
        # Friday 17:00 -> Monday 08:00, across the London spring-forward weekend...
        (LON, at(LON, "2026-03-27 17:00"), WEEKDAYS, OFFICE, at(LON, "2026-03-30 08:00")),
        # ...which is 07:00 UTC, not 08:00 UTC.
        (LON, at(LON, "2026-03-27 17:00"), WEEKDAYS, OFFICE, utc("2026-03-30 07:00")),
        # ...across fall-back weekend (Monday 08:00 is GMT again).
        (LON, at(LON, "2026-10-23 17:00"), WEEKDAYS, OFFICE, utc("2026-10-26 08:00")),
        # ...and New York's spring forward (EST Friday, EDT Monday).
        (NYC, at(NYC, "2026-03-06 17:00"), WEEKDAYS, OFFICE, utc("2026-03-09 12:00")),
        (NYC, at(NYC, "2026-10-30 17:30"), WEEKDAYS, OFFICE, utc("2026-11-02 13:00")),
        # Open now -> now.
        (LON, at(LON, "2026-03-27 12:34"), WEEKDAYS, OFFICE, at(LON, "2026-03-27 12:34")),
        # Before opening today.
        (LON, at(LON, "2026-03-27 06:00"), WEEKDAYS, OFFICE, at(LON, "2026-03-27 08:00")),
        # Start inside the DST gap: the first instant after the gap.
        (LON, at(LON, "2026-03-28 12:00"), ("sun",), win("01:30-05:00"), utc("2026-03-29 01:00")),
        (NYC, at(NYC, "2026-03-07 12:00"), ("sun",), win("02:30-06:00"), utc("2026-03-08 07:00")),
        # A window that lies wholly in the gap does not happen that day.
        (LON, at(LON, "2026-03-28 02:00"), ALL_DAYS, win("01:15-01:45"), utc("2026-03-30 00:15")),
        # Clocks going back reopen a window whose hours repeat.
        (LON, at(LON, "2026-10-25 01:45"), ALL_DAYS, win("00:00-01:30"), utc("2026-10-25 01:00")),
        # Crossing midnight: still open on Saturday morning, then Monday night.
        (LON, at(LON, "2026-03-28 03:00"), WEEKDAYS, NIGHT, at(LON, "2026-03-28 03:00")),
        (LON, at(LON, "2026-03-28 07:00"), WEEKDAYS, NIGHT, at(LON, "2026-03-30 22:00")),
        # All day on listed days: the next listed midnight.
        (LON, at(LON, "2026-03-27 09:00"), ("sun",), None, utc("2026-03-29 00:00")),
        (LON, at(LON, "2026-03-27 09:00"), ("mon",), None, utc("2026-03-29 23:00")),
        # Santiago skips midnight on 7 Sep 2025: Sunday begins at 01:00.
        (SCL, at(SCL, "2025-09-06 12:00"), ("sun",), None, at(SCL, "2025-09-07 01:00")),
        # No days at all: never.
        (LON, at(LON, "2026-03-27 09:00"), (), OFFICE, INF),
        (LON, at(LON, "2026-03-27 09:00"), (), None, INF),
    ],
)
def test_next_open(
    tz: ZoneInfo, now: float, days: tuple[Weekday, ...], window: Window | None, expected: float
) -> None:
    assert next_open(now, tz, days, window) == expected


windows_st = st.one_of(
    st.none(),
    st.builds(
        Window,
        st.builds(dt.time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45])),
        st.builds(dt.time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45])),
    ),
)
days_st = st.sets(st.sampled_from(ALL_DAYS), min_size=1).map(
    lambda s: tuple(d for d in ALL_DAYS if d in s)
)
# Two weeks either side of the 2026 DST changes in both zones.
zone_time_st = st.sampled_from([LON, NYC, SCL]).flatmap(
    lambda tz: st.tuples(
        st.just(tz),
        st.floats(utc("2026-03-01 00:00"), utc("2026-04-15 00:00"))
        | st.floats(utc("2026-10-10 00:00"), utc("2026-11-15 00:00")),
    )
)


@settings(max_examples=300, deadline=None)
@given(zone_time=zone_time_st, days=days_st, window=windows_st, probes=st.data())
def test_next_open_is_open_and_nothing_earlier_is(
    zone_time: tuple[ZoneInfo, float],
    days: tuple[Weekday, ...],
    window: Window | None,
    probes: st.DataObject,
) -> None:
    tz, now = zone_time
    t = next_open(now, tz, days, window)
    assert now <= t < now + 9 * 86400
    assert is_open(t, tz, days, window)
    if t > now:
        assert not is_open(t - 0.001, tz, days, window)
        for _ in range(20):
            probe = probes.draw(st.floats(now, t, exclude_max=True))
            assert not is_open(probe, tz, days, window), probe


# --------------------------------------------------------------------------
# next_send_time


def ledger_with(
    kind: LimitWindow, allowance: int, sends: list[float], tz: ZoneInfo = LON
) -> Ledger:
    ledger = Ledger(kind, tz, allowance)
    for ts in sends:
        ledger.record(ts, 1)
    return ledger


def send_time(
    now: float,
    ledger: Ledger,
    *,
    last_send: float | None = None,
    delay: float = 60.0,
    immediately: bool = False,
    flush: bool = False,
    units: int = 1,
    tz: ZoneInfo = LON,
    days: tuple[Weekday, ...] = WEEKDAYS,
    window: Window | None = OFFICE,
) -> float:
    return next_send_time(
        now,
        last_send=last_send,
        delay=delay,
        immediately=immediately,
        flush=flush,
        ledger=ledger,
        units=units,
        tz=tz,
        days=days,
        window=window,
    )


TUE = "2026-03-24"
FRI = "2026-03-27"


def full_day(day: str, n: int, tz: ZoneInfo = LON) -> list[float]:
    """n sends from 09:00 on `day`, a minute apart."""
    return [at(tz, f"{day} 09:00") + 60 * i for i in range(n)]


def test_send_idle_in_window_goes_now() -> None:
    now = at(LON, f"{TUE} 10:00:30")
    assert send_time(now, ledger_with("calendar_day", 5, [])) == now


def test_send_waits_for_the_delay() -> None:
    ledger = ledger_with("calendar_day", 5, [at(LON, f"{TUE} 10:00")])
    now = at(LON, f"{TUE} 10:00:10")
    assert send_time(now, ledger, last_send=at(LON, f"{TUE} 10:00")) == at(LON, f"{TUE} 10:01")


def test_send_delay_already_passed_goes_now() -> None:
    ledger = ledger_with("calendar_day", 5, [at(LON, f"{TUE} 10:00")])
    now = at(LON, f"{TUE} 10:05")
    assert send_time(now, ledger, last_send=at(LON, f"{TUE} 10:00")) == now


def test_send_delay_past_closing_waits_for_monday() -> None:
    last = at(LON, f"{FRI} 16:59:30")
    ledger = ledger_with("calendar_day", 5, [last])
    expected = at(LON, "2026-03-30 08:00")
    assert send_time(at(LON, f"{FRI} 16:59:45"), ledger, last_send=last) == expected


def test_send_cap_full_waits_for_next_opening_not_midnight() -> None:
    ledger = ledger_with("calendar_day", 3, full_day(TUE, 3))
    now = at(LON, f"{TUE} 14:00")
    assert send_time(now, ledger, last_send=full_day(TUE, 3)[-1]) == at(LON, "2026-03-25 08:00")


def test_send_cap_full_on_friday_waits_for_monday() -> None:
    ledger = ledger_with("calendar_day", 3, full_day(FRI, 3))
    assert send_time(at(LON, f"{FRI} 14:00"), ledger) == at(LON, "2026-03-30 08:00")


def test_send_cap_reset_at_midnight_inside_a_night_window() -> None:
    # 22:00-06:00: the cap is full at 23:00, resets at midnight, window still open.
    sends = [at(LON, f"{TUE} 22:00"), at(LON, f"{TUE} 22:30")]
    ledger = ledger_with("calendar_day", 2, sends)
    got = send_time(at(LON, f"{TUE} 23:00"), ledger, window=NIGHT, last_send=sends[-1])
    assert got == at(LON, "2026-03-25 00:00")


def test_send_immediately_ignores_window_and_delay() -> None:
    now = at(LON, "2026-03-28 03:00")  # Saturday night
    last = now - 1
    ledger = ledger_with("calendar_day", 5, [last])
    assert send_time(now, ledger, last_send=last, immediately=True) == now
    assert send_time(now, ledger, last_send=last, flush=True) == now


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        # Full on the Saturday before spring forward: Sunday starts 00:00 GMT.
        ("2026-03-28", utc("2026-03-29 00:00")),
        # Full on the 23-hour Sunday: Monday starts 00:00 BST = 23:00 UTC.
        ("2026-03-29", utc("2026-03-29 23:00")),
        # Full on the 25-hour Sunday: Monday starts 00:00 GMT.
        ("2026-10-25", utc("2026-10-26 00:00")),
    ],
)
def test_send_immediately_cap_full_waits_for_local_midnight(day: str, expected: float) -> None:
    sends = [at(LON, f"{day} 12:00"), at(LON, f"{day} 12:01")]
    ledger = ledger_with("calendar_day", 2, sends)
    now = at(LON, f"{day} 13:00")
    assert send_time(now, ledger, immediately=True) == expected
    # A flush at the cap is paced: it never fires at the reset itself.
    assert send_time(now, ledger, flush=True, immediately=True) == expected


def test_send_flush_still_obeys_cap() -> None:
    ledger = ledger_with("calendar_day", 3, full_day(TUE, 3))
    # At the cap a flush is over: paced, the next opening (not the midnight reset).
    assert send_time(at(LON, f"{TUE} 10:00"), ledger, flush=True) == at(LON, "2026-03-25 08:00")


def test_send_flush_goes_now_outside_the_window_when_the_cap_has_room() -> None:
    ledger = ledger_with("calendar_day", 3, [])
    now = at(LON, f"{TUE} 21:00")
    assert send_time(now, ledger, flush=True) == now
    assert send_time(now, ledger) == at(LON, "2026-03-25 08:00")


def test_send_too_big_for_the_allowance_is_never() -> None:
    ledger = ledger_with("calendar_day", 3, [])
    now = at(LON, f"{TUE} 10:00")
    assert send_time(now, ledger, units=4) == INF
    assert send_time(now, ledger, units=4, immediately=True) == INF
    assert send_time(now, ledger, units=3) == now


def test_send_no_days_is_never() -> None:
    assert send_time(at(LON, f"{TUE} 10:00"), ledger_with("calendar_day", 3, []), days=()) == INF


def test_send_rolling_waits_for_the_oldest_to_age_out() -> None:
    sends = [at(LON, f"{TUE} 09:00"), at(LON, f"{TUE} 09:10"), at(LON, f"{TUE} 09:20")]
    ledger = ledger_with("rolling_24h", 3, sends)
    now = at(LON, f"{TUE} 09:30")
    assert send_time(now, ledger, last_send=sends[-1]) == at(LON, "2026-03-25 09:00")
    # Two units need two of them gone.
    assert send_time(now, ledger, last_send=sends[-1], units=2) == at(LON, "2026-03-25 09:10")


def test_send_rolling_age_out_outside_window_waits_for_opening() -> None:
    sends = [at(LON, f"{FRI} 16:00"), at(LON, f"{FRI} 16:10")]
    ledger = ledger_with("rolling_24h", 2, sends)
    # Ages out Saturday 16:00: closed, so Monday 08:00.
    assert send_time(at(LON, f"{FRI} 16:30"), ledger) == at(LON, "2026-03-30 08:00")


def test_send_rolling_opening_still_full_waits_inside_window() -> None:
    # Sent Monday 16:30 and Tuesday 08:30 (allowance 2): at Tuesday 08:31 the
    # next room is when Monday's ages out, Tuesday 16:30, inside the window.
    sends = [at(LON, "2026-03-23 16:30"), at(LON, f"{TUE} 08:30")]
    ledger = ledger_with("rolling_24h", 2, sends)
    got = send_time(at(LON, f"{TUE} 08:31"), ledger, last_send=sends[-1])
    assert got == at(LON, f"{TUE} 16:30")


def test_send_rolling_across_spring_forward_is_24_real_hours() -> None:
    sends = [at(LON, "2026-03-28 12:00")]
    ledger = ledger_with("rolling_24h", 1, sends)
    got = send_time(at(LON, "2026-03-28 13:00"), ledger, immediately=True)
    assert got == at(LON, "2026-03-29 13:00")  # 12:00 GMT + 24 h = 13:00 BST


def test_send_rejects_negative_delay() -> None:
    with pytest.raises(ValueError, match="delay"):
        send_time(at(LON, f"{TUE} 10:00"), ledger_with("calendar_day", 3, []), delay=-1)


# --------------------------------------------------------------------------
# next_check

CHECKS = Schedule(days=WEEKDAYS, window=OFFICE, every=300.0, at=(dt.time(7, 30), dt.time(12)))
PERIODIC = Schedule(days=WEEKDAYS, window=OFFICE, every=300.0)


@pytest.mark.parametrize(
    ("schedule", "tz", "now", "last", "expected"),
    [
        # First start inside the window: due now.
        (CHECKS, LON, at(LON, f"{TUE} 10:00"), None, at(LON, f"{TUE} 10:00")),
        # Every 5 minutes after the last.
        (CHECKS, LON, at(LON, f"{TUE} 10:01"), at(LON, f"{TUE} 10:00"), at(LON, f"{TUE} 10:05")),
        # Overdue (the daemon was busy): due now.
        (CHECKS, LON, at(LON, f"{TUE} 10:07"), at(LON, f"{TUE} 10:00"), at(LON, f"{TUE} 10:07")),
        # After closing: the 07:30 preset comes before the 08:00 opening.
        (
            CHECKS,
            LON,
            at(LON, f"{TUE} 16:59"),
            at(LON, f"{TUE} 16:58"),
            at(LON, "2026-03-25 07:30"),
        ),
        # Without presets: the opening.
        (
            PERIODIC,
            LON,
            at(LON, f"{TUE} 16:59"),
            at(LON, f"{TUE} 16:58"),
            at(LON, "2026-03-25 08:00"),
        ),
        # After the 07:30 preset: the opening.
        (CHECKS, LON, at(LON, f"{TUE} 07:31"), at(LON, f"{TUE} 07:30"), at(LON, f"{TUE} 08:00")),
        # Friday evening -> Monday's 07:30 preset, after spring forward (06:30 UTC).
        (CHECKS, LON, at(LON, f"{FRI} 17:01"), at(LON, f"{FRI} 16:58"), utc("2026-03-30 06:30")),
        (
            PERIODIC,
            LON,
            at(LON, f"{FRI} 17:01"),
            at(LON, f"{FRI} 16:58"),
            at(LON, "2026-03-30 08:00"),
        ),
        # A preset is due even when it coincides with a periodic check time.
        (CHECKS, LON, at(LON, f"{TUE} 11:58"), at(LON, f"{TUE} 11:57"), at(LON, f"{TUE} 12:00")),
        # A preset missed since the last check (closed hours): due now.
        (CHECKS, LON, at(LON, f"{TUE} 07:45"), at(LON, f"{TUE} 07:00"), at(LON, f"{TUE} 07:45")),
        # First start before opening, preset already past: not caught up.
        (CHECKS, LON, at(LON, f"{TUE} 07:45"), None, at(LON, f"{TUE} 08:00")),
        # Presets fire outside the window.
        (
            Schedule(days=WEEKDAYS, window=OFFICE, every=300.0, at=(dt.time(18, 30),)),
            LON,
            at(LON, f"{TUE} 17:10"),
            at(LON, f"{TUE} 16:58"),
            at(LON, f"{TUE} 18:30"),
        ),
        # Presets only: the next one, on the listed days only.
        (
            Schedule(days=WEEKDAYS, every=None, at=(dt.time(12),)),
            LON,
            at(LON, f"{FRI} 12:00"),
            at(LON, f"{FRI} 12:00"),
            at(LON, "2026-03-30 12:00"),
        ),
        # A preset inside the DST gap: the first instant after the gap.
        (
            Schedule(every=None, at=(dt.time(1, 30),)),
            LON,
            at(LON, "2026-03-28 12:00"),
            at(LON, "2026-03-28 01:30"),
            utc("2026-03-29 01:00"),
        ),
        (
            Schedule(every=None, at=(dt.time(2, 30),)),
            NYC,
            at(NYC, "2026-03-07 12:00"),
            at(NYC, "2026-03-07 02:30"),
            utc("2026-03-08 07:00"),
        ),
        # A preset in the repeated hour fires once, at the first 01:30...
        (
            Schedule(every=None, at=(dt.time(1, 30),)),
            LON,
            at(LON, "2026-10-24 12:00"),
            at(LON, "2026-10-24 01:30"),
            utc("2026-10-25 00:30"),
        ),
        # ...and not again at the second: next is Monday's.
        (
            Schedule(every=None, at=(dt.time(1, 30),)),
            LON,
            utc("2026-10-25 00:30"),
            utc("2026-10-25 00:30"),
            utc("2026-10-26 01:30"),
        ),
        # All day on every day: periodic straight through the spring-forward gap.
        (
            Schedule(every=1800.0),
            LON,
            utc("2026-03-29 00:50"),
            utc("2026-03-29 00:45"),
            utc("2026-03-29 01:15"),
        ),
        # Clock stepped back behind the last check: still after it.
        (CHECKS, LON, at(LON, f"{TUE} 09:00"), at(LON, f"{TUE} 10:00"), at(LON, f"{TUE} 10:05")),
        # Nothing to do.
        (Schedule(days=()), LON, at(LON, f"{TUE} 10:00"), None, INF),
        (Schedule(every=None), LON, at(LON, f"{TUE} 10:00"), None, INF),
    ],
)
def test_next_check(
    schedule: Schedule, tz: ZoneInfo, now: float, last: float | None, expected: float
) -> None:
    assert next_check(now, tz, schedule, last) == expected


def test_next_check_rejects_zero_every() -> None:
    with pytest.raises(ValueError, match="every"):
        next_check(at(LON, f"{TUE} 10:00"), LON, Schedule(every=0.0), None)


presets_st = st.lists(
    st.builds(dt.time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45])), max_size=3
).map(tuple)


@settings(max_examples=300, deadline=None)
@given(
    zone_time=zone_time_st,
    days=days_st,
    window=windows_st,
    every=st.one_of(st.none(), st.sampled_from([60.0, 300.0, 3600.0, 7200.0])),
    presets=presets_st,
    last_ago=st.one_of(st.none(), st.floats(-3600, 3 * 86400)),
)
def test_next_check_properties(
    zone_time: tuple[ZoneInfo, float],
    days: tuple[Weekday, ...],
    window: Window | None,
    every: float | None,
    presets: tuple[dt.time, ...],
    last_ago: float | None,
) -> None:
    tz, now = zone_time
    schedule = Schedule(days=days, window=window, every=every, at=presets)
    last = None if last_ago is None else now - last_ago
    t = next_check(now, tz, schedule, last)
    if every is None and not presets:
        assert t == INF
        return
    assert t >= now
    assert t < now + 9 * 86400
    if last is not None:
        assert t > last
    if t > now:
        # A future check is either inside the hours or exactly a preset.
        local = dt.datetime.fromtimestamp(t, tz)
        preset_instants = {local_instant(local.date(), p, tz) for p in presets}
        assert (every is not None and is_open(t, tz, days, window)) or t in preset_instants


# --------------------------------------------------------------------------
# describe_next

NOW = at(LON, "2026-03-30 10:00")  # Monday


@pytest.mark.parametrize(
    ("ts", "now", "text"),
    [
        (at(LON, "2026-03-30 12:00"), NOW, "today 12:00"),
        (at(LON, "2026-03-31 08:00"), NOW, "tomorrow 08:00"),
        (at(LON, "2026-04-06 08:00"), NOW, "Mon 6 Apr 08:00"),
        (at(LON, "2026-12-07 08:00"), NOW, "Mon 7 Dec 08:00"),
        (at(LON, "2027-01-04 08:05"), NOW, "Mon 4 Jan 2027 08:05"),
        (NOW, NOW, "now"),
        (NOW - 60, NOW, "now"),
        (INF, NOW, "never"),
        # The repeated hour says which one.
        (at(LON, "2026-10-25 01:30"), at(LON, "2026-10-24 12:00"), "tomorrow 01:30 BST"),
        (at(LON, "2026-10-25 01:30", fold=1), at(LON, "2026-10-24 12:00"), "tomorrow 01:30 GMT"),
        (at(LON, "2026-10-25 02:30"), at(LON, "2026-10-24 12:00"), "tomorrow 02:30"),
        (at(NYC, "2026-03-09 08:00"), at(NYC, "2026-03-06 17:00"), "Mon 9 Mar 08:00"),
    ],
)
def test_describe_next(ts: float, now: float, text: str) -> None:
    tz = NYC if text == "Mon 9 Mar 08:00" else LON
    assert describe_next(ts, tz, now=now) == text
