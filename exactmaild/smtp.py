"""The SMTP adapter: the only module that imports smtplib.

One connection, reused while messages are waiting and closed when idle. Every
failure is classified here, in one place, into the error tree:

* 5xx on MAIL/RCPT/DATA: PermanentFailure (the message goes to failed/);
* 4xx, connection refused/reset, TLS handshake failure, timeouts: TemporaryFailure
  (the message is deferred and retried);
* a refused login, or a provider's quota or rate-limit reply: AccountFailure
  (the whole queue pauses; no message is blamed for an account problem);
* the connection lost after the body went out but before the reply:
  UnknownOutcome (the message may have been delivered).

The DATA phase is written by hand (not smtplib.sendmail) for two reasons: to
know whether the body had gone out when a connection dropped, and to send
the whole body and the final dot in a single write, so the last segment does
not wait for a delayed ACK. When the server offers PIPELINING (RFC 2920),
MAIL, every RCPT and DATA go out in one write and their replies are read in
order: two round trips per message instead of three plus one per recipient.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import socket
import ssl
from dataclasses import dataclass, field

from exactmaild.config import Server
from exactmaild.credentials import Credentials
from exactmaild.errors import (
    AccountFailure,
    PermanentFailure,
    TemporaryFailure,
    UnknownOutcome,
)
from exactmaild.secrets import SecretError

# Replies by which providers say "this account is over its quota / sending too
# fast / blocked": never the message's fault. Enhanced status codes per RFC 3463
# (5.4.5 and 4.4.5 "system congestion"/quota in practice, 5.2.0/4.2.0 used by
# Microsoft and others for quota, 4.7.x / 5.7.x policy) and the words
# providers use in the text.
_ACCOUNT_CODES = re.compile(r"\b[45]\.(4\.5|2\.0|7\.0|7\.1|7\.2[6-9]|7\.3\d?|3\.2)\b")
_ACCOUNT_WORDS = re.compile(
    r"quota|rate.?limit|too many|sending limit|daily.*limit|limit exceeded|"
    r"exceeded.*limit|throttl|suspend|blocked|spam|temporarily deferred|try again later",
    re.IGNORECASE,
)


def classify_reply(code: int, text: str, *, stage: str) -> Exception:
    """Map an SMTP reply to the error tree. `stage` is mail, rcpt or data."""
    detail = f"{code} {text}".strip()
    if code in (530, 534, 535, 538, 454) and "auth" in text.lower():
        return AccountFailure(f"the server refused the login: {detail}")
    if stage != "rcpt" and (_ACCOUNT_CODES.search(text) and _ACCOUNT_WORDS.search(text)):
        return AccountFailure(f"the provider is refusing mail from this account: {detail}")
    if code == 421 or (stage != "rcpt" and code in (451, 452) and _ACCOUNT_WORDS.search(text)):
        if _ACCOUNT_WORDS.search(text):
            return AccountFailure(f"the provider is limiting this account: {detail}")
        return TemporaryFailure(f"the server closed the session: {detail}")
    if 400 <= code < 500:
        return TemporaryFailure(f"temporary failure at {stage.upper()}: {detail}")
    if code >= 500:
        return PermanentFailure(f"refused at {stage.upper()}: {detail}")
    return TemporaryFailure(f"unexpected reply at {stage.upper()}: {detail}")


@dataclass(frozen=True)
class SendResult:
    accepted: tuple[str, ...]
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)  # permanent
    deferred: dict[str, tuple[int, str]] = field(default_factory=dict)  # temporary (4xx RCPT)
    reply: str = ""


def _tls_context(server: Server) -> ssl.SSLContext:
    """Verification always on; tls_ca_file adds trust on top of the system's."""
    ctx = ssl.create_default_context()
    if server.tls_ca_file is not None:
        ctx.load_verify_locations(cafile=str(server.tls_ca_file))
    return ctx


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


# An address smtplib.quoteaddr() would return as "<address>" unchanged.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDR = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_ATOM}(?:\.{_ATOM})*")
_LINE_ENDS = re.compile(rb"\r\n|\n|\r(?!\n)")
_LEADING_DOT = re.compile(rb"(?m)^\.")


def _quoteaddr(addr: str) -> str:
    """smtplib.quoteaddr(), without parsing the common plain address."""
    if _PLAIN_ADDR.fullmatch(addr):
        return f"<{addr}>"
    return smtplib.quoteaddr(addr)


def _payload(data: bytes) -> bytes:
    """The DATA payload with the final dot: smtplib.quotedata() on bytes."""
    payload = _LEADING_DOT.sub(b"..", _LINE_ENDS.sub(b"\r\n", data))
    if not payload.endswith(b"\r\n"):
        payload += b"\r\n"
    return payload + b".\r\n"


