"""Message-ID and Date, assigned once: the header lines a queued message lacks.

Most applications drop their mail without a Message-ID or a Date. Made
afresh at every attempt, a retried message would carry the time of its last
try, and a crash duplicate (the one a crash may cost) a second Message-ID,
so the recipient's mail client could not tell the two copies for one.
`missing_headers()` makes the values a message lacks when the sender first
prepares it (`prepare()` adds them to what is sent); the Outbox writes them
into the spooled file as it claims the message (`Spool.rewrite()`, before
anything goes to the server), so every later attempt, and a copy re-sent
after a crash, reads the same two fields.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from exactmaild.core.states import ACTIVE

if TYPE_CHECKING:
    from exactmaild.outbox.claim import Claim
    from exactmaild.outbox.spool import Spool

# A header field's name, at the start of a line (continuations start with WSP).
_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:", re.MULTILINE)
_END_OF_HEADER = re.compile(rb"\r?\n\r?\n")


@dataclass(frozen=True)
class Stamp:
    """The Date and Message-ID a message lacked (None: it has its own), made
    once, and the line ending of its file."""

    date: str | None = None
    message_id: str | None = None
    eol: bytes = b"\n"

    def lines(self) -> bytes:
        """The header lines to write into the spooled file (b"": none)."""
        out = b""
        if self.date is not None:
            out += b"Date: " + self.date.encode("ascii") + self.eol
        if self.message_id is not None:
            out += b"Message-ID: " + self.message_id.encode("ascii") + self.eol
        return out


def missing_headers(raw: bytes, *, domain: str | None, now: float, timezone: str) -> Stamp:
    """The Date and Message-ID `raw` lacks, made now: the Date is `now` in
    `timezone`, the Message-ID one of `domain` (the account's), as RFC 5322
    3.6.4 suggests."""
    end = _END_OF_HEADER.search(raw)
    head = raw if end is None else raw[: end.start()]
    names = {m.group(1).lower() for m in _NAME.finditer(head)}
    date = message_id = None
    if b"date" not in names:
        date = email.utils.format_datetime(dt.datetime.fromtimestamp(now, ZoneInfo(timezone)))
    if b"message-id" not in names:
        message_id = email.utils.make_msgid(domain=domain)
    eol = b"\r\n" if raw.split(b"\n", 1)[0].endswith(b"\r") else b"\n"
    return Stamp(date, message_id, eol)


def write_back(spool: Spool, claim: Claim, data: bytes) -> None:
    """Write a just-claimed message's content with its stamp (`data`) into
    its file in active/, durably, before anything goes to the server. If
    storage refuses, the message goes back where it came from, unsent, and
    the error is raised for the sender's storage handling."""
    try:
        spool.rewrite(ACTIVE, claim.name, data)
    except OSError:
        claim.give_back()
        raise


__all__ = ["Stamp", "missing_headers", "write_back"]
