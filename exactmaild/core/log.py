"""The type of a log handle, so every module that is handed a logger says what it expects.

`Log` is structlog's `FilteringBoundLogger` protocol: what
`structlog.make_filtering_bound_logger` builds and what
`exactmaild.daemon.logs.configure` sets up for the whole process (debug,
info, warning, error, exception, critical, bind, each taking the event name
and fields). `get_log` returns one by name; structlog itself types
`get_logger` as `Any`, which would let any misuse of a handle through.
"""

from __future__ import annotations

import sys

# structlog imports rich (and better_exceptions) when they are installed, for
# pretty tracebacks in its console renderer. exactmaild formats exceptions
# itself (`format_exc_info`) and never asks for them, and rich alone costs each
# daemon about 5 MB and 50 ms at start. So they are hidden while structlog is
# imported (None in sys.modules reads as "not installed"), then unhidden for
# anyone else in the process. This module is the first to import structlog
# (exactmaild.daemon.logs takes it from here).
_HIDDEN = [name for name in ("rich", "better_exceptions") if name not in sys.modules]
sys.modules.update(dict.fromkeys(_HIDDEN))  # type: ignore[arg-type]
try:
    import structlog as structlog
    from structlog.typing import FilteringBoundLogger
finally:
    for _name in _HIDDEN:
        del sys.modules[_name]

Log = FilteringBoundLogger


def get_log(name: str = "exactmaild") -> Log:
    """The process's logger named `name` (configured or not: structlog defers that)."""
    log: Log = structlog.get_logger(name)
    return log


__all__ = ["Log", "get_log", "structlog"]