def _no_recipient(
    refused: dict[str, tuple[int, str]], deferred: dict[str, tuple[int, str]]
) -> TemporaryFailure | PermanentFailure:
    """The error when no recipient was accepted: temporary if any was only deferred."""
    if deferred:
        rcpt, (code, text) = next(iter(deferred.items()))
        return TemporaryFailure(f"every recipient was deferred, e.g. {rcpt}: {code} {text}")
    failure = PermanentFailure(
        "every recipient was refused: "
        + "; ".join(f"{r}: {c} {t}" for r, (c, t) in refused.items())
    )
    failure.refused = refused  # type: ignore[attr-defined]
    return failure


class _Drop(Exception):
    """Wraps the error to raise when the connection must be dropped, not reset
    (replies of a pipelined group left unread)."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class SmtpSender:
    """Sends messages over one reusable SMTP connection."""

    def __init__(
        self,
        server: Server,
        credentials: Credentials,
        *,
        timeout: float = 60.0,
        local_hostname: str | None = None,
    ) -> None:
        self.server = server
        self.credentials = credentials
        self.timeout = timeout
        self.local_hostname = local_hostname
        self._conn: smtplib.SMTP | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def connect(self) -> None:
        """Open, secure and authenticate a connection (a no-op if one is open)."""
        if self._conn is not None:
            return
        s = self.server
        step = "connect"
        try:
            if s.security == "tls":
                step = "TLS"
                conn: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.host,
                    s.port,
                    local_hostname=self.local_hostname,
                    timeout=self.timeout,
                    context=_tls_context(s),
                )
            else:
                conn = smtplib.SMTP(
                    s.host, s.port, local_hostname=self.local_hostname, timeout=self.timeout
                )
            conn.ehlo()
            if s.security == "starttls":
                step = "STARTTLS"
                if not conn.has_extn("starttls"):
                    conn.close()
                    raise TemporaryFailure(
                        f"{s.host}:{s.port} does not offer STARTTLS; refusing to send in clear "
                        "(check outgoing.port and outgoing.security)"
                    )
                conn.starttls(context=_tls_context(s))
                conn.ehlo()
            step = "login"
            try:
                self._login(conn)
            except SecretError:
                conn.close()
                raise
        except SecretError as exc:
            # The password file went missing or wide open since start-up: an
            # account problem (the queue pauses), never the message's fault.
            raise AccountFailure(f"cannot log in: {exc}") from None
        except smtplib.SMTPAuthenticationError as exc:
            self.credentials.invalidate()
            hint = (
                "a fresh OAuth2 access token was refused too: check the account's SMTP AUTH "
                "setting and the scope, or re-authorise with `exactmaild authorize`"
                if self.credentials.method == "oauth2"
                else "check the password file or the account's SMTP AUTH setting"
            )
            raise AccountFailure(
                f"{s.host} refused the login for {self.credentials.username}: "
                f"{exc.smtp_code} {_text(exc.smtp_error)} ({hint})"
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise TemporaryFailure(
                f"TLS with {s.host}:{s.port} failed: the certificate is not trusted "
                f"({exc.verify_message}); set outgoing.tls_ca_file if it is a private CA"
            ) from None
        except ssl.SSLError as exc:
            raise TemporaryFailure(f"TLS with {s.host}:{s.port} failed: {exc}") from None
        except socket.gaierror as exc:
            raise TemporaryFailure(
                f"cannot resolve {s.host}: {exc.strerror} (check outgoing.host)"
            ) from None
        except smtplib.SMTPResponseException as exc:
            raise classify_reply(exc.smtp_code, _text(exc.smtp_error), stage="connect") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise TemporaryFailure(
                f"cannot {step} to {s.host}:{s.port}: {exc or type(exc).__name__}"
            ) from None
        self._conn = conn

    def _login(self, conn: smtplib.SMTP) -> None:
        creds = self.credentials
        if creds.method == "none":
            return
        if creds.method == "oauth2":
            user = creds.username
            # A token the server refuses although it has not expired by our
            # clock (revoked, or the clocks disagree): one retry with a fresh
            # one before the login counts as refused and the queue pauses.
            for attempt in (1, 2):
                token = creds.secret()

                def xoauth2(challenge: bytes | None = None, token: str = token) -> str:
                    # A 334 after the initial response is the server's JSON error
                    # challenge: the client answers empty (never the token again)
                    # and the server then sends the 535.
                    if challenge is not None:
                        return ""
                    return f"user={user}\x01auth=Bearer {token}\x01\x01"

                try:
                    conn.auth("XOAUTH2", xoauth2, initial_response_ok=True)
                    return
                except smtplib.SMTPAuthenticationError:
                    if attempt == 2:
                        raise
                    creds.invalidate()
        if not conn.has_extn("auth"):
            raise TemporaryFailure(
                f"{self.server.host} does not offer AUTH on this connection "
                "(does it need outgoing.security: starttls?)"
            )
        conn.login(creds.username, creds.secret())

    def close(self) -> None:
        """Say goodbye politely when idle; drop the socket if that fails."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.quit()
        except (OSError, smtplib.SMTPException):
            conn.close()

    def abort(self) -> None:
        """Break an in-flight transaction from another thread (on shutdown)."""
        conn = self._conn
        sock = getattr(conn, "sock", None) if conn else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def send(self, sender: str, recipients: tuple[str, ...], data: bytes) -> SendResult:
        """One SMTP transaction. Raises per the module's failure taxonomy.

        With PIPELINING (RFC 2920) MAIL, the RCPTs and DATA go out in one write
        and the replies are read and judged in order, exactly as they are one by
        one without it. A failure that leaves pipelined replies unread drops the
        connection instead of resetting it (a later reply could be a 354 waiting
        for a body we will not send). The body goes out only after the 354, so
        an error before it never leaves the outcome unknown.
        """
        self.connect()
        conn = self._conn
        assert conn is not None
        pipelined = conn.has_extn("pipelining")
        commands = [f"mail from:{_quoteaddr(sender)}"]
        commands.extend(f"rcpt to:{_quoteaddr(r)}" for r in recipients)
        commands.append("data")
        body_sent = False

        def reply(command: str) -> tuple[int, str]:
            if not pipelined:
                conn.putcmd(command)
            code, resp = conn.getreply()
            return code, _text(resp)

        def fail(error: Exception) -> Exception:
            # Pipelined replies still unread: the connection cannot be reused.
            return _Drop(error) if pipelined else error

        try:
            if pipelined:
                if any("\r" in c or "\n" in c for c in commands):
                    raise ValueError("command and arguments contain prohibited newline characters")
                conn.send("".join(f"{c}\r\n" for c in commands))
            code, text = reply(commands[0])
            if code != 250:
                raise fail(classify_reply(code, text, stage="mail"))
            accepted: list[str] = []
            refused: dict[str, tuple[int, str]] = {}
            deferred: dict[str, tuple[int, str]] = {}
            for rcpt, command in zip(recipients, commands[1:-1], strict=True):
                code, text = reply(command)
                if code in (250, 251):
                    accepted.append(rcpt)
                elif code >= 500:
                    refused[rcpt] = (code, text)
                elif code == 421 or _ACCOUNT_WORDS.search(text):
                    raise fail(classify_reply(code, text, stage="mail"))
                else:
                    deferred[rcpt] = (code, text)
            if not accepted:
                failure = _no_recipient(refused, deferred)
                if not pipelined:
                    conn.rset()
                    raise failure
                try:
                    code, _ = conn.getreply()  # DATA's, normally 503 or 554
                except (OSError, smtplib.SMTPException):
                    raise _Drop(failure) from None
                raise _Drop(failure) if code == 354 else failure
            code, text = reply("data")
            if code != 354:
                raise classify_reply(code, text, stage="data")
            body_sent = True
            conn.send(_payload(data))
            code, resp = conn.getreply()
            text = _text(resp)
            if code != 250:
                raise classify_reply(code, text, stage="data")
        except _Drop as exc:
            self._drop()
            raise exc.error from None
        except (TemporaryFailure, PermanentFailure):
            if not body_sent:
                self._reset_or_drop()
            raise
        except smtplib.SMTPResponseException as exc:
            self._drop()
            raise classify_reply(exc.smtp_code, _text(exc.smtp_error), stage="mail") from None
        except (OSError, smtplib.SMTPException) as exc:
            self._drop()
            what = str(exc) or type(exc).__name__
            if body_sent:
                raise UnknownOutcome(
                    f"the connection to {self.server.host} was lost after the message "
                    f"went out, before the server confirmed it ({what})"
                ) from None
            raise TemporaryFailure(f"the connection to {self.server.host} failed: {what}") from None
        return SendResult(tuple(accepted), refused, deferred, f"{code} {text}")

    def _reset_or_drop(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            conn.rset()
        except (OSError, smtplib.SMTPException):
            self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()


def test_login(server: Server, credentials: Credentials, *, timeout: float = 20.0) -> str:
    """Connect, secure and log in without sending anything; returns the greeting summary."""
    sender = SmtpSender(server, credentials, timeout=timeout)
    sender.connect()
    try:
        return f"logged in to {server.host}:{server.port} ({server.security})"
    finally:
        sender.close()
