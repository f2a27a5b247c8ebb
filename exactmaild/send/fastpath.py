"""The fast path of message preparation: plain single-part messages without
a signature to add (the common case), on the header lines and body bytes.

It calls the very policy functions the slow path goes through for each header
(header_source_parse to read a field as the parser does, fold_binary to write
it as the generator does), so headers come out byte for byte the same; what
it skips is building the object model and the header registry's parse of
every field. The registry still runs where its result matters and a field is
not plainly simple (an address list with comments or groups, say).
"""

from __future__ import annotations

import email.utils
import functools
import re
from email import policy
from typing import Any

from exactmaild.core.errors import BadMessage
from exactmaild.send.prepared import RECIPIENT_FIELDS, Prepared

SMTP_POLICY = policy.SMTP.clone(linesep="\r\n")
_PARSE_POLICY = policy.default


class Unusual(Exception):
    """The fast path does not handle this message: take the slow one."""


# Bytes that make the email package split lines where a plain reading would not.
_ODD_HEAD = re.compile(rb"[\r\x0b\x0c\x1c-\x1e]")
_LINE_END = re.compile(rb"\r\n|\r|\n")
# Content types the parser reads as one plain body (not multipart/*, message/*).
_PLAIN_CTYPE = re.compile(
    r"[ \t]*(?:text|application|image|audio|video)/[!#$%&'*+.^_`|~0-9A-Za-z-]+[ \t]*(?:;.*)?",
    re.IGNORECASE | re.DOTALL,
)
# A mailbox list the registry reads in the obvious way: addresses as dot-atoms,
# display names of atoms and plain quoted strings, no comments, no groups.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATOM}(?:\.{_ATOM})*"
_ADDR = rf"{_DOT_ATOM}@{_DOT_ATOM}"
_WORD = rf'(?:{_ATOM}|"[^"\\\r\n]*")'
_MAILBOX = rf"(?:{_WORD}(?:[ \t]+{_WORD})*[ \t]*<({_ADDR})>|({_ADDR}))"
_MAILBOX_LIST = re.compile(rf"[ \t]*{_MAILBOX}(?:[ \t]*,[ \t]*{_MAILBOX})*[ \t]*")
_MAILBOX_ONE = re.compile(rf"[ \t]*,?[ \t]*{_MAILBOX}")
_SIMPLE_MSGID = re.compile(r"<[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+>")


def _fold(name: str, value: Any) -> bytes:
    return SMTP_POLICY.fold_binary(name, value)


@functools.lru_cache(maxsize=16)
def _from_line(display_name: str | None, sender: str) -> bytes:
    value = email.utils.formataddr((display_name or "", sender))
    return _fold("From", _PARSE_POLICY.header_factory("From", value))


@functools.lru_cache(maxsize=4)
def _date_line(value: str) -> bytes:
    return _fold("Date", _PARSE_POLICY.header_factory("Date", value))


@functools.lru_cache(maxsize=16)
def _msgid_is_plain(domain: str | None) -> bool:
    """Whether make_msgid()'s ids for this domain fold as 'Message-ID: <id>' unchanged
    (the other parts of such an id are digits, so one sample decides)."""
    sample = email.utils.make_msgid(domain=domain)
    obj = _PARSE_POLICY.header_factory("Message-ID", sample)
    return str(obj) == sample and _fold("Message-ID", obj) == (
        b"Message-ID: " + sample.encode("ascii") + b"\r\n"
    )


def _unfold(value: str) -> str:
    """What the parser hands the header registry for a stored value."""
    return value.replace("\r", "").replace("\n", "")


def _addresses(name: str, value: str) -> tuple[bool, list[str]]:
    """(whether the field reads as non-empty, the addresses in it) as the slow
    path sees them through the registry."""
    flat = _unfold(value)
    if _MAILBOX_LIST.fullmatch(flat):
        return True, [a or b for a, b in _MAILBOX_ONE.findall(flat)]
    decoded = str(_PARSE_POLICY.header_factory(name, flat))
    return bool(decoded), [a for _, a in email.utils.getaddresses([decoded])]


def prepare_fast(
    raw: bytes,
    sender: str,
    display_name: str | None,
    skip_recipients: tuple[str, ...],
    date: str | None = None,
    new_id: str | None = None,
) -> Prepared:
    m = re.search(rb"\r?\n\r?\n", raw)
    if m is None:
        raise Unusual
    head, body = raw[: m.start()], raw[m.end() :]
    if _ODD_HEAD.search(head.replace(b"\r\n", b"\n")):
        raise Unusual
    # Group the physical lines into fields (check_raw vouched for their shape).
    groups: list[list[str]] = []
    for line in head.decode("ascii").replace("\r\n", "\n").split("\n"):
        if line[:1] in (" ", "\t"):
            groups[-1].append(line + "\n")
        else:
            groups.append([line + "\n"])
    fields: list[tuple[str, str]] = []
    for lines in groups:
        name, value = _PARSE_POLICY.header_source_parse(lines)
        if name != name.strip(" \t"):
            raise Unusual  # "Name :" ends the header section for the parser
        fields.append((name, value))
    present = {n.lower() for n, _ in fields}
    ctypes = [v for n, v in fields if n.lower() == "content-type"]
    if len(ctypes) > 1 or (ctypes and not _PLAIN_CTYPE.fullmatch(_unfold(ctypes[0]))):
        raise Unusual  # multipart or message/*: the generator rewrites those
    try:
        any_rcpt_field = False
        rcpts: list[str] = []
        for wanted in RECIPIENT_FIELDS:
            first = True
            for n, v in fields:
                if n.lower() != wanted:
                    continue
                nonempty, addrs = _addresses(wanted, v)
                if first:
                    any_rcpt_field = any_rcpt_field or nonempty
                    first = False
                for addr in addrs:
                    addr = addr.strip()
                    if addr and "@" in addr and addr not in rcpts:
                        rcpts.append(addr)
        msgids = [v for n, v in fields if n.lower() == "message-id"]
        if msgids:
            flat = _unfold(msgids[0])
            if _SIMPLE_MSGID.fullmatch(flat.strip()):
                message_id = flat.strip()
            else:
                message_id = str(_PARSE_POLICY.header_factory("message-id", flat)).strip()
    except Exception:
        raise Unusual from None  # let the slow path meet (and report) whatever it is
    if not any_rcpt_field:
        raise BadMessage("the message has no recipient: it needs a To, Cc or Bcc header")
    if not rcpts:
        raise BadMessage("the message has no valid recipient address in To, Cc or Bcc")
    rcpts = [r for r in rcpts if r not in skip_recipients]
    out = [_fold(n, v) for n, v in fields if n.lower() not in ("bcc", "deferred-delivery")]
    if "from" not in present:
        out.append(_from_line(display_name, sender))
    if "date" not in present:
        out.append(_date_line(date or email.utils.formatdate(localtime=True)))
    if "message-id" not in present:
        domain = sender.rpartition("@")[2] or None
        message_id = new_id or email.utils.make_msgid(domain=domain)
        if _msgid_is_plain(domain):
            out.append(b"Message-ID: " + message_id.encode("ascii") + b"\r\n")
        else:
            obj = _PARSE_POLICY.header_factory("Message-ID", message_id)
            message_id = str(obj).strip()
            out.append(_fold("Message-ID", obj))
    out.append(b"\r\n")
    out.append(_LINE_END.sub(b"\r\n", body))
    return Prepared(sender, tuple(rcpts), message_id, b"".join(out))
