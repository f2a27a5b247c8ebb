"""The arithmetic the product exists for: a daily limit into a safe steady rate.

Pure functions, no I/O, no clock: `exactmaild plan`, `delay: auto` and the
`check-config` summary all call `plan()`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    daily_limit: int
    reserve: int
    hours: float
    per_minute: int  # floor((limit - reserve) / (hours * 60)); 0 when under one a minute
    delay: float  # seconds between sends

    def describe(self) -> str:
        allowance = self.daily_limit - self.reserve
        if self.per_minute >= 1:
            rate = f"{self.per_minute} email{'s' if self.per_minute != 1 else ''} a minute"
        else:
            rate = describe_rate(self.delay)
        return (
            f"{allowance} send{'s' if allowance != 1 else ''} over {self.hours:g} h: {rate}, "
            f"a delay of {format_seconds(self.delay)} between sends"
        )


def plan(daily_limit: int, hours: float, reserve: int = 0) -> Plan:
    """Largest safe steady rate for `daily_limit - reserve` sends over `hours`.

    The brief's rule: floor(N / (H*60)) emails a minute, i.e. 60/that seconds
    apart. Below one a minute the delay is rounded *up* to a whole second so
    the window can never hold more than the allowance.
    """
    if daily_limit <= 0:
        raise ValueError("daily limit must be a positive number")
    if not 0 < hours <= 24:
        raise ValueError("hours must be more than 0 and at most 24")
    if not 0 <= reserve < daily_limit:
        raise ValueError("reserve must be at least 0 and below the daily limit")
    allowance = daily_limit - reserve
    per_minute = math.floor(allowance / (hours * 60))
    # Below one a minute, round the delay up so the window never holds more.
    delay = 60.0 / per_minute if per_minute >= 1 else float(math.ceil(hours * 3600 / allowance))
    return Plan(daily_limit, reserve, hours, per_minute, delay)


def format_seconds(seconds: float) -> str:
    """A span as a person reads it, to the precision that matters at its size:
    0.5 -> '500 ms', 90 -> '90 s', 288 -> '4 min 48 s', 2469 -> '41 min',
    5400 -> '1 h 30 min', 345600 -> '4 d'."""
    if seconds < 1:
        return f"{seconds * 1000:g} ms"
    if seconds < 120:
        return f"{seconds:g} s"
    if seconds < 600:
        minutes, secs = divmod(round(seconds), 60)
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        hours, mins = divmod(minutes, 60)
        return f"{hours} h {mins} min" if mins else f"{hours} h"
    days, hours = divmod(round(seconds / 3600), 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def describe_rate(delay: float) -> str:
    """The rate a delay between sends gives, as a person says it: 30 s ->
    '2 emails a minute', 40 s -> '90 an hour', 68 s -> 'about 53 an hour'."""
    if delay <= 0:
        return "no delay"
    per_minute = 60.0 / delay
    if per_minute >= 1 and abs(per_minute - round(per_minute)) < 1e-9:
        n = round(per_minute)
        return f"{n} email{'s' if n != 1 else ''} a minute"
    per_hour = 3600.0 / delay
    if per_hour >= 1:
        n = round(per_hour)
        exact = abs(per_hour - n) < 1e-9
        return f"{'' if exact else 'about '}{n} an hour"
    per_day = 86400.0 / delay
    n = round(per_day)
    return f"{'' if abs(per_day - n) < 1e-9 else 'about '}{n} a day"
