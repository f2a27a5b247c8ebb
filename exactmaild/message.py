"""Outgoing messages: validate what producers dropped, and prepare it for SMTP.

Pure functions over bytes: no files, no sockets. The spool hands in the raw
file; this module says why it is unusable (`BadMessage`) or returns the
envelope and the exact bytes to send: Bcc stripped, Message-ID and Date added
when missing, the practice signature appended once, CRLF line endings.
"""

from __future__ import annotations

import email.utils
import html
import re
from dataclasses import dataclass
from email import policy
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.parser import BytesParser
from io import BytesIO

from exactmaild.errors import BadMessage

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


def _append_signature(msg: EmailMessage, signature: str) -> None:
    """Append the signature to the text body and, when there is one, the HTML body."""
    plain = msg.get_body(preferencelist=("plain",))
    if isinstance(plain, EmailMessage) and not plain.is_attachment():
        text = plain.get_content()
        sep = "" if text.endswith("\n") else "\n"
        plain.set_content(text + sep + "\n-- \n" + signature.rstrip("\n") + "\n", subtype="plain")
    htmlpart = msg.get_body(preferencelist=("html",))
    if isinstance(htmlpart, EmailMessage) and not htmlpart.is_attachment():
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
) -> Prepared:
    """Validate a spooled message and build what goes over SMTP.

    `skip_recipients` are recipients that already have this message (a
    partial send earlier): they are never sent to again.
    """
    check_raw(raw, max_size)
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
    if msg["from"] is None:
        msg["From"] = email.utils.formataddr((display_name or "", sender))
    if msg["date"] is None:
        msg["Date"] = email.utils.formatdate(localtime=True)
    if msg["message-id"] is None:
        msg["Message-ID"] = email.utils.make_msgid(domain=sender.rpartition("@")[2] or None)
    if signature:
        try:
            _append_signature(msg, signature)
        except (KeyError, LookupError, ValueError) as exc:
            # An unknown charset or a broken part: send it as it is rather than fail it.
            del exc
    out = BytesIO()
    BytesGenerator(out, policy=policy.SMTP.clone(linesep="\r\n")).flatten(msg)
    return Prepared(sender, tuple(rcpts), str(msg["message-id"]).strip(), out.getvalue())


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
