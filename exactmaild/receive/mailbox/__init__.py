"""Mailbox adapters: the only code that speaks IMAP (imaplib) or POP3 (poplib).

Owns what the two protocols share: the TLS context (`exactmaild.auth.tls`,
verification always on), the step-by-step connection (DNS, connect, TLS, login, folder) with a
timeout on every socket, the mapping of every server or network problem onto
the error tree with a message that names the failed step and what to do, and
the small interface `exactmaild.receive.receiver` drives:

    box = open_mailbox(incoming, credentials, state, timeout=...)
    box.connect(on_step)          # DNS, connect, TLS, login
    box.open_folder()             # folder (IMAP) / STAT (POP3)
    box.fetch_new(deliver, now)   # each new message -> deliver(bytes), position recorded after it
    box.close()

The adapters keep their receive position through `StateStore` methods (the
store is the only writer of state): a message's position is recorded only
after `deliver` returned, so a crash re-fetches at most that one message.
The connection steps both adapters take (connect, STARTTLS, login, close)
are `exactmaild.receive.mailbox.common.Adapter`; the adapters add only the commands.
"""

from __future__ import annotations

import ast
import ipaddress
import re
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from exactmaild.auth.credentials import Credentials
from exactmaild.auth.tls import TlsContexts
from exactmaild.config.model import Incoming
from exactmaild.core.errors import AccountFailure, TemporaryFailure
from exactmaild.core.log import Log

if TYPE_CHECKING:
    from exactmaild.store.state import StateStore

DEFAULT_TIMEOUT = 60.0

StepName = str  # "DNS" | "connect" | "TLS" | "login" | "folder"
OnStep = Callable[[StepName, str], None]
Deliver = Callable[[bytes], None]


class MailboxFailure(TemporaryFailure):
    """A check failed at `step` for now (network, TLS, server); the next check retries."""

    def __init__(self, step: StepName, message: str) -> None:
        self.step = step
        self.detail = message
        super().__init__(f"{step}: {message}")


class LoginFailure(AccountFailure):
    """The server refused the login: the account needs attention, not a retry loop."""

    step: StepName = "login"

    def __init__(self, message: str) -> None:
        self.detail = message
        super().__init__(f"login: {message}")


def step_of(exc: BaseException) -> StepName:
    """The step a mailbox error belongs to (unknown errors count against the connection)."""
    return str(getattr(exc, "step", "connect"))


def detail_of(exc: BaseException) -> str:
    """The error's message without its "step: " prefix."""
    return str(getattr(exc, "detail", None) or exc)


class Mailbox(Protocol):
    """What the receiver needs from an IMAP or POP3 adapter."""

    key: str
    fetches: int  # messages fetched in full on this connection (tests assert on it)
    arrived: float | None  # the server's INTERNALDATE of the last fetched message (IMAP)

    def connect(self, on_step: OnStep | None = None) -> None:
        """DNS, TCP connect, TLS (or STARTTLS/STLS), login; raises MailboxFailure/LoginFailure."""
        ...

    def open_folder(self) -> str:
        """Open the folder (IMAP) or take the mailbox listing (POP3); returns a short detail."""
        ...

    def fetch_new(self, deliver: Deliver, now: float) -> int:
        """Hand each message not yet delivered to `deliver`, recording the position after each."""
        ...

    def close(self) -> None:
        """Log out politely; never raises."""
        ...


