"""Outgoing messages: validate what producers dropped, and prepare it for SMTP.

Pure functions over bytes: no files, no sockets. The spool hands in the raw
file; this module says why it is unusable (`BadMessage`) or returns the
envelope and the exact bytes to send: Bcc and Deferred-Delivery (RFC 4021,
the daemon's own instruction) stripped, Message-ID and Date added
when missing, the practice signature appended once, CRLF line endings.
"""

from __future__ import annotations

import email.utils
import functools
import re
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from io import BytesIO
from typing import Any

from exactmaild.core.errors import BadMessage
from exactmaild.core.later import deferred_until

# A header field line: a printable-ASCII name, a colon. Continuation lines start with WSP.
_FIELD = re.compile(rb"^[\x21-\x39\x3b-\x7e]+[ \t]*:")
# Headers a message needs to be worth sending: at least one of these.
_RECIPIENT_FIELDS = ("to", "cc", "bcc")


@dataclass(frozen=True)
class Prepared:
    """A message ready for the SMTP transaction."""

    sender: str
    recipients: tuple[str, ...]
    message_id: str
    data: bytes  # CRLF line endings, Bcc removed, signature appended


def _split_header(raw: bytes) -> tuple[bytes, bytes]:
    """The header section and body, at the first empty line (CRLF or bare LF)."""
    m = re.search(rb"\r?\n\r?\n", raw)
    if m is None:
        return raw, b""
    return raw[: m.start()], raw[m.end() :]


def check_raw(raw: bytes, max_size: int) -> None:
    """Refuse what can never be sent, before parsing. Raises BadMessage with the reason."""
    if not raw.strip():
        raise BadMessage("the file is empty")
    if len(raw) > max_size:
        raise BadMessage(
            f"the message is larger than spool.max_message_size ({max_size} bytes); "
            "shrink or split it, or raise the limit if the provider allows"
        )
    if b"\0" in raw:
        raise BadMessage("the message contains NUL bytes, which SMTP cannot carry")
    head, _ = _split_header(raw)
    lines = head.splitlines()
    if not lines or not _FIELD.match(lines[0]):
        raise BadMessage(
            "not an RFC 5322 message: it does not start with a header field "
            "such as 'To: someone@example.org'"
        )
    for n, line in enumerate(lines, 1):
        if line[:1] in (b" ", b"\t"):
            continue
        if not _FIELD.match(line):
            raise BadMessage(
                f"not an RFC 5322 message: header line {n} is not 'Name: value' "
                "(is a blank line missing between the headers and the body?)"
            )
    try:
        head.decode("ascii")
    except UnicodeDecodeError:
        raise BadMessage(
            "the header section contains 8-bit bytes; RFC 5322 headers must be ASCII "
            "(encode non-ASCII names and subjects with RFC 2047, as any mail library does)"
        ) from None


def parse(raw: bytes) -> EmailMessage:
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    return msg


def recipients(msg: EmailMessage) -> list[str]:
    """Envelope recipients: every address in To, Cc and Bcc, each once, in order."""
    fields: list[str] = []
    for name in ("to", "cc", "bcc"):
        fields.extend(str(v) for v in msg.get_all(name, []))
    seen: list[str] = []
    for _, addr in email.utils.getaddresses(fields):
        addr = addr.strip()
        if addr and "@" in addr and addr not in seen:
            seen.append(addr)
    return seen


def signature_text(signature: str) -> str:
    """The signature without its delimiter line, which exactmaild adds itself.

    A signature file may be written either way: with the conventional
    delimiter (`-- ` on a line of its own, RFC 3676 4.3; editors that strip
    trailing spaces leave `--`) as its first line, or without. Either way the
    message gets the delimiter once.
    """
    body = signature.lstrip("\r\n")
    first, _, rest = body.partition("\n")
    if first.rstrip() == "--":
        return rest
    return body


def _append_signature(msg: EmailMessage, signature: str) -> None:
    """Append the signature to the text body and, when there is one, the HTML body."""
    signature = signature_text(signature)
    plain = msg.get_body(preferencelist=("plain",))
    if isinstance(plain, EmailMessage) and not plain.is_attachment():
        text = plain.get_content()
        sep = "" if text.endswith("\n") else "\n"
        plain.set_content(text + sep + "\n-- \n" + signature.rstrip("\n") + "\n", subtype="plain")
    htmlpart = msg.get_body(preferencelist=("html",))
    if isinstance(htmlpart, EmailMessage) and not htmlpart.is_attachment():
        import html  # here: `submit` and exactmaild-sendmail import this module, not this

        body = htmlpart.get_content()
        block = (
            '<div class="signature">-- <br>'
            + html.escape(signature.rstrip("\n")).replace("\n", "<br>\n")
            + "</div>"
        )
        idx = body.lower().rfind("</body>")
        body = body[:idx] + block + body[idx:] if idx >= 0 else body + block
        htmlpart.set_content(body, subtype="html")


