"""SMTP on the wire: addresses as MAIL/RCPT take them, the DATA payload, reply text.

Byte-level helpers of the SMTP transport, kept apart so the transport itself
holds only the conversation. smtplib does the same work per call with more
parsing; these are what a send costs per message.
"""

from __future__ import annotations

import email.utils
import re

# An address quoteaddr() returns as "<address>" without parsing it.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDR = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_ATOM}(?:\.{_ATOM})*")
_LINE_ENDS = re.compile(rb"\r\n|\n|\r(?!\n)")
_LEADING_DOT = re.compile(rb"(?m)^\.")


def quoteaddr(addr: str) -> str:
    """smtplib.quoteaddr() (the same parsing, the same result), with the common
    plain address taken as it is."""
    if _PLAIN_ADDR.fullmatch(addr):
        return f"<{addr}>"
    name, parsed = email.utils.parseaddr(addr)
    if (name, parsed) == ("", ""):
        return addr if addr.strip().startswith("<") else f"<{addr}>"
    return f"<{parsed}>"


def text_of(raw: bytes | str) -> str:
    """A reply's text as a string, whatever smtplib handed back."""
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def payload(data: bytes) -> bytes:
    """The DATA payload with the final dot: smtplib.quotedata() on bytes."""
    body = _LEADING_DOT.sub(b"..", _LINE_ENDS.sub(b"\r\n", data))
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"
