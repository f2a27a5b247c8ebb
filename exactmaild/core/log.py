"""The type of a log handle, so every module that is handed a logger says what it expects.

`Log` is structlog's `FilteringBoundLogger` protocol: what
`structlog.make_filtering_bound_logger` builds and what
`exactmaild.daemon.logs.configure` sets up for the whole process (debug,
info, warning, error, exception, critical, bind, each taking the event name
and fields). `get_log` returns one by name; structlog itself types
`get_logger` as `Any`, which would let any misuse of a handle through.
"""

from __future__ import annotations

import structlog as structlog
from structlog.typing import FilteringBoundLogger

# structlog's console renderer uses rich for tracebacks when it is installed
# beside it; exactmaild formats exceptions itself. Nothing exactmaild ships
# or tests with installs rich (import-linter, which would, has a venv of its
# own: requirements/lint.in), so no daemon carries its ~5 MB.

Log = FilteringBoundLogger


def get_log(name: str = "exactmaild") -> Log:
    """The process's logger named `name` (configured or not: structlog defers that)."""
    log: Log = structlog.get_logger(name)
    return log


__all__ = ["Log", "get_log", "structlog"]