def prepare(
    raw: bytes,
    *,
    sender: str,
    display_name: str | None,
    signature: str | None,
    max_size: int,
    skip_recipients: tuple[str, ...] = (),
    date: str | None = None,
    message_id: str | None = None,
) -> Prepared:
    """Validate a spooled message and build what goes over SMTP.

    `skip_recipients` are recipients that already have this message (a
    partial send earlier): they are never sent to again. `date` and
    `message_id` are the values to add when the message lacks them (the
    ones assigned once, `outbox/stamp.py`); None: made now.

    Plain single-part messages without a signature to add (the common case)
    take a fast path that works on the header lines and the body bytes
    directly; it produces exactly what the slow, MIME-aware path produces
    (tests/test_message.py compares the two) and hands anything unusual to it.
    """
    check_raw(raw, max_size)
    deferred_until(raw)  # an unreadable Deferred-Delivery date fails the message
    if not signature:
        try:
            return _prepare_fast(raw, sender, display_name, skip_recipients, date, message_id)
        except _Unusual:
            pass
    return _prepare_slow(
        raw,
        sender=sender,
        display_name=display_name,
        signature=signature,
        skip_recipients=skip_recipients,
        date=date,
        message_id=message_id,
    )


def _prepare_slow(
    raw: bytes,
    *,
    sender: str,
    display_name: str | None,
    signature: str | None,
    skip_recipients: tuple[str, ...] = (),
    date: str | None = None,
    message_id: str | None = None,
) -> Prepared:
    """prepare() through the email package's object model (after check_raw)."""
    msg = parse(raw)
    if not any(msg.get(name) for name in _RECIPIENT_FIELDS):
        raise BadMessage("the message has no recipient: it needs a To, Cc or Bcc header")
    try:
        rcpts = recipients(msg)
    except Exception as exc:  # the header parser can raise on hostile input
        raise BadMessage(f"the recipient headers cannot be read: {exc}") from None
    if not rcpts:
        raise BadMessage("the message has no valid recipient address in To, Cc or Bcc")
    rcpts = [r for r in rcpts if r not in skip_recipients]
    del msg["bcc"]
    del msg["deferred-delivery"]
    if msg["from"] is None:
        msg["From"] = email.utils.formataddr((display_name or "", sender))
    if msg["date"] is None:
        msg["Date"] = date or email.utils.formatdate(localtime=True)
    if msg["message-id"] is None:
        domain = sender.rpartition("@")[2] or None
        msg["Message-ID"] = message_id or email.utils.make_msgid(domain=domain)
    if signature:
        try:
            _append_signature(msg, signature)
        except (KeyError, LookupError, ValueError) as exc:
            # An unknown charset or a broken part: send it as it is rather than fail it.
            del exc
    # Imported here: `submit` and exactmaild-sendmail only check and parse.
    from email.generator import BytesGenerator

    out = BytesIO()
    BytesGenerator(out, policy=_SMTP_POLICY).flatten(msg)
    return Prepared(sender, tuple(rcpts), str(msg["message-id"]).strip(), out.getvalue())


# -- the fast path ----------------------------------------------------------------------
#
# It calls the very policy functions the slow path goes through for each header
# (header_source_parse to read a field as the parser does, fold_binary to write
# it as the generator does), so headers come out byte for byte the same; what
# it skips is building the object model and the header registry's parse of
# every field. The registry still runs where its result matters and a field is
# not plainly simple (an address list with comments or groups, say).

_SMTP_POLICY = policy.SMTP.clone(linesep="\r\n")
_PARSE_POLICY = policy.default


class _Unusual(Exception):
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
    return _SMTP_POLICY.fold_binary(name, value)


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


def _prepare_fast(
    raw: bytes,
    sender: str,
    display_name: str | None,
    skip_recipients: tuple[str, ...],
    date: str | None = None,
    new_id: str | None = None,
) -> Prepared:
    m = re.search(rb"\r?\n\r?\n", raw)
    if m is None:
        raise _Unusual
    head, body = raw[: m.start()], raw[m.end() :]
    if _ODD_HEAD.search(head.replace(b"\r\n", b"\n")):
        raise _Unusual
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
            raise _Unusual  # "Name :" ends the header section for the parser
        fields.append((name, value))
    present = {n.lower() for n, _ in fields}
    ctypes = [v for n, v in fields if n.lower() == "content-type"]
    if len(ctypes) > 1 or (ctypes and not _PLAIN_CTYPE.fullmatch(_unfold(ctypes[0]))):
        raise _Unusual  # multipart or message/*: the generator rewrites those
    try:
        any_rcpt_field = False
        rcpts: list[str] = []
        for wanted in _RECIPIENT_FIELDS:
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
        raise _Unusual from None  # let the slow path meet (and report) whatever it is
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


def message_id_of(raw: bytes) -> str:
    """The Message-ID of a raw message, cheaply, for logs and listings ('' if none)."""
    head, _ = _split_header(raw)
    m = re.search(rb"(?im)^message-id:[ \t]*(.*(?:\r?\n[ \t].*)*)", head)
    return m.group(1).decode("ascii", "replace").strip() if m else ""


def summary_headers(raw: bytes) -> dict[str, str]:
    """From, To, Subject, Message-ID for `queue list` / `queue show`."""
    head, _ = _split_header(raw)
    try:
        msg = BytesParser(policy=policy.default).parsebytes(head + b"\n\n", headersonly=True)
    except Exception:
        return {}
    out = {}
    for name in ("From", "To", "Cc", "Subject", "Message-ID", "Date"):
        v = msg.get(name)
        if v is not None:
            out[name] = str(v)
    return out
