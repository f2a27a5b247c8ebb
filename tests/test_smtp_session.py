"""The SMTP session against real aiosmtpd: no socket outlives a failed
connect, one AUTH command per login, and one login for a paced queue
(outgoing.keepalive), with a quiet reconnect when the server closed the
idle connection."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from exactmaild.auth.credentials import credentials_for
from exactmaild.config import load as configload
from exactmaild.config.model import Config, Server
from exactmaild.core.errors import AccountFailure, TemporaryFailure
from exactmaild.daemon import logs
from exactmaild.daemon.metrics import Metrics
from exactmaild.outbox.spool import Spool
from exactmaild.send.sender import Sender
from exactmaild.send.smtp import SmtpConnection
from exactmaild.send.smtp.login import mechanism_for
from exactmaild.store.state import StateStore
from tests.fixtures.smtp import (
    SMTP_PASSWORD,
    SMTP_USER,
    Sink,
    SmtpServer,
    free_port,
    start_smtp,
)
from tests.helpers import OffsetClock, message, wait_until, write_config

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


@dataclass
class Password:
    """A password login, as exactmaild.auth.credentials gives one."""

    password: str
    username: str = SMTP_USER
    method: Literal["password"] = "password"

    def secret(self) -> str:
        return self.password

    def invalidate(self) -> None:
        pass


@dataclass
class Logins:
    """The AUTH commands the server saw: (mechanism, accepted)."""

    seen: list[tuple[str, bool]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (
            data.login.decode(),
            data.password.decode(),
        ) == (SMTP_USER, SMTP_PASSWORD)
        with self.lock:
            self.seen.append((mechanism, ok))
        return AuthResult(success=ok, handled=False)


@pytest.fixture
def auth_server() -> Iterator[tuple[SmtpServer, Logins]]:
    """aiosmtpd with AUTH (it offers LOGIN and PLAIN) that counts each AUTH
    command, and closes a connection idle for 1 s (its `timeout`)."""
    logins = Logins()
    sink = Sink()
    controller = Controller(
        sink,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=logins,
        auth_required=True,
        auth_require_tls=False,
        timeout=1.0,
    )
    controller.start()
    yield SmtpServer("127.0.0.1", controller.port, sink, "none", None), logins
    controller.stop()


def _descriptors() -> tuple[int, int]:
    """This process's open descriptors, and how many of its sockets are in CLOSE-WAIT."""
    fds = os.listdir("/proc/self/fd")
    inodes = set()
    for fd in fds:
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[len("socket:[") : -1])
    close_wait = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                close_wait += cols[3] == "08" and cols[9] in inodes  # 08: CLOSE_WAIT
    return len(fds), close_wait


