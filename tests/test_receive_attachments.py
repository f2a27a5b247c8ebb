"""receive.attachments keep | strip | extract, with hostile file names."""

from __future__ import annotations

import os
import time
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest

from exactmaild.receive.attachments import MAX_NAME_BYTES, safe_filename, save_attachment
from exactmaild.receive.receiver import Receiver
from exactmaild.store.state import StateStore
from tests.fixtures.dovecot import Dovecot, StaticCredentials, build_config

PAYLOAD = b"root:x:0:0:root:/root:/bin/bash\n" * 20


def with_attachment(filename: str, payload: bytes = PAYLOAD) -> bytes:
    msg = EmailMessage()
    msg["From"] = "lab@example.org"
    msg["To"] = "reception@practice.example"
    msg["Subject"] = "results"
    msg["Message-ID"] = "<att-1@example.org>"
    msg.set_content("Please find the results attached.\n")
    msg.add_attachment(payload, maintype="application", subtype="octet-stream", filename=filename)
    return msg.as_bytes(policy=policy.SMTP)


def delivered(maildir: Path) -> EmailMessage:
    [path] = (maildir / "new").iterdir()
    msg = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert isinstance(msg, EmailMessage)
    return msg


def texts(msg: EmailMessage) -> str:
    """Every text part, decoded."""
    return "".join(str(p.get_content()) for p in msg.walk() if p.get_content_type() == "text/plain")


def filenames(msg: EmailMessage) -> list[str]:
    return [str(p.get_filename()) for p in msg.walk() if p.get_filename()]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system.ini", "system.ini"),
        (".bashrc", "bashrc"),
        ("..", "attachment"),
        ("", "attachment"),
        (None, "attachment"),
        ("a\x00b\nc\u202e.txt", "abc.txt"),
        ('what?"is":this<>.pdf', "what__is__this__.pdf"),
        ("report. ", "report"),
        ("/", "attachment"),
    ],
)
def test_safe_filename(given: str | None, expected: str) -> None:
    assert safe_filename(given) == expected


def test_safe_filename_caps_length_keeping_extension() -> None:
    name = safe_filename("é" * 300 + ".pdf")
    assert len(name.encode()) <= MAX_NAME_BYTES and name.endswith(".pdf")


def test_save_never_overwrites_or_follows_symlinks(tmp_path: Path) -> None:
    d = tmp_path / "att"
    first = save_attachment(d, "scan.pdf", b"one")
    second = save_attachment(d, "../scan.pdf", b"two")
    assert (first.name, second.name) == ("scan.pdf", "scan-1.pdf")
    assert first.read_bytes() == b"one" and second.read_bytes() == b"two"
    target = tmp_path / "outside"
    target.write_bytes(b"keep me")
    os.symlink(target, d / "link.txt")
    third = save_attachment(d, "link.txt", b"evil")
    assert third.name == "link-1.txt" and target.read_bytes() == b"keep me"


@pytest.mark.dovecot
def test_extract_traversal_name_lands_inside(dovecot: Dovecot, tmp_path: Path) -> None:
    dovecot.add_message(with_attachment("../../etc/passwd"))
    cfg = build_config(tmp_path, dovecot.incoming("imap", "tls"), attachments="extract")
    assert cfg.receive is not None and cfg.receive.attachments_dir is not None
    # Nested, so a traversal would land somewhere this test can see (not the real /etc).
    cfg_dir = tmp_path / "a" / "b" / "attachments"
    import dataclasses

    cfg = dataclasses.replace(
        cfg, receive=dataclasses.replace(cfg.receive, attachments_dir=cfg_dir)
    )
    result = Receiver(cfg, StateStore(cfg.state_dir), StaticCredentials(), timeout=10).check(
        time.time()
    )
    assert result.error is None and result.delivered == 1
    files = list(cfg_dir.iterdir())
    assert [f.name for f in files] == ["passwd"]
    assert files[0].resolve().parent == cfg_dir.resolve()
    assert files[0].read_bytes() == PAYLOAD
    assert not (tmp_path / "a" / "etc").exists() and not (tmp_path / "etc").exists()
    assert cfg.receive is not None
    msg = delivered(cfg.receive.maildir)
    assert filenames(msg) == []
    text = texts(msg)
    assert str(cfg_dir / "passwd") in msg.as_string()  # readable in the raw file too
    assert str(cfg_dir / "passwd") in text and "was saved as" in text
    assert "Please find the results attached." in text


@pytest.mark.dovecot
def test_strip_and_oversize(dovecot: Dovecot, tmp_path: Path) -> None:
    dovecot.add_message(with_attachment("x-ray.png"))
    strip = build_config(tmp_path / "strip", dovecot.incoming("imap", "tls"), attachments="strip")
    assert strip.receive is not None
    Receiver(strip, StateStore(strip.state_dir), StaticCredentials(), timeout=10).check(time.time())
    msg = delivered(strip.receive.maildir)
    assert filenames(msg) == []
    assert "Attachment removed: x-ray.png (640 bytes)" in texts(msg)
    assert not (tmp_path / "strip" / "attachments").exists()

    big = build_config(
        tmp_path / "big",
        dovecot.incoming("imap", "tls"),
        attachments="extract",
        max_attachment_size=100,
    )
    assert big.receive is not None
    Receiver(big, StateStore(big.state_dir), StaticCredentials(), timeout=10).check(time.time())
    msg = delivered(big.receive.maildir)
    [kept] = [p for p in msg.walk() if p.get_filename()]
    assert kept.get_filename() == "x-ray.png" and kept.get_content() == PAYLOAD
    assert "larger than receive.max_attachment_size" in texts(msg)
    assert not (tmp_path / "big" / "attachments").exists()


@pytest.mark.dovecot
def test_keep_delivers_unchanged(dovecot: Dovecot, tmp_path: Path) -> None:
    raw = with_attachment("scan.pdf")
    dovecot.add_message(raw)
    cfg = build_config(tmp_path, dovecot.incoming("imap", "tls"), attachments="keep")
    assert cfg.receive is not None
    Receiver(cfg, StateStore(cfg.state_dir), StaticCredentials(), timeout=10).check(time.time())
    [path] = (cfg.receive.maildir / "new").iterdir()
    assert path.read_bytes() == raw
