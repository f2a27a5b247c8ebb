"""The SMTP session: connect, secure, log in, keep the connection, close it.

One connection, reused between messages while the sender keeps it
(outgoing.keepalive) and probed with NOOP before reuse after a pause: a
server that closed it meanwhile costs a quiet reconnect, never a failed
send. Every failure on the way in (connect, a 4xx/5xx greeting, EHLO,
STARTTLS, TLS, AUTH) closes the socket before the error is raised: the
exception a caller keeps (a pause reason, a verdict) holds no descriptor,
and a server that allows one connection per client is not left with a dead
one. Failures become errors of the tree: replies through
`exactmaild.send.replies`.
"""

from __future__ import annotations

import contextlib
import smtplib
import socket
import ssl
import time

from exactmaild.auth.credentials import Credentials
from exactmaild.auth.secrets import SecretError
from exactmaild.auth.tls import TlsContexts
from exactmaild.config.model import Server
from exactmaild.core.counters import Counter
from exactmaild.core.errors import AccountFailure, TemporaryFailure
from exactmaild.send.replies import classify_reply, login_refused
from exactmaild.send.smtp.login import log_in
from exactmaild.send.smtp.transaction import Transaction
from exactmaild.send.split import chunk
from exactmaild.send.transport import SendResult
from exactmaild.send.wire import text_of

# A connection idle this long is probed (NOOP) before reuse. Back-to-back
# sends skip the round trip: the server had no time to close it.
PROBE_AFTER = 1.0


class SmtpConnection:
    """Sends messages over one reusable SMTP connection."""

    def __init__(
        self,
        server: Server,
        credentials: Credentials,
        *,
        timeout: float = 60.0,
        local_hostname: str | None = None,
        max_recipients: int | None = None,
        logins: Counter | None = None,
    ) -> None:
        """`max_recipients`: a transaction's most (outgoing.max_recipients);
        `logins`: counts each login made (exactmaild_smtp_logins_total)."""
        self.server = server
        self.credentials = credentials
        self.timeout = timeout
        self.local_hostname = local_hostname
        self.max_recipients = max_recipients
        self._logins = logins
        self._conn: smtplib.SMTP | None = None
        self.step = "connect"  # how far connect() got: the step a failure belongs to
        self._used = 0.0  # time.monotonic() of the last reply read
        self._tls_contexts = TlsContexts()  # one per SmtpConnection: one per configuration

    def _tls(self) -> ssl.SSLContext:
        """The TLS context, rebuilt only when outgoing.tls_ca_file changes on disk."""
        return self._tls_contexts.get(self.server.tls_ca_file)

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def touch(self) -> None:
        """The server just answered: the connection is known alive."""
        self._used = time.monotonic()

    def connect(self) -> None:
        """Open, secure and authenticate a connection; an open one is reused,
        after a NOOP if it was idle, and replaced quietly if the server closed it."""
        if self._conn is not None:
            if self._alive():
                return
            self._drop()
        conn = self._open()
        self._conn = conn
        self.touch()

    def _alive(self) -> bool:
        if time.monotonic() - self._used < PROBE_AFTER:
            return True
        assert self._conn is not None
        try:
            code, _ = self._conn.noop()
        except (OSError, smtplib.SMTPException):
            return False  # closed while idle (a timeout, a restart): reconnect
        if code != 250:
            return False  # 421: the server is closing it
        self.touch()
        return True

    def _open(self) -> smtplib.SMTP:
        s = self.server
        self.step = "TLS" if s.security == "tls" else "connect"
        try:
            # smtplib connects in the constructor and closes the socket itself
            # when that fails (a refused TLS handshake, a 421 or 554 greeting).
            conn = (
                smtplib.SMTP_SSL(
                    s.host,
                    s.port,
                    local_hostname=self.local_hostname,
                    timeout=self.timeout,
                    context=self._tls(),
                )
                if s.security == "tls"
                else smtplib.SMTP(
                    s.host, s.port, local_hostname=self.local_hostname, timeout=self.timeout
                )
            )
            try:
                self._establish(conn)
            except BaseException as exc:
                if isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code != 421:
                    # The server answered (a refused login, say): end the
                    # session with QUIT (RFC 5321 4.1.1.10) rather than drop it,
                    # so its log says so and it frees the slot at once.
                    with contextlib.suppress(OSError, smtplib.SMTPException):
                        conn.quit()
                conn.close()  # every later failure: no socket outlives the attempt
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
                f"cannot {self.step} to {s.host}:{s.port}: {exc or type(exc).__name__}"
            ) from None
        return conn

    def _establish(self, conn: smtplib.SMTP) -> None:
        """EHLO, STARTTLS, EHLO, AUTH on `conn`; `self.step` says how far it got."""
        s = self.server
        # Each write is a whole group (a body and its dot with the next
        # MAIL/RCPT/DATA): NODELAY sends it at once, where Nagle could hold
        # it for an ACK the server delays (40 ms).
        if conn.sock is not None:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.ehlo()
        if s.security == "starttls":
            self.step = "STARTTLS"
            if not conn.has_extn("starttls"):
                raise TemporaryFailure(
                    f"{s.host}:{s.port} does not offer STARTTLS; refusing to send in clear "
                    "(check outgoing.port and outgoing.security)"
                )
            conn.starttls(context=self._tls())
            conn.ehlo()
        self.step = "login"
        if self._logins is not None:  # an attempt counts: lockouts count attempts
            self._logins.inc()
        log_in(conn, self.credentials, s.host)

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
        tx = self.transaction(sender, recipients, data)
        if tx.pipelining:
            try:
                tx.put(b"")
            except (OSError, smtplib.SMTPException) as exc:
                raise self._lost(exc) from None
        else:
            tx.exchange()
        return tx

    def transaction(self, sender: str, recipients: tuple[str, ...], data: bytes) -> Transaction:
        """A transaction on the open connection, with at most max_recipients recipients."""
        now, later = chunk(recipients, self.max_recipients)
        return Transaction(self, sender, now, data, later)

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