class Greeting421:
    """A server that greets every connection "421 ... too many connections"
    and closes it, as Postfix's anvil does: a client that does not close its
    end is left with a socket in CLOSE-WAIT."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with c:
                c.sendall(b"421 4.7.0 127.0.0.1 Error: too many connections from 127.0.0.1\r\n")

    def close(self) -> None:
        self.sock.close()


def test_no_descriptor_outlives_a_failed_connect(
    auth_server: tuple[SmtpServer, Logins], tls_cert: tuple[Path, Path]
) -> None:
    smtp, _ = auth_server
    starttls_ctl, starttls = start_smtp("starttls", cert=tls_cert)
    greeting = Greeting421()
    plain = ("127.0.0.1", smtp.port)
    attempts: list[tuple[Server, Password, type[Exception]]] = [
        # a wrong password against real aiosmtpd with AUTH
        (Server(*plain, "none"), Password("wrong"), AccountFailure),
        # STARTTLS that the client cannot trust (no tls_ca_file for the test CA)
        (Server("127.0.0.1", starttls.port, "starttls"), Password("x"), TemporaryFailure),
        # STARTTLS asked of a server that does not offer it
        (Server(*plain, "starttls"), Password("x"), TemporaryFailure),
        # security: tls on a plain port (the TLS handshake meets an SMTP greeting)
        (Server(*plain, "tls"), Password("x"), TemporaryFailure),
        # a 421 greeting
        (Server("127.0.0.1", greeting.port, "none"), Password("x"), AccountFailure),
    ]
    kept: list[Exception] = []  # as the daemon keeps a verdict or a pause reason

    def fail_all(times: int) -> None:
        for server, creds, error in attempts:
            for _ in range(times):
                with pytest.raises(error) as info:
                    SmtpConnection(server, creds, timeout=5.0).connect()
                kept.append(info.value)

    try:
        fail_all(1)  # the servers' and the TLS library's own first-use allocations
        time.sleep(0.3)
        before = _descriptors()
        fail_all(10)
        # The servers close their ends once ours are closed: give them a moment.
        # (Compared with before, not with 0: earlier tests in this process may
        # have left sockets of their own.)
        assert wait_until(lambda: _descriptors() == before, timeout=5.0), (
            before,
            _descriptors(),
        )
    finally:
        greeting.close()
        starttls_ctl.stop()


def test_a_wrong_password_is_tried_once(auth_server: tuple[SmtpServer, Logins]) -> None:
    smtp, logins = auth_server
    server = Server("127.0.0.1", smtp.port, "none")
    with pytest.raises(AccountFailure, match="refused the login"):
        SmtpConnection(server, Password("wrong"), timeout=5.0).connect()
    assert logins.seen == [("PLAIN", False)]  # not PLAIN, then LOGIN
    conn = SmtpConnection(server, Password(SMTP_PASSWORD), timeout=5.0)
    conn.connect()
    conn.close()
    assert logins.seen[1:] == [("PLAIN", True)]


def test_the_best_mechanism_offered() -> None:
    assert mechanism_for(["LOGIN", "PLAIN", "CRAM-MD5"]) == "PLAIN"
    assert mechanism_for(["LOGIN", "CRAM-MD5"]) == "LOGIN"
    assert mechanism_for(["CRAM-MD5"]) == "CRAM-MD5"
    assert mechanism_for(["GSSAPI", "NTLM"]) is None


def _sender(tmp_path: Path, smtp: SmtpServer, **outgoing: Any) -> tuple[Sender, Metrics]:
    password_file = tmp_path / "password"
    password_file.write_text(SMTP_PASSWORD)
    password_file.chmod(0o600)
    cfg = configload.load(
        write_config(
            tmp_path,
            smtp,
            account={
                "address": SMTP_USER,
                "auth": {"method": "password", "password_file": str(password_file)},
            },
            outgoing=outgoing,
            send={"immediately": False, "delay": "20s"},
        )
    )
    logs.configure(cfg.log)
    metrics = Metrics()

    def transport(c: Config) -> SmtpConnection:
        return SmtpConnection(
            c.outgoing, credentials_for(c.account), timeout=10.0, logins=metrics.smtp_logins
        )

    sender = Sender(
        cfg,
        StateStore(cfg.state_dir),
        Spool(cfg.spool.dir),
        metrics,
        logs.get(),
        transport_factory=transport,
        clock=OffsetClock(),
    )
    return sender, metrics


def _paced(sender: Sender, n: int, smtp: SmtpServer) -> None:
    """Send n messages 20 s apart on the sender's clock (moved, not waited for)."""
    for i in range(n):
        sender.spool.submit(message(i))
    sender.recover()
    clock = sender.clock
    assert isinstance(clock, OffsetClock)
    while len(smtp.sink.messages) < n:
        wait = sender.step()
        assert wait < 3600, "nothing left to send"
        clock.offset += wait


@pytest.mark.parametrize(("keepalive", "logins"), [(None, 1), ("10s", 10)])
def test_ten_paced_messages_one_login(
    tmp_path: Path, auth_server: tuple[SmtpServer, Logins], keepalive: str | None, logins: int
) -> None:
    smtp, seen = auth_server
    outgoing = {} if keepalive is None else {"keepalive": keepalive}
    sender, metrics = _sender(tmp_path, smtp, **outgoing)
    _paced(sender, 10, smtp)
    sender.outbox.settle()
    sender.transport.close()
    # The default keepalive (4 min) holds the connection across a 20 s delay;
    # one shorter than the delay logs in for every message.
    assert len(seen.seen) == logins
    assert metrics.smtp_logins._only().get() == logins


def test_a_connection_the_server_closed_is_reopened_quietly(
    tmp_path: Path, auth_server: tuple[SmtpServer, Logins]
) -> None:
    smtp, seen = auth_server
    sender, metrics = _sender(tmp_path, smtp)
    for i in range(2):
        sender.spool.submit(message(i))
    sender.recover()
    clock = sender.clock
    assert isinstance(clock, OffsetClock)
    assert sender.step() == 0.0 and len(smtp.sink.messages) == 1
    wait = sender.step()
    assert 0 < wait <= 20
    assert sender.transport.connected  # kept for the next send, 20 s away
    time.sleep(1.6)  # the server's idle timeout (1 s) closes it meanwhile
    clock.offset += wait
    assert sender.step() == 0.0
    assert len(smtp.sink.messages) == 2
    sender.outbox.settle()
    sender.transport.close()
    # No failure, no deferral, no pause: a second login, nothing else.
    assert [f.get() for _, f in metrics.send_failures.children()] == [0, 0, 0]
    assert sender.spool.names("deferred") == [] and not sender.pause.streak
    assert len(seen.seen) == 2 == metrics.smtp_logins._only().get()
