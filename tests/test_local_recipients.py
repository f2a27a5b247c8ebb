"""Mail from cron and scripts: command-line recipients are always honoured,
and bare local names (root, www-data) go to send.local_recipients_to (default:
the account), with the name they were written to kept in X-Original-To."""

from __future__ import annotations

from pathlib import Path

from exactmaild.outbox.spool import Spool
from exactmaild.send import message
from tests.fixtures.smtp import SmtpServer
from tests.helpers import exactmaild, write_config


def queued(tmp_path: Path) -> bytes:
    (entry,) = Spool(tmp_path / "spool").entries(("new",))
    return entry.path.read_bytes()


def test_cron_to_root_without_a_to_header_goes_to_the_account(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    cfg = write_config(tmp_path, smtp_server)
    Spool(tmp_path / "spool")
    # As `exactmaild-sendmail -i root` is called by cron and `mail root`.
    r = exactmaild(
        "sendmail",
        "-i",
        "root",
        input=b"Subject: Cron <root@host> run-parts\n\nall fine\n",
        env={"EXACTMAILD_CONFIG": str(cfg)},
    )
    assert r.returncode == 0, r.stderr
    raw = queued(tmp_path)
    msg = message.parse(raw)
    assert message.recipients(msg) == ["reception@practice.example"]
    assert msg["X-Original-To"] == "root"


def test_local_names_in_headers_and_arguments_go_to_local_recipients_to(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    cfg = write_config(tmp_path, smtp_server, send={"local_recipients_to": "it@practice.example"})
    Spool(tmp_path / "spool")
    r = exactmaild(
        "sendmail",
        "-i",
        "www-data",
        "patient@example.org",
        input=b"To: root\nCc: Dr Who <who@example.org>\nSubject: x\n\nbody\n",
        env={"EXACTMAILD_CONFIG": str(cfg)},
    )
    assert r.returncode == 0, r.stderr
    msg = message.parse(queued(tmp_path))
    assert sorted(message.recipients(msg)) == [
        "it@practice.example",
        "patient@example.org",
        "who@example.org",
    ]
    assert msg["To"] == "it@practice.example"
    assert msg["X-Original-To"] == "www-data, root"
    # A real address on the command line is honoured with or without a header.
    assert "patient@example.org" in str(msg["Bcc"])


def test_local_recipients_to_must_be_an_address(tmp_path: Path, smtp_server: SmtpServer) -> None:
    cfg = write_config(tmp_path, smtp_server, send={"local_recipients_to": "root"})
    r = exactmaild("check-config", "-c", str(cfg))
    assert r.returncode == 78
    assert b"send.local_recipients_to" in r.stderr
