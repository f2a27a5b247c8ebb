"""The pure core: the arithmetic exactmaild exists for, with no I/O.

Every function takes `now` (unix seconds) and data, so the cap, the pacing,
the opening hours and the back-offs are tested with tables and properties,
DST days included. Nothing here imports anything else of exactmaild.
"""

from exactmaild.core.clock import Clock, SystemClock
from exactmaild.core.errors import (
    AccountFailure,
    BadMessage,
    ConfigError,
    ExactmailError,
    PermanentFailure,
    Problem,
    TemporaryFailure,
    UnknownOutcome,
)
from exactmaild.core.hours import ALL_DAYS, Schedule, Weekday, Window
from exactmaild.core.limits import DAY, LIMIT_WINDOWS, Ledger, LimitWindow, window_bounds
from exactmaild.core.pacing import format_seconds, plan
from exactmaild.core.pause import AccountPause
from exactmaild.core.retry import given_up, retry_interval
from exactmaild.core.schedule import describe_next, is_open, next_check, next_open, next_send_time
from exactmaild.core.states import PUBLIC_NAME, STATES, State

__all__ = [
    "ALL_DAYS",
    "DAY",
    "LIMIT_WINDOWS",
    "PUBLIC_NAME",
    "STATES",
    "AccountFailure",
    "AccountPause",
    "BadMessage",
    "Clock",
    "ConfigError",
    "ExactmailError",
    "Ledger",
    "LimitWindow",
    "PermanentFailure",
    "Problem",
    "Schedule",
    "State",
    "SystemClock",
    "TemporaryFailure",
    "UnknownOutcome",
    "Weekday",
    "Window",
    "describe_next",
    "format_seconds",
    "given_up",
    "is_open",
    "next_check",
    "next_open",
    "next_send_time",
    "plan",
    "retry_interval",
    "window_bounds",
]