def tls_context(incoming: Incoming, contexts: TlsContexts) -> ssl.SSLContext:
    """The verifying TLS context for `incoming` (`exactmaild.auth.tls`: kept across
    checks, rebuilt when incoming.tls_ca_file changes), or the TLS step's failure."""
    try:
        return contexts.get(incoming.tls_ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise MailboxFailure(
            "TLS", f"cannot load incoming.tls_ca_file {incoming.tls_ca_file}: {exc}"
        ) from exc


def open_socket(incoming: Incoming, timeout: float, on_step: OnStep | None) -> socket.socket:
    """Resolve and connect (the DNS and connect steps), with the timeout on the socket."""
    host, port = incoming.host, incoming.port
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise MailboxFailure(
            "DNS",
            f"cannot resolve {host!r} ({exc.strerror or exc}): check incoming.host "
            "and that this machine's DNS works",
        ) from exc
    if on_step:
        on_step("DNS", f"{host} -> {', '.join(sorted({str(i[4][0]) for i in infos}))}")
    last: OSError | None = None
    for family, type_, proto, _canon, addr in infos:
        sock = socket.socket(family, type_, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(addr)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        if on_step:
            on_step("connect", f"{addr[0]} port {port}")
        return sock
    what = (
        "timed out"
        if isinstance(last, TimeoutError)
        else (getattr(last, "strerror", None) or str(last))
    )
    raise MailboxFailure(
        "connect",
        f"cannot connect to {host} port {port} ({what}): check incoming.host and "
        "incoming.port, and that a firewall lets this machine reach the server",
    ) from last


def wrap_tls(
    sock: socket.socket, ctx: ssl.SSLContext, host: str, port: int, on_step: OnStep | None
) -> ssl.SSLSocket:
    """The TLS step: handshake plus certificate and hostname verification."""
    try:
        tls = ctx.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        raise MailboxFailure(
            "TLS",
            f"the certificate of {host} port {port} is not trusted "
            f"({exc.verify_message or exc}): if the server uses a private CA or a "
            "self-signed certificate, set incoming.tls_ca_file to it; check that "
            "incoming.host is the name on the certificate",
        ) from exc
    except ssl.SSLError as exc:
        sock.close()
        if exc.reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL"):
            # The server's plain-text greeting, read as a TLS record.
            raise MailboxFailure(
                "TLS",
                f"{host} port {port} answered in plain text, not TLS ({exc.reason}): the "
                "port speaks STARTTLS or no encryption, but incoming.security is tls: set "
                "incoming.security: starttls, or incoming.port to the implicit-TLS port "
                "(IMAP 993, POP3 995)",
            ) from exc
        raise MailboxFailure(
            "TLS",
            f"TLS handshake with {host} port {port} failed ({exc}): check that "
            "incoming.security matches the port (tls: 993/995, starttls: 143/110)",
        ) from exc
    except OSError as exc:
        sock.close()
        raise MailboxFailure(
            "TLS",
            f"TLS handshake with {host} port {port} failed ({exc}): check that "
            "incoming.security matches the port (tls: 993/995, starttls: 143/110)",
        ) from exc
    if on_step:
        on_step("TLS", f"{tls.version()}, certificate verified for {host}")
    return tls


def peer_is_loopback(sock: socket.socket) -> bool:
    """Whether the connected peer is this machine (where `security: none` may log in)."""
    try:
        return ipaddress.ip_address(str(sock.getpeername()[0])).is_loopback
    except (OSError, ValueError):
        return False


def xoauth2(username: str, token: str) -> str:
    """The SASL XOAUTH2 initial response (before base64)."""
    return f"user={username}\x01auth=Bearer {token}\x01\x01"


_BYTES_REPR = re.compile(r"\bb'(?:[^'\\]|\\.)*'|\bb\"(?:[^\"\\]|\\.)*\"")


def _unrepr(m: re.Match[str]) -> str:
    # A bytes repr inside a message (imaplib's "command error: BAD [b'...']").
    try:
        value = ast.literal_eval(m.group(0))
    except (ValueError, SyntaxError):
        return m.group(0)
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else m.group(0)


def describe(exc: BaseException) -> str:
    """A short, log-safe description of an unexpected protocol or socket error."""
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out waiting for the server"
    # imaplib raises its errors with the server's bytes (`b'[AUTHENTICATIONFAILED] ...'`).
    text = " ".join(
        a.decode("utf-8", "replace") if isinstance(a, bytes) else str(a) for a in exc.args
    )
    text = _BYTES_REPR.sub(_unrepr, text) or type(exc).__name__
    return text if len(text) < 300 else text[:300] + "..."


def open_mailbox(
    incoming: Incoming,
    credentials: Credentials,
    state: StateStore | None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    log: Log | None = None,
    tls: TlsContexts | None = None,
) -> Mailbox:
    """The adapter for `incoming.protocol` (`log`: where rare events go, if
    anywhere; `tls`: the configuration's kept TLS contexts, else built afresh)."""
    if incoming.protocol == "pop3":
        from exactmaild.receive.mailbox.pop3 import POP3Mailbox

        return POP3Mailbox(incoming, credentials, state, timeout=timeout, log=log, tls=tls)
    from exactmaild.receive.mailbox.imap import IMAPMailbox

    return IMAPMailbox(incoming, credentials, state, timeout=timeout, log=log, tls=tls)


__all__ = [
    "DEFAULT_TIMEOUT",
    "AccountFailure",
    "Deliver",
    "LoginFailure",
    "Mailbox",
    "MailboxFailure",
    "OnStep",
    "detail_of",
    "open_mailbox",
    "step_of",
    "tls_context",
]
