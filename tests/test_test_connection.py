"""`exactmaild test-connection`'s wording, against real aiosmtpd and Dovecot:
step labels on the outgoing lines, server text rather than Python bytes,
a port whose security is not the configured one, and a server whose only
connection the running daemon holds."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from exactmaild.config.model import Account, Server
from exactmaild.outbox.spool import Spool
from exactmaild.receive import receiver
from exactmaild.receive.diagnose import explain
from exactmaild.send.probe import test_outgoing
from tests.fixtures.dovecot import Dovecot, StaticCredentials, build_config
from tests.fixtures.smtp import (
    SMTP_PASSWORD,
    SMTP_USER,
    Sink,
    SmtpServer,
    free_port,
    start_smtp,
)
from tests.helpers import Daemon, exactmaild, message, write_config


def no_login() -> Any:
    from exactmaild.auth.credentials import NoCredentials

    return NoCredentials(Account(address=SMTP_USER))


def lines(out: bytes, side: str) -> list[str]:
    return [line for line in out.decode().splitlines() if line.startswith(side)]


def password_config(tmp: Path, server: SmtpServer, password: str, **outgoing: Any) -> Path:
    pw = tmp / "password"
    pw.write_text(password + "\n")
    pw.chmod(0o600)
    return write_config(
        tmp,
        server,
        account={
            "address": SMTP_USER,
            "auth": {"method": "password", "password_file": str(pw)},
        },
        outgoing={"host": "localhost", "port": server.port, **outgoing},
    )


# -- step labels ------------------------------------------------------------------------


def test_outgoing_lines_name_their_steps(tmp_path: Path, tls_cert: tuple[Path, Path]) -> None:
    controller, server = start_smtp("starttls", auth=True, cert=tls_cert)
    try:
        cfg = password_config(
            tmp_path, server, SMTP_PASSWORD, security="starttls", tls_ca_file=str(tls_cert[0])
        )
        r = exactmaild("test-connection", "-c", str(cfg))
        out = lines(r.stdout, "outgoing")
        assert r.returncode == 0, r.stdout + r.stderr
        assert [re.sub(r":.*", "", line) for line in out] == [
            "outgoing ok   DNS",
            "outgoing ok   connect",
            "outgoing ok   STARTTLS",
            "outgoing ok   login",
        ], out
        assert f"{SMTP_USER} logged in" in out[-1]

        cfg = password_config(
            tmp_path, server, "wrong-password", security="starttls", tls_ca_file=str(tls_cert[0])
        )
        r = exactmaild("test-connection", "-c", str(cfg))
        out = lines(r.stdout, "outgoing")
        assert r.returncode == 69
        assert out[-1].startswith("outgoing FAIL login: "), out
        assert "refused the login" in out[-1] and "wrong-password" not in r.stdout.decode()
        assert server.sink.messages == []
    finally:
        controller.stop()


# -- the configured security does not match the port -------------------------------------


def test_tls_on_a_starttls_port_says_so(tmp_path: Path, tls_cert: tuple[Path, Path]) -> None:
    controller, server = start_smtp("starttls", auth=True, cert=tls_cert)
    try:
        cfg = password_config(
            tmp_path, server, SMTP_PASSWORD, security="tls", tls_ca_file=str(tls_cert[0])
        )
        r = exactmaild("test-connection", "-c", str(cfg))
        (last,) = [line for line in lines(r.stdout, "outgoing") if "FAIL" in line]
        assert last.startswith("outgoing FAIL TLS: "), last
        assert "speaks SMTP with STARTTLS" in last
        assert "outgoing.security is tls" in last
        assert "set outgoing.security: starttls" in last
    finally:
        controller.stop()


def test_plain_port_without_starttls_and_the_reverse(tls_cert: tuple[Path, Path]) -> None:
    controller, server = start_smtp("none")
    try:
        steps = test_outgoing(
            Server("127.0.0.1", server.port, "tls", tls_ca_file=tls_cert[0]), no_login(), timeout=5
        )
        assert steps[-1].name == "TLS" and not steps[-1].ok
        assert "answered in plain text" in steps[-1].detail
        assert "offers no STARTTLS" in steps[-1].detail
    finally:
        controller.stop()
    controller, server = start_smtp("tls", cert=tls_cert)
    try:
        # The greeting never comes on an implicit-TLS port: a short wait is enough here.
        steps = test_outgoing(
            Server("localhost", server.port, "starttls", tls_ca_file=tls_cert[0]),
            no_login(),
            timeout=1,
        )
        assert steps[-1].name == "connect" and not steps[-1].ok
        assert "waits for a TLS handshake (implicit TLS)" in steps[-1].detail
        assert "set outgoing.security: tls" in steps[-1].detail
    finally:
        controller.stop()


@pytest.mark.dovecot
def test_incoming_security_mismatch_both_ways(dovecot: Dovecot, tmp_path: Path) -> None:
    inc = dataclasses.replace(dovecot.incoming("imap", "starttls"), security="tls")
    steps = receiver.test_connection(build_config(tmp_path, inc), StaticCredentials(), timeout=5)
    assert steps[-1].name == "TLS" and not steps[-1].ok
    assert "answered in plain text, not TLS" in steps[-1].detail
    assert "incoming.security is tls" in steps[-1].detail
    assert "WRONG_VERSION_NUMBER" in steps[-1].detail  # what OpenSSL said, for a search
    assert "set incoming.security: starttls" in steps[-1].detail

    inc = dataclasses.replace(dovecot.incoming("pop3", "tls"), security="starttls")
    steps = explain(
        inc, receiver.test_connection(build_config(tmp_path, inc), StaticCredentials(), timeout=1)
    )
    assert steps[-1].name == "connect" and not steps[-1].ok
    assert "waits for a TLS handshake" in steps[-1].detail
    assert "sent no POP3 greeting" in steps[-1].detail
    assert "set incoming.security: tls (usually port 995)" in steps[-1].detail


# -- the daemon holds the server's only connection ---------------------------------------


class OneConnection:
    """Real aiosmtpd that, like Postfix with smtpd_client_connection_count_limit=1,
    answers a second concurrent connection with anvil's 421 and closes it."""

    def __init__(self) -> None:
        self.sink = Sink()
        self.active = 0
        self.refused = 0
        self.lock = threading.Lock()
        owner = self

        class LimitedSMTP(SMTP):
            counted = False

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                with owner.lock:
                    if owner.active >= 1:
                        owner.refused += 1
                        assert isinstance(transport, asyncio.WriteTransport)
                        transport.write(
                            b"421 4.7.0 localhost Error: too many connections from 127.0.0.1\r\n"
                        )
                        transport.close()
                        return
                    owner.active += 1
                    self.counted = True
                super().connection_made(transport)

            def connection_lost(self, error: Exception | None) -> None:
                if not self.counted:
                    return
                with owner.lock:
                    owner.active -= 1
                super().connection_lost(error)

        class _Controller(Controller):
            def factory(self) -> SMTP:
                return LimitedSMTP(self.handler, **self.SMTP_kwargs)

        self.controller = _Controller(self.sink, hostname="127.0.0.1", port=free_port())
        self.controller.start()
        self.server = SmtpServer("127.0.0.1", self.controller.port, self.sink, "none", None)


