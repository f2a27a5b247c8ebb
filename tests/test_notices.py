"""RFC 3464 failure notices: structure, status codes, and never a notice about a notice."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest

from exactmaild.send.dsn import Failure, build, is_notice

ORIGINAL = (
    b"From: Smiles Dental <reception@practice.example>\n"
    b"To: patient@example.org\n"
    b"Subject: Your appointment\n"
    b"Message-ID: <abc@practice.example>\n"
    b"\n"
    b"See you on Tuesday.\nA body line that must not be copied.\n"
)


def parse(data: bytes) -> EmailMessage:
    msg = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(msg, EmailMessage)
    return msg


def notice(*failures: Failure, **kw: object) -> bytes:
    return build(
        ORIGINAL,
        list(failures),
        to="reception@practice.example",
        reporting_host="mail.practice.example",
        now=1_700_000_000.0,
        **kw,  # type: ignore[arg-type]
    )


def test_structure_is_a_delivery_status_report() -> None:
    data = notice(Failure("patient@example.org", 550, "5.1.1 no such user"))
    msg = parse(data)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["To"] == "reception@practice.example"
    assert msg["Subject"] == "Undelivered mail: Your appointment"
    assert msg["In-Reply-To"] == "<abc@practice.example>"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    assert "patient@example.org" in parts[0].get_content()
    assert b"Reporting-MTA: dns; mail.practice.example" in data
    assert b"Final-Recipient: rfc822; patient@example.org" in data
    assert b"Action: failed" in data
    assert b"Status: 5.1.1" in data
    assert b"Diagnostic-Code: smtp; 550 5.1.1 no such user" in data
    # the original's headers, never its body
    assert b"Subject: Your appointment\r\n" in data
    assert b"must not be copied" not in data
    # CRLF throughout, no bare LF
    assert b"\n" not in data.replace(b"\r\n", b"")


@pytest.mark.parametrize(
    ("code", "text", "status"),
    [
        (550, "5.7.1 relaying denied", "5.7.1"),
        (550, "mailbox unavailable", "5.0.0"),
        (554, "4.1.1 inconsistent", "5.0.0"),  # an enhanced code of the wrong class is ignored
        (451, "4.3.0 try later", "4.3.0"),
        (0, "cannot connect to smtp.example: refused", "4.4.7"),
    ],
)
def test_status_codes(code: int, text: str, status: str) -> None:
    assert Failure("a@b.example", code, text).status == status


def test_several_recipients_and_partial_delivery() -> None:
    data = notice(
        Failure("x@example.org", 550, "5.1.1 unknown"),
        Failure("y@example.org", 553, "5.1.3 bad address"),
        delivered_to=("ok@example.org",),
    )
    assert data.count(b"Final-Recipient:") == 2
    assert b"Final-Recipient: rfc822; ok@example.org" not in data
    assert b"ok@example.org" in data  # named as delivered in the human part


def test_server_text_cannot_inject_headers() -> None:
    data = notice(Failure("a@example.org", 550, "5.0.0 bad\r\nBcc: victim@example.org\x00"))
    assert b"\r\nBcc: victim" not in data
    assert b"\x00" not in data
    long = notice(Failure("a@example.org", 550, "x" * 5000))
    assert max(len(line) for line in long.split(b"\r\n")) < 998


def test_needs_a_failure() -> None:
    with pytest.raises(ValueError):
        notice()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (b"To: a@b\nSubject: hi\n", False),
        (b"To: a@b\nAuto-Submitted: no\n", False),
        (b"To: a@b\nAuto-Submitted: auto-replied\n", True),
        (b"To: a@b\nauto-submitted: Auto-Generated\n", True),
        (b'To: a@b\nContent-Type: multipart/report; report-type="delivery-status";\n b=1\n', True),
        (b"To: a@b\nContent-Type: multipart/report;\n report-type=delivery-status\n", True),
        (b"To: a@b\nContent-Type: multipart/report; report-type=disposition-notification\n", False),
    ],
)
def test_is_notice(headers: bytes, expected: bool) -> None:
    assert is_notice(headers + b"\nbody\n") is expected


def test_a_notice_is_recognised_as_one() -> None:
    assert is_notice(notice(Failure("a@example.org", 550, "5.1.1 x")))
