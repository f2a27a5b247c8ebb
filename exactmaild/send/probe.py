"""`test-connection`'s outgoing half: log in to the SMTP server, send nothing, name the step.

The steps are the incoming side's (DNS, connect, TLS or STARTTLS, login), so
the command's lines read alike. The connection is `exactmaild.send.smtp`'s,
the one the daemon sends with; this module only words its failures for a
person at a terminal:

- `security: tls` on a port that speaks plain SMTP (587, 25) fails the TLS
  handshake with OpenSSL's `WRONG_VERSION_NUMBER` (the server's "220" greeting
  is not a TLS record). The port is then asked, without a login, whether it
  offers STARTTLS, and the line says what the port speaks and what to set.
- `security: starttls` (or `none`) on an implicit-TLS port (465) waits for a
  greeting that never comes: the port is then tried with a TLS handshake.
- A 421/432 "too many connections" at the greeting is the server's connection
  limit, not a refusal of the account: the line says who may hold it (the
  daemon, when it runs; a mail app otherwise).

While the daemon runs, `exactmaild.cli.checks` does not call this at all by
default: a provider that allows one connection per account would refuse a
second, and a second login counts against its login-rate limits.
"""

from __future__ import annotations

import dataclasses
import re
import socket
import ssl
from dataclasses import dataclass
from typing import Literal

from exactmaild.auth.credentials import Credentials
from exactmaild.config.model import Server
from exactmaild.core.errors import ExactmailError
from exactmaild.send.smtp import SmtpConnection

# Replies that mean "no more connections from you now" (RFC 5321 421; Microsoft
# 365's 432 4.3.2; Postfix anvil's "too many connections"), at the greeting.
_CONNECTION_LIMIT = re.compile(
    r"\b(?:421|432)\b.*(?:too many (?:concurrent )?connections|connections? limit|"
    r"concurrent connections)|\b4\.3\.2\b",
    re.I,
)
# How long the mismatch probes may take: a port that waits for a TLS
# handshake (465) answers one at once, so a few seconds are plenty.
PROBE_TIMEOUT = 5.0


@dataclass(frozen=True)
class OutgoingStep:
    name: str
    ok: bool
    detail: str


class _NoLogin:
    """Credentials for a probe that must not log in (it only asks what the port speaks)."""

    method: Literal["none"] = "none"
    username = ""

    def secret(self) -> str:
        return ""

    def invalidate(self) -> None:
        pass


def test_outgoing(
    server: Server,
    credentials: Credentials,
    *,
    timeout: float = 20.0,
    daemon_pid: int | None = None,
) -> list[OutgoingStep]:
    """Connect, secure and log in, then QUIT; every step taken, the last one failed if any did.

    `daemon_pid`: the running daemon's, when the caller tests although it runs
    (a connection-limit reply then names it)."""
    steps: list[OutgoingStep] = []
    where = f"{server.host} port {server.port}"
    try:
        infos = socket.getaddrinfo(server.host, server.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return [
            OutgoingStep(
                "DNS", False, f"cannot resolve {server.host}: {exc.strerror} (check outgoing.host)"
            )
        ]
    steps.append(
        OutgoingStep(
            "DNS", True, f"{server.host} -> {', '.join(sorted({str(i[4][0]) for i in infos}))}"
        )
    )
    conn = SmtpConnection(server, credentials, timeout=timeout)
    try:
        conn.connect()
    except ExactmailError as exc:
        failed = conn.step
        context = exc.__context__
        if failed == "TLS" and isinstance(context, ConnectionRefusedError | TimeoutError):
            failed = "connect"  # SMTP_SSL connects and shakes hands in one call
        if failed != "connect":
            steps.append(OutgoingStep("connect", True, where))
        if failed == "login" and server.security != "none":
            steps.append(
                OutgoingStep(_tls_step(server), True, f"certificate verified for {server.host}")
            )
        steps.append(OutgoingStep(failed, False, _explain(server, failed, exc, daemon_pid)))
        return steps
    try:
        steps.append(OutgoingStep("connect", True, where))
        if server.security != "none":
            steps.append(
                OutgoingStep(_tls_step(server), True, f"certificate verified for {server.host}")
            )
        who = (
            "no login (account.auth.method: none)"
            if credentials.method == "none"
            else f"{credentials.username} logged in ({credentials.method}); nothing sent"
        )
        steps.append(OutgoingStep("login", True, who))
    finally:
        conn.close()
    return steps


# The name is the command's; tell pytest it is not a test when a test imports it.
test_outgoing.__test__ = False  # type: ignore[attr-defined]


def _tls_step(server: Server) -> str:
    return "STARTTLS" if server.security == "starttls" else "TLS"


def _explain(server: Server, step: str, exc: ExactmailError, daemon_pid: int | None) -> str:
    """The failure's own message, or what it means when it is one of the known confusions."""
    text = str(exc)
    where = f"{server.host} port {server.port}"
    context = exc.__context__
    if step == "TLS" and isinstance(context, ssl.SSLError) and _plain_text(context):
        speaks = _speaks_starttls(server)
        if speaks == "starttls":
            return (
                f"{where} speaks SMTP with STARTTLS, not implicit TLS, but outgoing.security "
                f"is tls (the handshake failed: {context.reason}): set outgoing.security: "
                "starttls, or use the provider's implicit-TLS port (usually 465) with tls"
            )
        return (
            f"{where} answered in plain text, not TLS ({context.reason}), and offers no "
            "STARTTLS: set outgoing.port to the provider's implicit-TLS port (usually 465) "
            "for security: tls, or 587 with starttls (security: none only for a relay on "
            "this machine)"
        )
    if step == "connect" and _CONNECTION_LIMIT.search(text):
        holder = (
            f"the daemon (pid {daemon_pid}) is connected to it"
            if daemon_pid is not None
            else "another client (a mail app, a phone, webmail or another exactmaild) holds "
            "a connection"
        )
        return (
            f"{where} refused another connection ({text}): the server limits connections "
            f"and {holder}. This is not a refusal of the account or its password; try again "
            "when that connection has closed"
        )
    if (
        step == "connect"
        and server.security in ("starttls", "none")
        and not isinstance(context, ConnectionRefusedError)
        and _speaks_tls(server)
    ):
        return (
            f"{where} waits for a TLS handshake (implicit TLS) and sent no SMTP greeting, but "
            f"outgoing.security is {server.security}: set outgoing.security: tls, or use the "
            "provider's STARTTLS port (usually 587) with starttls"
        )
    return text


def _plain_text(error: ssl.SSLError) -> bool:
    # The server's "220 ..." read as a TLS record header.
    return error.reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL")


def _speaks_starttls(server: Server) -> str | None:
    """Whether the port offers STARTTLS (EHLO, STARTTLS and the handshake; no login)."""
    probe = dataclasses.replace(server, security="starttls")
    conn = SmtpConnection(probe, _NoLogin(), timeout=PROBE_TIMEOUT)
    try:
        conn.connect()
    except ExactmailError as exc:
        # Offered, but the handshake failed (an untrusted certificate): still STARTTLS.
        offered = conn.step == "STARTTLS" and isinstance(exc.__context__, ssl.SSLError)
        return "starttls" if offered else None
    conn.close()
    return "starttls"


def _speaks_tls(server: Server) -> bool:
    """Whether the port completes a TLS handshake and greets as SMTP (no login)."""
    probe = dataclasses.replace(server, security="tls")
    conn = SmtpConnection(probe, _NoLogin(), timeout=PROBE_TIMEOUT)
    try:
        conn.connect()
    except ExactmailError:
        return False
    conn.close()
    return True
