"""RFC 3464 delivery status notices: what the practice sees when mail failed.

Pure functions over bytes (no files, no sockets). When a message fails for
good (a 5xx reply, a temporary failure that lasted past `send.give_up_after`,
or some of its recipients refused), the sender builds a notice here and
delivers it into the local `receive.maildir`, where the practice reads it
like any bounce. It never goes over SMTP, so it costs nothing against the
sending limit.

The notice is a `multipart/report; report-type=delivery-status` (RFC 3462 /
RFC 6522) with three parts: a human-readable explanation, the
machine-readable `message/delivery-status` (RFC 3464), and the headers of
the original message (`text/rfc822-headers`: never the body, which may be
large or hold attachments).

Never a notice about a notice: `is_notice()` recognises delivery reports and
auto-submitted mail (RFC 3834), and the sender builds none for those.
"""

from __future__ import annotations

import email.utils
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

# An enhanced status code (RFC 3463) at the start of a reply text, e.g. "5.1.1".
_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
# Anything a header field value must not carry: line breaks and controls.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]+")
MAX_DIAGNOSTIC = 900  # well under the 998-octet line limit


@dataclass(frozen=True)
class Failure:
    """One recipient the message did not reach, and the server's word on it."""

    recipient: str
    code: int  # the SMTP reply code; 0 when there was none (connection failures)
    text: str  # the reply text, or our own explanation

    @property
    def status(self) -> str:
        """The RFC 3463 status: the server's enhanced code, else one from the reply class."""
        m = _ENHANCED.match(self.text)
        if m and (self.code == 0 or m.group(1) == str(self.code)[0]):
            return ".".join(m.groups())
        if 500 <= self.code < 600:
            return "5.0.0"
        # A temporary failure we gave up on: 4.4.7 "delivery time expired".
        return "4.4.7"

    @property
    def diagnostic(self) -> str:
        text = f"{self.code} {self.text}" if self.code else self.text
        return _clean(text)[:MAX_DIAGNOSTIC]


def _clean(text: str) -> str:
    """One safe header line: controls folded to spaces, ASCII only."""
    text = _UNSAFE.sub(" ", text).strip()
    return text.encode("ascii", "replace").decode("ascii")


def _headers_of(raw: bytes) -> bytes:
    """The header section of a message, CRLF line endings, without the blank line."""
    m = _HEADER_END.search(raw)
    head = raw[: m.start()] if m else raw[:65536]
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    return b"".join(line + b"\r\n" for line in lines if line)


def _field(raw_headers: bytes, name: str) -> str:
    """The (unfolded) value of the first header field `name`, '' if absent."""
    text = raw_headers.decode("ascii", "replace")
    m = re.search(
        rf"(?im)^{re.escape(name)}[ \t]*:[ \t]*(.*(?:\r?\n[ \t].*)*)",
        text,
    )
    if not m:
        return ""
    return re.sub(r"\r?\n[ \t]+", " ", m.group(1)).strip()


def is_notice(raw: bytes) -> bool:
    """True for a delivery report or an auto-submitted message: it gets no notice.

    RFC 3464 section 2 (no DSN about a DSN) and RFC 3834 (no automatic
    response to an automatic message).
    """
    head = _headers_of(raw)
    ctype = _field(head, "Content-Type").lower()
    if ctype.startswith("multipart/report") and re.search(
        r"report-type\s*=\s*\"?delivery-status", ctype
    ):
        return True
    auto = _field(head, "Auto-Submitted").lower()
    return bool(auto) and not auto.startswith("no")


def build(
    original: bytes,
    failures: Sequence[Failure],
    *,
    to: str,
    reporting_host: str,
    now: float,
    delivered_to: Sequence[str] = (),
    arrival: float | None = None,
) -> bytes:
    """The notice, as bytes ready for a Maildir (CRLF line endings).

    `to` is the practice's own address (the notice's reader); `delivered_to`
    names recipients that did get the message, for a partial failure.
    """
    if not failures:
        raise ValueError("a failure notice needs at least one failed recipient")
    head = _headers_of(original)
    subject = _clean(_field(head, "Subject")) or "(no subject)"
    orig_id = _clean(_field(head, "Message-ID"))
    host = _clean(reporting_host) or "localhost"
    boundary = f"=_exactmaild_{uuid.uuid4().hex}"
    date = email.utils.formatdate(now, localtime=True)
    msgid = email.utils.make_msgid("dsn", domain=to.rpartition("@")[2] or host)
    to = _clean(to)

    header = [
        f"From: Mail Delivery System <{to}>",
        f"To: {to}",
        f"Subject: Undelivered mail: {subject}"[:900],
        f"Date: {date}",
        f"Message-ID: {msgid}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ]
    if orig_id:
        header.append(f"In-Reply-To: {orig_id}"[:900])
        header.append(f"References: {orig_id}"[:900])

    human = [
        "This is the mail system of exactmaild.",
        "",
        "The message below could not be delivered to "
        + ("this recipient:" if len(failures) == 1 else "these recipients:"),
        "",
    ]
    for f in failures:
        human.append(f"  {_clean(f.recipient)}")
        human.append(f"    {f.diagnostic}")
    if delivered_to:
        human += ["", "It was delivered to:", ""]
        human += [f"  {_clean(r)}" for r in delivered_to]
    human += [
        "",
        f"Subject: {subject}"[:900],
        "",
        "Nothing more will be tried for the recipients above. Check the address",
        "or the server's reply, then send the message again if it should go.",
    ]

    status = [f"Reporting-MTA: dns; {host}"]
    if arrival is not None:
        status.append(f"Arrival-Date: {email.utils.formatdate(arrival, localtime=True)}")
    for f in failures:
        status += [
            "",
            f"Final-Recipient: rfc822; {_clean(f.recipient)}",
            "Action: failed",
            f"Status: {f.status}",
            f"Diagnostic-Code: smtp; {f.diagnostic}",
            f"Last-Attempt-Date: {date}",
        ]

    parts = [
        "\r\n".join(header),
        "",
        "This is a MIME-encapsulated delivery status notification.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=us-ascii",
        "Content-Description: Notification",
        "",
        "\r\n".join(human),
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "Content-Description: Delivery report",
        "",
        "\r\n".join(status),
        "",
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        "Content-Description: Undelivered message headers",
        "",
    ]
    text = "\r\n".join(parts).encode("ascii", "replace") + b"\r\n"
    # The original headers go as they are (they are ASCII for anything we sent).
    return text + head + f"\r\n--{boundary}--\r\n".encode("ascii")
