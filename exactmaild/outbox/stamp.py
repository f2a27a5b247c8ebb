"""Message-ID and Date, assigned once: the header fields a queued message lacks.

Most applications drop their mail without a Message-ID or a Date. Made
afresh at every attempt, a retried message would carry the time of its last
try, and a crash duplicate (the one a crash may cost) a second Message-ID,
so the recipient's mail client could not tell the two copies for one.

Both are derived from the spooled file itself rather than made and stored:
the Date is when the file was queued (its mtime, which every rename through
the spool keeps, as Postfix dates a message at its arrival), and the
Message-ID is a digest of the file's name, inode and mtime, which no
attempt, deferral or crash recovery changes. So every attempt, and a copy
re-sent after a crash, carries the same two fields at no cost: writing them
into the file instead took one more synced file a message (a third of the
drain's throughput on a busy disk) and the producer's ownership of it.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

# A header field's name, at the start of a line (continuations start with WSP).
_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:", re.MULTILINE)
_END_OF_HEADER = re.compile(rb"\r?\n\r?\n")


@dataclass(frozen=True)
class Born:
    """What identifies one spooled file for good: its name, inode and mtime
    (ns). Renames keep all three; a new file under an old name changes them."""

    name: str
    ino: int
    mtime_ns: int


@dataclass(frozen=True)
class Stamp:
    """The Date and Message-ID a message lacked (None: it has its own)."""

    date: str | None = None
    message_id: str | None = None


def missing_headers(raw: bytes, born: Born, *, domain: str | None, timezone: str) -> Stamp:
    """The Date and Message-ID `raw` lacks, the same for every attempt: the
    Date is the file's queued time in `timezone`, the Message-ID a digest of
    `born` at `domain` (the account's), unique as RFC 5322 3.6.4 asks."""
    end = _END_OF_HEADER.search(raw)
    head = raw if end is None else raw[: end.start()]
    names = {m.group(1).lower() for m in _NAME.finditer(head)}
    date = message_id = None
    queued = dt.datetime.fromtimestamp(born.mtime_ns / 1e9, ZoneInfo(timezone))
    if b"date" not in names:
        date = email.utils.format_datetime(queued.replace(microsecond=0))
    if b"message-id" not in names:
        key = f"{born.name}\0{born.ino}\0{born.mtime_ns}".encode("utf-8", "surrogateescape")
        digest = hashlib.blake2b(key, digest_size=10).hexdigest()
        message_id = f"<{queued.astimezone(dt.UTC):%Y%m%d%H%M%S}.{digest}@{domain or 'localhost'}>"
    return Stamp(date, message_id)


__all__ = ["Born", "Stamp", "missing_headers"]
