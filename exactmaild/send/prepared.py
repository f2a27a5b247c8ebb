"""A message prepared for SMTP (`Prepared`), and the header basics that
both preparation paths (`send/message.py`, `send/fastpath.py`) read the
same way."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Headers a message needs to be worth sending: at least one of these.
RECIPIENT_FIELDS = ("to", "cc", "bcc")


@dataclass(frozen=True)
class Prepared:
    """A message ready for the SMTP transaction."""

    sender: str
    recipients: tuple[str, ...]
    message_id: str
    data: bytes  # CRLF line endings, Bcc removed, signature appended


def split_header(raw: bytes) -> tuple[bytes, bytes]:
    """The header section and body, at the first empty line (CRLF or bare LF)."""
    m = re.search(rb"\r?\n\r?\n", raw)
    if m is None:
        return raw, b""
    return raw[: m.start()], raw[m.end() :]
