"""Logging: structlog, JSON lines for the journal and files, readable on a terminal.

One event per state change, with the queue id and Message-ID as fields, so
`journalctl -o json` or any log shipper can follow a message. Secrets are
never passed to the logger; as a second line of defence a processor redacts
any field whose name looks like it holds one.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, TextIO

from exactmaild.config.model import LogConfig

# structlog as exactmaild.core.log imported it: without rich (see there).
from exactmaild.core.log import Log, get_log, structlog

_SECRET_KEYS = ("password", "secret", "token", "authorization")
_file: TextIO | None = None  # the log file configure() opened, if any
_retired: TextIO | None = None  # the one before, closed at the next configure()


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if any(s in key.lower() for s in _SECRET_KEYS):
            event[key] = "[redacted]"
    return event


def configure(cfg: LogConfig, *, stream: TextIO | None = None) -> None:
    """Set up structlog for the whole process (called once at start and on reload)."""
    global _file, _retired
    out: TextIO
    previous = _file
    if cfg.file is not None:
        cfg.file.parent.mkdir(parents=True, exist_ok=True)
        out = _file = Path(cfg.file).open("a", encoding="utf-8", buffering=1)  # noqa: SIM115
    else:
        out = stream or sys.stdout
        _file = None
    fmt = cfg.format
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    level = getattr(logging, cfg.level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    # Each reload reopens the file (so logrotate's move is followed); close the
    # file before the previous one, or every SIGHUP leaks a descriptor. Not the
    # previous one itself: another thread may be writing its last line to it.
    if _retired is not None:
        _retired.close()
    _retired = previous


def get(name: str = "exactmaild") -> Log:
    """The logger named `name`, as `configure` set it up."""
    return get_log(name)
