"""The SMTP transport: the only module that imports smtplib.

One connection, reused while messages wait and closed when idle. Failures
become errors of the tree: replies through `exactmaild.send.replies`; a
connection lost after the body went out is UnknownOutcome.

DATA is written by hand (not smtplib.sendmail), to know whether the body had
gone out when a connection dropped. A transaction is split where the caller
must act (`begin()`, `end()`, `reply()`): its reservation commits in between,
while the server answers. With PIPELINING (RFC 2920) MAIL, every RCPT and
DATA go out in one write, and `follow()` puts them in the same write as the
previous message's final dot: one round trip a message while messages wait.
"""

from __future__ import annotations

import contextlib
import smtplib
import socket
import ssl

from exactmaild.auth.credentials import Credentials
from exactmaild.auth.secrets import SecretError
from exactmaild.auth.tls import TlsContexts
from exactmaild.config.model import Server
from exactmaild.core.errors import (
    AccountFailure,
    PermanentFailure,
    TemporaryFailure,
    UnknownOutcome,
)
from exactmaild.send.replies import classify_reply, is_account_reply, login_refused, no_recipient
from exactmaild.send.transport import Replies, SendResult
from exactmaild.send.wire import payload, quoteaddr, text_of


class _Drop(Exception):
    """The error to raise once the connection is dropped (pipelined replies unread)."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class SmtpConnection:
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
        self.step = "connect"  # how far connect() got: the step a failure belongs to
        self._tls_contexts = TlsContexts()  # one per SmtpConnection: one per configuration

    def _tls(self) -> ssl.SSLContext:
        """The TLS context, rebuilt only when outgoing.tls_ca_file changes on disk."""
        return self._tls_contexts.get(self.server.tls_ca_file)

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def connect(self) -> None:
        """Open, secure and authenticate a connection (a no-op if one is open)."""
        if self._conn is not None:
            return
        s = self.server
        self.step = step = "connect"
        try:
            if s.security == "tls":
                self.step = step = "TLS"
                conn: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.host,
                    s.port,
                    local_hostname=self.local_hostname,
                    timeout=self.timeout,
                    context=self._tls(),
                )
            else:
                conn = smtplib.SMTP(
                    s.host, s.port, local_hostname=self.local_hostname, timeout=self.timeout
                )
            # Each write is a whole group (a body and its dot with the next
            # MAIL/RCPT/DATA): NODELAY sends it at once, where Nagle could hold
            # it for an ACK the server delays (40 ms).
            if conn.sock is not None:
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.ehlo()
            if s.security == "starttls":
                self.step = step = "STARTTLS"
                if not conn.has_extn("starttls"):
                    conn.close()
                    raise TemporaryFailure(
                        f"{s.host}:{s.port} does not offer STARTTLS; refusing to send in clear "
                        "(check outgoing.port and outgoing.security)"
                    )
                conn.starttls(context=self._tls())
                conn.ehlo()
            self.step = step = "login"
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
            code, text = exc.smtp_code, text_of(exc.smtp_error)
            raise login_refused(code, text, s.host, self.credentials.username, hint) from None
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
            raise classify_reply(exc.smtp_code, text_of(exc.smtp_error), stage="connect") from None
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
            # A token refused although unexpired by our clock (revoked, or the
            # clocks disagree): one retry with a fresh one before the pause.
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
        """One whole SMTP transaction (begin, end, reply); raises per the error tree."""
        tx = self.begin(sender, recipients, data)
        tx.end()
        return tx.reply()

    def begin(self, sender: str, recipients: tuple[str, ...], data: bytes) -> Transaction:
        """Start a transaction; the server cannot take the message before
        `Transaction.end()`, so every failure up to then is a known one (never
        UnknownOutcome). Pipelined, MAIL/RCPT/DATA go out in one write and
        their replies are judged in `end()`, in order, as one by one: the
        server answers while the caller's commit syncs. Without PIPELINING
        the exchange up to the 354 happens here."""
        self.connect()
        tx = Transaction(self, sender, recipients, data)
        if tx.pipelined:
            try:
                tx.put(b"")
            except (OSError, smtplib.SMTPException) as exc:
                raise self._lost(exc) from None
        else:
            tx.exchange()
        return tx

    def _lost(self, exc: Exception) -> TemporaryFailure:
        """The connection failed before the server could take anything: dropped."""
        self._drop()
        what = str(exc) or type(exc).__name__
        return TemporaryFailure(f"the connection to {self.server.host} failed: {what}")

    def _reset_or_drop(self) -> None:
        try:
            if self._conn is not None:
                self._conn.rset()
        except (OSError, smtplib.SMTPException):
            self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()


class Transaction:
    """One message's transaction (SmtpConnection.begin): `end()` sends the body
    and its final dot (pipelined: holds them for `follow()` or `reply()`),
    `reply()` reads the verdict; `abandon()` gives it up."""

    def __init__(
        self, owner: SmtpConnection, sender: str, recipients: tuple[str, ...], data: bytes
    ) -> None:
        conn = owner._conn
        assert conn is not None
        self._owner, self._conn = owner, conn
        self._recipients, self._data = recipients, data
        self._commands = [f"mail from:{quoteaddr(sender)}"]
        self._commands.extend(f"rcpt to:{quoteaddr(r)}" for r in recipients)
        self._commands.append("data")
        if any("\r" in c or "\n" in c for c in self._commands):
            raise ValueError("command and arguments contain prohibited newline characters")
        self.pipelined = conn.has_extn("pipelining")
        self._ready = False  # the 354 is in
        self._accepted: tuple[str, ...] = ()
        self._refused: Replies = {}
        self._deferred: Replies = {}
        self._error: BaseException | None = None
        self._held: bytes | None = None  # the body and its dot, not yet written

    def put(self, before: bytes) -> None:
        """Write `before` (a held body and dot, or nothing) and MAIL/RCPT/DATA at once."""
        group = "".join(f"{c}\r\n" for c in self._commands)
        self._conn.send(before + group.encode(self._conn.command_encoding))

    def exchange(self) -> None:
        """MAIL, RCPT, DATA up to the 354 (pipelined: only their replies)."""
        conn, pipelined = self._conn, self.pipelined
        owner = self._owner

        def reply(command: str) -> tuple[int, str]:
            if not pipelined:
                conn.putcmd(command)
            code, resp = conn.getreply()
            return code, text_of(resp)

        def fail(error: Exception) -> Exception:
            # Pipelined replies still unread: the connection cannot be reused.
            return _Drop(error) if pipelined else error

        try:
            code, text = reply(self._commands[0])
            if code != 250:
                raise fail(classify_reply(code, text, stage="mail"))
            accepted: list[str] = []
            for rcpt, command in zip(self._recipients, self._commands[1:-1], strict=True):
                code, text = reply(command)
                if code in (250, 251):
                    accepted.append(rcpt)
                elif code >= 500:
                    self._refused[rcpt] = (code, text)
                elif is_account_reply(code, text):
                    raise fail(classify_reply(code, text, stage="mail"))
                else:
                    self._deferred[rcpt] = (code, text)
            if not accepted:
                failure = no_recipient(self._refused, self._deferred)
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
        except _Drop as exc:
            owner._drop()
            raise exc.error from None
        except (TemporaryFailure, PermanentFailure):
            owner._reset_or_drop()
            raise
        except smtplib.SMTPResponseException as exc:
            owner._drop()
            raise classify_reply(exc.smtp_code, text_of(exc.smtp_error), stage="mail") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise owner._lost(exc) from None
        self._accepted = tuple(accepted)
        self._ready = True

    def end(self) -> None:
        """Judge the replies up to the 354 (raising a known failure, as begin()
        does), then send the body and its final dot in one write (pipelined:
        the one of `follow()` or `reply()`): from here the server may take it.
        A failed write is raised by `reply()`, as UnknownOutcome."""
        if not self._ready:
            self.exchange()
        if self.pipelined:
            self._held = payload(self._data)
            return
        try:
            self._conn.send(payload(self._data))
        except (OSError, smtplib.SMTPException) as exc:
            self._error = exc

    def follow(self, sender: str, recipients: tuple[str, ...], data: bytes) -> Transaction:
        """After `end()`, before `reply()` (pipelined only): the next transaction's
        MAIL/RCPT/DATA in the same write as this final dot (RFC 2920), their
        replies and this verdict in one round trip. A failed write is this
        message's unknown outcome (from `reply()`) and the next one's known
        failure (TemporaryFailure, here)."""
        if self._held is None:
            raise RuntimeError("follow() needs a pipelined transaction after end()")
        nxt = Transaction(self._owner, sender, recipients, data)
        held, self._held = self._held, None
        try:
            nxt.put(held)
        except (OSError, smtplib.SMTPException) as exc:
            self._error = exc
            raise self._owner._lost(exc) from None
        return nxt

    def reply(self) -> SendResult:
        """The server's verdict on the message (after `end()`)."""
        host = self._owner.server.host
        held, self._held = self._held, None
        try:
            if self._error is not None:
                raise self._error
            if held is not None:
                self._conn.send(held)
            code, resp = self._conn.getreply()
        except (OSError, smtplib.SMTPException) as exc:
            self._owner._drop()
            what = str(exc) or type(exc).__name__
            raise UnknownOutcome(
                f"the connection to {host} was lost after the message "
                f"went out, before the server confirmed it ({what})"
            ) from None
        text = text_of(resp)
        if code == 421:
            # The server is closing (RFC 5321 3.8): nothing begun after it goes on.
            self._owner._drop()
        if code != 250:
            raise classify_reply(code, text, stage="data")
        return SendResult(self._accepted, self._refused, self._deferred, f"{code} {text}")

    def abandon(self) -> None:
        """Give it up before `end()`: drop the connection; the server discards it."""
        self._held = None
        self._owner._drop()
