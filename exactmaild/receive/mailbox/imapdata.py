"""IMAP data, without the connection: fingerprints, folder names, UID sets, dates.

The pure helpers of the IMAP adapter (`imap.py`, the only user of imaplib
here): what identifies a message across a folder rebuild, how a folder name
is quoted (modified UTF-7, RFC 3501 5.1.3), how a UID set or a SEARCH date is
written, and how numbers and times are read back from replies.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Iterable
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import parsedate_to_datetime
from typing import Any


def fingerprint(data: bytes) -> str:
    """What identifies a message across a folder rebuild: its Message-ID, or its header hash.

    Works on a whole message and on its header block alike (the header is
    everything before the first empty line), so a header-only fetch and a
    full fetch of the same message give the same fingerprint.
    """
    text = data.replace(b"\r\n", b"\n")
    head = text.split(b"\n\n", 1)[0].strip(b"\n")
    mid = BytesHeaderParser(policy=compat32).parsebytes(head + b"\n\n").get("Message-ID")
    if mid is not None and str(mid).strip():
        return "mid:" + " ".join(str(mid).split())
    return "sha256:" + hashlib.sha256(head).hexdigest()


def quote_mailbox(name: str) -> str:
    """A folder name as an IMAP quoted string, in modified UTF-7 (RFC 3501 5.1.3)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    encoded = "".join(out).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{encoded}"'


def ints(data: Iterable[object]) -> list[int]:
    out: list[int] = []
    for item in data:
        if isinstance(item, bytes):
            out.extend(int(x) for x in item.split() if x.isdigit())
    return out


def last_int(data: list[Any] | None) -> int | None:
    if not data:
        return None
    value = data[-1]
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def uid_set(uids: list[int]) -> str:
    """A compact UID set: 1:5,8,10:12."""
    parts: list[str] = []
    start = prev = uids[0]
    for u in uids[1:]:
        if u == prev + 1:
            prev = u
            continue
        parts.append(f"{start}:{prev}" if prev != start else str(start))
        start = prev = u
    parts.append(f"{start}:{prev}" if prev != start else str(start))
    return ",".join(parts)


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def imap_date(day: dt.date) -> str:
    # Not strftime("%b"): the month names must be English whatever the locale.
    return f"{day.day}-{_MONTHS[day.month - 1]}-{day.year}"


def norm_mid(mid: str) -> str:
    return mid.strip().strip("<>").strip()


def header_time(value: object) -> float | None:
    if value is None:
        return None
    try:
        when = parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": the time is UTC, the zone unknown
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()
