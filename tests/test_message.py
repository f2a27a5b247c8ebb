"""Message preparation: Bcc stripped, IDs and dates added, the signature once
in the text and the HTML part, CRLF for SMTP, bad input refused."""

from __future__ import annotations

import re
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest

from exactmaild.core.errors import BadMessage
from exactmaild.send.message import prepare

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


# -- the fast path gives exactly what the MIME-aware path gives ---------------------

_EQUIV = [
    b"To: patient1@example.org\nSubject: Appointment reminder 1\n\nDear patient,\nsee you.\n",
    b"To: a@example.org\r\nSubject: crlf\r\n\r\nline one\r\nline two\r\n",
    b"To: a@example.org\nSubject: mixed\n\r\none\r\ntwo\nthree\rfour\n.leading dot\n..two\n",
    b"To: a@example.org\nSubject: no final newline\n\nlast line",
    b"To: a@example.org\nSubject: empty body\n\n",
    b"To: a@example.org,\n b@example.org,\n\tC Person <c@example.org>\nCc: d@example.org\n"
    b"Cc: e@example.org, a@example.org\nSubject: folded\n  over two lines\n\nx\n",
    b"To: a@example.org\nBcc: hidden@example.org,\n  hidden2@example.org\nSubject: bcc\n\nx\n",
    b"BCC: only@example.org\nSubject: bcc only\n\nx\n",
    b"To: =?utf-8?q?J=C3=B6rg?= <j@example.org>\nSubject: =?utf-8?b?SGVsbG8gV8O2cmxk?=\n\nx\n",
    b'To: "Smith, John" <js@example.org>, "Q. Person" <q@example.org>\nSubject: quoted\n\nx\n',
    b"To: a@example.org (a comment), Group: g1@example.org, g2@example.org;\nSubject: g\n\nx\n",
    b"To: <angle@example.org>\nSubject: bare angle\n\nx\n",
    b"To: a@example.org\nSubject: 8bit\nContent-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: 8bit\n\n" + "Grüße, Zoë\n".encode() + b"\xff raw\n",
    b"To: a@example.org\nSubject:no space\nX-Empty:\nX-Spaces:    padded   \n\nx\n",
    b"To: a@example.org\nSubject: "
    + b"long " * 30
    + b"\nX-Long: "
    + b"y" * 120
    + b"\n\nlong headers are refolded\n",
    b"From: Dr Who <dr@practice.example>\nTo: a@example.org\n"
    b"Message-ID: <fixed@practice.example>\nDate: Mon, 1 Jun 2026 10:00:00 +0100\n\nx\n",
    b"To: a@example.org\nMessage-ID:  <odd id with spaces@x> (comment)\n\nx\n",
    b"To: a@example.org\nMessage-ID:\n <folded@practice.example>\n\nx\n",
    b"To: a@example.org\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=XX\n\n"
    b"--XX\nContent-Type: text/plain\n\npart\n--XX--\n",
    b"To: a@example.org\nContent-Type: message/rfc822\n\nTo: b@example.org\n\ninner\n",
    b"To: a@example.org\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n\n"
    b"JVBERi0xLjQ=\n",
    b"To: a@example.org\nContent-Type: garbage\n\nx\n",
    b"To:\nCc: c@example.org\n\nx\n",
    b"To: not an address\nCc: c@example.org\n\nx\n",
    b"To: a@example.org, a@example.org, A@example.org\n\nx\n",
    b"Subject: x\nTo: \n\nx\n",
    b"To: undisclosed-recipients:;\nBcc: b@example.org\n\nx\n",
    b"To: a@example.org\nX-Odd: tab\there\n\tcontinued\n\nx\n",
]


@pytest.mark.parametrize("raw", _EQUIV)
@pytest.mark.parametrize("display_name", [None, "Smiles Dental", "Dr. O'Brien, Practice", "Zoë"])
def test_fast_path_matches_slow_path(
    raw: bytes, display_name: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from exactmaild.send import message as msgmod

    monkeypatch.setattr(
        msgmod.email.utils, "formatdate", lambda **_: "Fri, 27 Nov 2026 16:00:00 +0000"
    )
    monkeypatch.setattr(msgmod.email.utils, "make_msgid", lambda **_: "<1.2.3@practice.example>")

    def fast() -> object:
        return msgmod.prepare(
            raw,
            sender="reception@practice.example",
            display_name=display_name,
            signature=None,
            max_size=100_000,
            skip_recipients=("e@example.org",),
        )

    msgmod.check_raw(raw, 100_000)
    try:
        slow = msgmod._prepare_slow(
            raw,
            sender="reception@practice.example",
            display_name=display_name,
            signature=None,
            skip_recipients=("e@example.org",),
        )
    except BadMessage as exc:
        with pytest.raises(BadMessage, match=re.escape(str(exc))):
            fast()
        return
    assert fast() == slow


def test_fast_path_is_taken_for_a_plain_message() -> None:
    from exactmaild.send.fastpath import prepare_fast

    raw = b"To: a@example.org\nSubject: hi\n\nHello\n"
    p = prepare_fast(raw, "r@practice.example", "Smiles Dental", ())
    assert p.recipients == ("a@example.org",)
    assert p.data.startswith(b"To: a@example.org\r\nSubject: hi\r\nFrom: Smiles Dental <r@practice")
    assert p.data.endswith(b"\r\n\r\nHello\r\n")


@pytest.mark.parametrize(
    "signature",
    [SIG, "-- \n" + SIG, "--\n" + SIG, "\n-- \n" + SIG + "\n", "-- \r\n" + SIG],
    ids=["without", "with-delimiter", "editor-stripped-space", "leading-blank-line", "crlf"],
)
def test_signature_file_with_or_without_its_delimiter_gets_it_once(signature: str) -> None:
    m = EmailMessage()
    m["To"] = "a@example.org"
    m["Subject"] = "alt"
    m.set_content("Plain body\n")
    m.add_alternative("<html><body><p>HTML body</p></body></html>", subtype="html")
    _, msg = prep(m.as_bytes(), signature=signature)
    plain = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert plain is not None and html is not None
    text = plain.get_content().replace("\r\n", "\n")
    assert text.count("\n-- \n") == 1 and "-- \n--" not in text, text
    assert text.endswith("\n-- \nSmiles Dental\n01234 567890\n"), text
    h = html.get_content()
    assert h.count("-- <br>") == 1 and "--<br>" not in h, h
