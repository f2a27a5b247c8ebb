"""Outgoing messages: validate what producers dropped, and prepare it for SMTP.

Pure functions over bytes: no files, no sockets. The spool hands in the raw
file; this module says why it is unusable (`BadMessage`) or returns the
envelope and the exact bytes to send: Bcc and Deferred-Delivery (RFC 4021,
the daemon's own instruction) stripped, Message-ID and Date added
when missing, the practice signature appended once, CRLF line endings.
"""

from __future__ import annotations

import email.utils
import re
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from io import BytesIO

from exactmaild.core.errors import BadMessage
from exactmaild.core.later import deferred_until
from exactmaild.send.fastpath import SMTP_POLICY, Unusual, prepare_fast
from exactmaild.send.prepared import RECIPIENT_FIELDS, Prepared, split_header

# A header field line: a printable-ASCII name, a colon. Continuation lines start with WSP.
_FIELD = re.compile(rb"^[\x21-\x39\x3b-\x7e]+[ \t]*:")


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
    head, _ = split_header(raw)
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
            return prepare_fast(raw, sender, display_name, skip_recipients, date, message_id)
        except Unusual:
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
    if not any(msg.get(name) for name in RECIPIENT_FIELDS):
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
    BytesGenerator(out, policy=SMTP_POLICY).flatten(msg)
    return Prepared(sender, tuple(rcpts), str(msg["message-id"]).strip(), out.getvalue())


def message_id_of(raw: bytes) -> str:
    """The Message-ID of a raw message, cheaply, for logs and listings ('' if none)."""
    head, _ = split_header(raw)
    m = re.search(rb"(?im)^message-id:[ \t]*(.*(?:\r?\n[ \t].*)*)", head)
    return m.group(1).decode("ascii", "replace").strip() if m else ""


def summary_headers(raw: bytes) -> dict[str, str]:
    """From, To, Subject, Message-ID for `queue list` / `queue show`."""
    head, _ = split_header(raw)
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
