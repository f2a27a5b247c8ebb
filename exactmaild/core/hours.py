"""Opening hours: the days, the daily window, and the mailbox-check triggers.

Plain frozen data, shared by the configuration (which builds them from the
YAML) and the pure schedule arithmetic in `exactmaild.core.schedule` (which
reads them). Times are wall-clock times in the configured timezone.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ALL_DAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Window:
    """Daily hours, [start, end) in local time. end <= start means it crosses midnight."""

    start: dt.time
    end: dt.time

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    @property
    def hours(self) -> float:
        """Length of the window in hours (24 for 00:00-00:00)."""
        s = self.start.hour * 60 + self.start.minute
        e = self.end.hour * 60 + self.end.minute
        minutes = (e - s) % (24 * 60) or 24 * 60
        return minutes / 60


@dataclass(frozen=True)
class Schedule:
    days: tuple[Weekday, ...] = ALL_DAYS
    window: Window | None = None  # None: all day
    every: float | None = 300.0  # seconds between mailbox checks; None: only `at`
    at: tuple[dt.time, ...] = ()
