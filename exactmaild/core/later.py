"""Mail for later: the time a message may go, from its `Deferred-Delivery:`
header (RFC 4021) or `exactmaild submit --at`.

Pure: bytes and text in, a POSIX time out. The header is the one record of
a message's time (the spool's `later/` directory only says that a message
waits for one), so a crash can never separate a message from its time:
whoever meets the message reads it again from the message itself.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
from zoneinfo import ZoneInfo

from exactmaild.core.errors import BadMessage, UsageError
from exactmaild.core.limits import local_instant

HEADER = "Deferred-Delivery"
# How much of a message is read for its time: a header section longer than
# this is not mail a practice writes, and the field is searched in what fits.
HEAD_LIMIT = 64 * 1024
_FIELD = re.compile(rb"(?im)^deferred-delivery[ \t]*:[ \t]*(.*(?:\r?\n[ \t].*)*)(?:\r?\n|\Z)")
_BLANK = re.compile(rb"\r?\n\r?\n")
_FORMATS = '"YYYY-MM-DD HH:MM" or ISO 8601 with an offset (2026-12-02T08:30+01:00)'


def _head(raw: bytes) -> bytes:
    m = _BLANK.search(raw)
    return raw[: m.start() + 1] if m else raw


def deferred_until(raw: bytes) -> float | None:
    """The time in a message's first Deferred-Delivery field (None: it has none).

    Raises BadMessage for a field whose date cannot be read: such a message
    is failed with the reason, never sent before a time nobody can tell.
    """
    head = _head(raw)
    if b"eferred-" not in head and b"EFERRED-" not in head:
        return None  # the usual case, without the regular expression
    m = _FIELD.search(head)
    if m is None:
        return None
    value = re.sub(rb"\r?\n[ \t]+", b" ", m.group(1)).decode("ascii", "replace").strip()
    return parse_date(value)


def parse_date(value: str) -> float:
    """An RFC 5322 date-time (a zone of -0000, "unknown", counts as UTC)."""
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        raise BadMessage(
            f"its {HEADER} header {value!r} is not an RFC 5322 date "
            "(like 'Wed, 02 Dec 2026 08:30:00 +0100'); correct the header, or remove it "
            "to send the message now, and queue the message again"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def parse_at(text: str, tz: ZoneInfo) -> float:
    """`submit --at`: a local time of the config's zone ("2026-12-02 08:30",
    seconds optional; a date alone is its midnight), or ISO 8601 with an
    offset or Z. A local time the clocks skip is the moment they change
    (`core.limits.local_instant`); one they repeat is the first of the two."""
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"--at {text!r} is not a time: give {_FORMATS}; a time without an offset "
            f"is local time in {tz.key} (the config's timezone)"
        ) from None
    if when.tzinfo is None:
        return local_instant(when.date(), when.time(), tz)
    return when.timestamp()


def with_time(raw: bytes, at: float, tz: ZoneInfo) -> bytes:
    """The message with one Deferred-Delivery field saying `at` (as local time
    in `tz`, with its offset), any it had before replaced."""
    head = _head(raw)
    rest = raw[len(head) :]
    head = _FIELD.sub(b"", head)
    stamp = email.utils.format_datetime(dt.datetime.fromtimestamp(round(at), tz))
    return f"{HEADER}: {stamp}\n".encode("ascii") + head + rest


__all__ = ["HEADER", "HEAD_LIMIT", "deferred_until", "parse_at", "parse_date", "with_time"]
