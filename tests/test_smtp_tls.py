"""The SMTP adapter keeps its TLS context across connections (building one
loads the system CA store, ~17 ms), but a private CA file renewed on disk is
used from the next connection on, without a restart."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

from exactmaild.auth.credentials import NoCredentials
from exactmaild.config.model import Account, Server
from exactmaild.core.errors import TemporaryFailure
from exactmaild.send.smtp import SmtpConnection
from tests.fixtures.smtp import make_cert, start_smtp

MSG = b"From: reception@practice.example\r\nTo: a@example.org\r\nSubject: t\r\n\r\nHello\r\n"


def test_renewed_ca_file_is_used_without_restart(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cert_a, cert_b = make_cert(tmp_path / "a"), make_cert(tmp_path / "b")
    ca = tmp_path / "ca.pem"
    shutil.copy(cert_a[0], ca)
    ctl_a, srv_a = start_smtp("tls", cert=cert_a)
    ctl_b, srv_b = start_smtp("tls", cert=cert_b)
    try:
        t = SmtpConnection(
            Server("127.0.0.1", srv_a.port, "tls", tls_ca_file=ca),
            NoCredentials(Account("reception@practice.example")),
            timeout=5.0,
        )
        t.send("reception@practice.example", ("a@example.org",), MSG)
        t.close()
        t.send("reception@practice.example", ("a@example.org",), MSG)  # a second connection
        t.close()
        assert len(srv_a.sink.messages) == 2

        # Server B's certificate is not trusted yet: refused, whatever is cached.
        t.server = replace(t.server, port=srv_b.port)
        try:
            t.send("reception@practice.example", ("a@example.org",), MSG)
            raise AssertionError("an untrusted certificate was accepted")
        except TemporaryFailure as exc:
            assert "not trusted" in str(exc)
        # The CA file is renewed in place (new file renamed over the old):
        # the next connection trusts B.
        shutil.copy(cert_b[0], tmp_path / "ca.new")
        os.replace(tmp_path / "ca.new", ca)
        t.send("reception@practice.example", ("a@example.org",), MSG)
        t.close()
        assert len(srv_b.sink.messages) == 1
    finally:
        ctl_a.stop()
        ctl_b.stop()
