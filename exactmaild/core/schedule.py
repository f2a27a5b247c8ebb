"""The schedule in time: when sending and checking hours are open, and what is next.

This module owns the "Scheduled Send and Receive" arithmetic: whether the
configured days and window are open at an instant, when they open next, when
the next paced send may go (combining the delay, the window and the hard cap
from `exactmaild.limits`), when the next mailbox check is due, and how to say
such an instant to a person.

Windows are wall-clock hours in the configured timezone. On a day the clocks
go forward a window opens at the first instant after the gap if its start is
skipped; on a day they go back, wall-clock times inside the window that happen
twice are open both times. No I/O and no clock: every call takes `now`.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from exactmaild.core.hours import ALL_DAYS, Schedule, Weekday, Window
from exactmaild.core.limits import local_instant, wall_clock

if TYPE_CHECKING:
    from exactmaild.core.limits import Ledger

_MIDNIGHT = dt.time(0, 0)
# Far enough to pass a week of excluded days plus a window swallowed by DST.
_HORIZON_DAYS = 15
_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _weekday(day: dt.date) -> Weekday:
    return ALL_DAYS[day.weekday()]


def is_open(now: float, tz: ZoneInfo, days: tuple[Weekday, ...], window: Window | None) -> bool:
    """Whether sending/checking hours are open at `now`.

    `window` None: all day on `days`. A window with end <= start crosses
    midnight and belongs to the day it started on: "fri 22:00-06:00" is open
    into Saturday morning even when Saturday is not in `days`.
    """
    wall = wall_clock(now, tz)
    today = _weekday(wall.date())
    if window is None:
        return today in days
    t = wall.time()
    if window.start < window.end:
        return today in days and window.start <= t < window.end
    yesterday = _weekday(wall.date() - dt.timedelta(days=1))
    return (today in days and t >= window.start) or (yesterday in days and t < window.end)


def next_open(now: float, tz: ZoneInfo, days: tuple[Weekday, ...], window: Window | None) -> float:
    """`now` if open, else the next instant the hours open; math.inf if `days` is empty."""
    if not days:
        return math.inf
    if is_open(now, tz, days, window):
        return now
    start = window.start if window is not None else _MIDNIGHT
    first_day = wall_clock(now, tz).date()
    candidate = math.inf
    for k in range(_HORIZON_DAYS):
        day = first_day + dt.timedelta(days=k)
        if _weekday(day) not in days:
            continue
        t = local_instant(day, start, tz)
        # A start inside a DST gap resolves to the end of the gap, which may
        # already be past a short window's end: then that day has no window.
        if t > now and is_open(t, tz, days, window):
            candidate = t
            break
    # Clocks going back can reopen a window whose wall-clock hours repeat
    # (closed at 01:30 BST, open again at 01:00 GMT) without passing its start.
    change = _offset_change(now, min(candidate, now + _HORIZON_DAYS * 86400.0), tz)
    if change is not None and is_open(change, tz, days, window):
        return change
    return candidate


def _offset_change(a: float, b: float, tz: ZoneInfo) -> float | None:
    """The first instant in (a, b] where the UTC offset differs from a's, if any.

    Assumes at most one change in between, which holds for spans of a few
    weeks in every zone that changes twice a year.
    """
    before = dt.datetime.fromtimestamp(a, tz).utcoffset()
    if dt.datetime.fromtimestamp(b, tz).utcoffset() == before:
        return None
    lo, hi = math.floor(a), math.ceil(b)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if dt.datetime.fromtimestamp(mid, tz).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return float(hi) if hi > a else None


def next_send_time(
    now: float,
    *,
    last_send: float | None,
    delay: float,
    immediately: bool,
    flush: bool,
    ledger: Ledger,
    units: int,
    tz: ZoneInfo,
    days: tuple[Weekday, ...],
    window: Window | None,
    keep: int = 0,
    any_time: bool = False,
    min_gap: float = 0.0,
) -> float:
    """When the next message, of `units`, may go: an instant >= `now`, or math.inf.

    Paced (the default): no sooner than `delay` after `last_send`, inside the
    hours, and where the ledger has room. `immediately` (config) drops the
    delay and the hours, never the cap. `flush` (the command) drops them only
    for a message the cap lets go at `now`: one that must wait is paced, so a
    flush never fires later (at the cap's reset outside the hours, or in a
    burst once the limit is raised). `min_gap` (a provider's rate ceiling,
    60 s / `send.max_per_minute`) holds in every mode, immediately and flush
    included: no send comes sooner than that after `last_send`. math.inf
    means never: the message is larger than the whole allowance, or no day
    is open.

    `keep`: what this message must leave of the allowance (the urgent
    reserve, for a normal or bulk message). `any_time`: the hours do not
    apply (urgent mail with `urgent_any_time`); the delay, the ceiling and
    the cap do.
    """
    if delay < 0 or min_gap < 0:
        raise ValueError("delay and min_gap must be 0 or more")
    if not ledger.fits_at_all(units, keep):
        return math.inf
    floor = ceiling_floor(now, last_send, min_gap)
    if flush and ledger.can_send(floor, units, keep):
        return floor
    if immediately:
        return ledger.next_allowed(floor, units, keep)
    t = now if last_send is None else max(now, last_send + max(delay, min_gap))
    if any_time:
        return ledger.next_allowed(t, units, keep)
    # Each constraint can push past another (the cap resets at midnight,
    # outside a 08:00-17:00 window), so move forward until all hold at once.
    # Every round ends in a later window or a later cap reset, so a handful
    # suffice; the bound only turns a bug into an error instead of a hang.
    for _ in range(10_000):
        opened = next_open(t, tz, days, window)
        if math.isinf(opened):
            return math.inf
        allowed = ledger.next_allowed(opened, units, keep)
        if allowed == opened:
            return opened
        t = allowed
    raise RuntimeError("next_send_time did not converge")


def ceiling_floor(now: float, last_send: float | None, min_gap: float) -> float:
    """The earliest instant >= `now` that the rate ceiling lets a send go."""
    return now if last_send is None else max(now, last_send + min_gap)


def next_check(now: float, tz: ZoneInfo, schedule: Schedule, last_check: float | None) -> float:
    """When the next mailbox check is due: `now` (due now), a later instant, or math.inf.

    Periodic: every `schedule.every` seconds while the hours are open, the
    first at the opening. Presets (`schedule.at`): each time on each of the
    days, even outside the window, since someone asked for exactly then. A
    preset that fell between `last_check` and `now` is caught up at once;
    with no `last_check` (first start) past presets are not.
    The result is always > `last_check` and >= `now`.
    """
    days = schedule.days
    if not days:
        return math.inf
    best = math.inf
    if schedule.every is not None:
        if schedule.every <= 0:
            raise ValueError("schedule.every must be more than 0")
        t = now if last_check is None else max(now, last_check + schedule.every)
        best = next_open(t, tz, days, schedule.window)
    if schedule.at:
        best = min(best, _next_preset(now, tz, days, schedule.at, last_check))
    return best


def _next_preset(
    now: float,
    tz: ZoneInfo,
    days: tuple[Weekday, ...],
    at: tuple[dt.time, ...],
    last_check: float | None,
) -> float:
    # A preset missed since the last check is due now; a stopped daemon only
    # catches up once however long it was down, so a week back is plenty.
    since = now if last_check is None else max(last_check, now - 8 * 86400.0)
    first_day = wall_clock(min(since, now), tz).date()
    last_day = wall_clock(now, tz).date() + dt.timedelta(days=_HORIZON_DAYS)
    best = math.inf
    day = first_day
    while day <= last_day:
        if _weekday(day) in days:
            for time in at:
                # One instant per preset per day, even when clocks go back
                # and its wall-clock time happens twice.
                p = local_instant(day, time, tz)
                if last_check is not None and p <= last_check:
                    continue
                if p <= now:
                    if last_check is not None:
                        return now
                    continue
                best = min(best, p)
        if best < math.inf and day > wall_clock(now, tz).date():
            break
        day += dt.timedelta(days=1)
    return best


def describe_next(ts: float, tz: ZoneInfo, *, now: float) -> str:
    """An instant as `status` shows it: "now", "today 12:00", "tomorrow 08:00",
    "Mon 1 Dec 08:00" (with the year when it differs), or "never".

    The zone abbreviation is added when the wall-clock time happens twice
    (the night clocks go back), since "01:30" alone would not say which.
    """
    if math.isinf(ts):
        return "never"
    if ts <= now:
        return "now"
    aware = dt.datetime.fromtimestamp(ts, tz)
    wall = aware.replace(tzinfo=None)
    today = wall_clock(now, tz).date()
    text = f"{wall:%H:%M}"
    other = wall.replace(fold=1 - aware.fold, tzinfo=tz)
    if other.utcoffset() != aware.utcoffset():
        text += f" {aware.tzname()}"
    if wall.date() == today:
        return f"today {text}"
    if wall.date() == today + dt.timedelta(days=1):
        return f"tomorrow {text}"
    day = f"{_DAY_NAMES[wall.weekday()]} {wall.day} {_MONTH_NAMES[wall.month - 1]}"
    if wall.year != today.year:
        day += f" {wall.year}"
    return f"{day} {text}"
