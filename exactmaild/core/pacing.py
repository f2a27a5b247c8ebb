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
            rate = "less than 1 email a minute"
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
    """60 -> '60 s', 0.5 -> '500 ms', 3600 -> '3600 s (1 h)'."""
    if seconds < 1:
        return f"{seconds * 1000:g} ms"
    text = f"{seconds:g} s"
    if seconds >= 3600 and seconds % 3600 == 0:
        text += f" ({seconds / 3600:g} h)"
    elif seconds >= 120 and seconds % 60 == 0:
        text += f" ({seconds / 60:g} min)"
    return text
