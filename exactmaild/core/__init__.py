"""The pure core: the arithmetic exactmaild exists for, with no I/O.

Every function takes `now` (unix seconds) and data, so the cap, the pacing,
the opening hours and the back-offs are tested with tables and properties,
DST days included. Nothing here imports anything else of exactmaild.

Imported on first use (PEP 562): every part imports `core.errors`, and the
command line must not pay for the limit windows, the opening hours and
zoneinfo to get it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from exactmaild.core.lazy import lazy_attributes

if TYPE_CHECKING:
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
    from exactmaild.core.schedule import (
        describe_next,
        is_open,
        next_check,
        next_open,
        next_send_time,
    )
    from exactmaild.core.states import PUBLIC_NAME, STATES, State

_WHERE = {
    "Clock": "clock",
    "SystemClock": "clock",
    "AccountFailure": "errors",
    "BadMessage": "errors",
    "ConfigError": "errors",
    "ExactmailError": "errors",
    "PermanentFailure": "errors",
    "Problem": "errors",
    "TemporaryFailure": "errors",
    "UnknownOutcome": "errors",
    "ALL_DAYS": "hours",
    "Schedule": "hours",
    "Weekday": "hours",
    "Window": "hours",
    "DAY": "limits",
    "LIMIT_WINDOWS": "limits",
    "Ledger": "limits",
    "LimitWindow": "limits",
    "window_bounds": "limits",
    "format_seconds": "pacing",
    "plan": "pacing",
    "AccountPause": "pause",
    "given_up": "retry",
    "retry_interval": "retry",
    "describe_next": "schedule",
    "is_open": "schedule",
    "next_check": "schedule",
    "next_open": "schedule",
    "next_send_time": "schedule",
    "PUBLIC_NAME": "states",
    "STATES": "states",
    "State": "states",
}
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

__getattr__ = lazy_attributes(__name__, _WHERE)