@pytest.fixture
def one_connection() -> Iterator[OneConnection]:
    server = OneConnection()
    yield server
    server.controller.stop()


def test_while_the_daemon_holds_the_only_connection(
    tmp_path: Path, one_connection: OneConnection
) -> None:
    # 8 s between sends: the daemon keeps its connection open for the next one.
    cfg = write_config(tmp_path, one_connection.server, send={"delay": "8s", "immediately": False})
    spool = Spool(tmp_path / "spool")
    for i in range(3):
        spool.submit(message(i))
    d = Daemon(cfg)
    try:
        assert len(one_connection.sink.wait_for(1)) == 1, d.log()
        assert one_connection.active == 1
        pid = d.proc.pid

        r = exactmaild("test-connection", "-c", str(cfg))
        (line,) = lines(r.stdout, "outgoing")
        assert r.returncode == 0, r.stdout + r.stderr
        assert line.startswith(f"outgoing skip connect: the daemon (pid {pid}) is running"), line
        assert "no second connection" in line and "--force" in line
        assert one_connection.refused == 0  # nothing was tried

        r = exactmaild("test-connection", "--force", "-c", str(cfg))
        out = lines(r.stdout, "outgoing")
        assert r.returncode == 69
        assert out[-1].startswith("outgoing FAIL connect: "), out
        assert "421 4.7.0" in out[-1] and "too many connections" in out[-1]
        assert f"the daemon (pid {pid}) is connected to it" in out[-1]
        assert "not a refusal of the account" in out[-1]
        assert one_connection.refused == 1
    finally:
        assert d.stop() == 0, d.log()
    # Without the daemon, the same server has a connection free again.
    r = exactmaild("test-connection", "-c", str(cfg))
    assert r.returncode == 0, r.stdout
    assert [re.sub(r":.*", "", line) for line in lines(r.stdout, "outgoing")] == [
        "outgoing ok   DNS",
        "outgoing ok   connect",
        "outgoing ok   login",
    ]
