"""Message preparation: Bcc stripped, IDs and dates added, the signature once
in the text and the HTML part, CRLF for SMTP, bad input refused."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest

from exactmaild.errors import BadMessage
from exactmaild.message import prepare

SIG = "Smiles Dental\n01234 567890"


def prep(raw: bytes, signature: str | None = SIG) -> tuple[bytes, EmailMessage]:
    p = prepare(
        raw,
        sender="reception@practice.example",
        display_name="Smiles Dental",
        signature=signature,
        max_size=100_000,
    )
    msg = BytesParser(policy=policy.default).parsebytes(p.data)
    assert isinstance(msg, EmailMessage)
    return p.data, msg


def test_plain_message_gets_headers_signature_and_crlf() -> None:
    data, msg = prep(b"To: a@example.org\nBcc: b@example.org\nSubject: hi\n\nHello\n")
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    assert msg["bcc"] is None and b"b@example.org" not in data
    assert msg["message-id"] and msg["date"]
    assert msg["from"] == "Smiles Dental <reception@practice.example>"
    body = msg.get_body(("plain",))
    assert body is not None
    text = body.get_content().replace("\r\n", "\n")
    assert text.count("Smiles Dental") == 1 and text.endswith("01234 567890\n")
    assert "\n-- \n" in text


def test_existing_headers_are_kept() -> None:
    raw = (
        b"From: Dr Who <dr@practice.example>\nTo: a@example.org\n"
        b"Message-ID: <fixed@practice.example>\nDate: Mon, 1 Jun 2026 10:00:00 +0100\n"
        b"Subject: x\n\nbody\n"
    )
    p = prepare(
        raw,
        sender="reception@practice.example",
        display_name=None,
        signature=None,
        max_size=100_000,
    )
    assert p.message_id == "<fixed@practice.example>"
    assert b"Date: Mon, 1 Jun 2026 10:00:00 +0100" in p.data
    assert b"From: Dr Who <dr@practice.example>" in p.data


def test_signature_once_in_text_and_html_parts() -> None:
    m = EmailMessage()
    m["To"] = "a@example.org"
    m["Subject"] = "alt"
    m.set_content("Plain body\n")
    m.add_alternative("<html><body><p>HTML body</p></body></html>", subtype="html")
    m.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename="x.pdf")
    _, msg = prep(m.as_bytes())
    plain = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content().count("Smiles Dental") == 1
    h = html.get_content()
    assert h.count("Smiles Dental") == 1 and h.index("Smiles Dental") < h.lower().index("</body>")
    att = next(msg.iter_attachments())
    assert att.get_content() == b"%PDF-1.4 fake"


def test_recipients_deduplicated_and_skipped() -> None:
    p = prepare(
        b"To: a@example.org, B <b@example.org>\nCc: a@example.org\nBcc: c@example.org\n\nx\n",
        sender="r@practice.example",
        display_name=None,
        signature=None,
        max_size=1000,
        skip_recipients=("b@example.org",),
    )
    assert p.recipients == ("a@example.org", "c@example.org")


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "empty"),
        (b"   \n\n", "empty"),
        (b"hello world\n", "RFC 5322"),
        (b"To: a@example.org\nthis line is no header\n\nbody", "header line 2"),
        (b"Subject: x\n\nbody", "no recipient"),
        (b"To: a@example.org\n\n" + b"x" * 2000, "larger"),
        (b"To: a@example.org\n\nNUL \0 here", "NUL"),
        ("To: Zoë <z@example.org>\n\nbody".encode(), "8-bit"),
    ],
)
def test_refused(raw: bytes, why: str) -> None:
    with pytest.raises(BadMessage, match=why):
        prepare(raw, sender="r@practice.example", display_name=None, signature=None, max_size=1000)
