"""One message's SMTP transaction: MAIL, RCPT, DATA, the body, the verdict.

DATA is written by hand (not smtplib.sendmail), to know whether the body had
gone out when a connection dropped. A transaction is split where the caller
must act (`end()`, `reply()`): its reservation commits in between, while the
server answers. With PIPELINING (RFC 2920) MAIL, every RCPT and DATA go out
in one write, and `follow()` puts them in the same write as the previous
message's final dot: one round trip a message while messages wait.

A transaction holds at most outgoing.max_recipients recipients, and the
RCPTs a server refuses with "too many recipients" (`send.split`) are not
refused: both are `SendResult.later`, for `again()` to send on the same
connection once this transaction is done.
"""

from __future__ import annotations

import smtplib
from typing import Protocol

from exactmaild.config.model import Server
from exactmaild.core.errors import PermanentFailure, TemporaryFailure, UnknownOutcome
from exactmaild.send.replies import classify_reply, is_account_reply, no_recipient
from exactmaild.send.split import over_recipient_limit
from exactmaild.send.transport import Replies, SendResult
from exactmaild.send.wire import payload, quoteaddr, text_of


class Session(Protocol):
    """What a transaction asks of its connection (`session.SmtpConnection`)."""

    server: Server
    _conn: smtplib.SMTP | None

    def begin(self, sender: str, recipients: tuple[str, ...], data: bytes) -> Transaction: ...
    def transaction(self, sender: str, recipients: tuple[str, ...], data: bytes) -> Transaction: ...
    def touch(self) -> None: ...
    def _lost(self, exc: Exception) -> TemporaryFailure: ...
    def _reset_or_drop(self) -> None: ...
    def _drop(self) -> None: ...


class _Drop(Exception):
    """The error to raise once the connection is dropped (pipelined replies unread)."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class Transaction:
    """One message's transaction (SmtpConnection.begin): `end()` sends the body
    and its final dot (pipelined: holds them for `follow()` or `reply()`),
    `reply()` reads the verdict; `abandon()` gives it up; `again()` sends the
    same message to the recipients it had no room for."""

    def __init__(
        self,
        owner: Session,
        sender: str,
        recipients: tuple[str, ...],
        data: bytes,
        later: tuple[str, ...] = (),
    ) -> None:
        conn = owner._conn
        assert conn is not None
        self._owner, self._conn = owner, conn
        self._sender, self._recipients, self._data = sender, recipients, data
        self._commands = [f"mail from:{quoteaddr(sender)}"]
        self._commands.extend(f"rcpt to:{quoteaddr(r)}" for r in recipients)
        self._commands.append("data")
        if any("\r" in c or "\n" in c for c in self._commands):
            raise ValueError("command and arguments contain prohibited newline characters")
        self.pipelining = conn.has_extn("pipelining")
        self._ready = False  # the 354 is in
        self._accepted: tuple[str, ...] = ()
        self._refused: Replies = {}
        self._deferred: Replies = {}
        self._over: list[str] = []  # RCPTs past the server's recipient limit
        self._later = later  # past outgoing.max_recipients
        self._error: BaseException | None = None
        self._held: bytes | None = None  # the body and its dot, not yet written

    @property
    def pipelined(self) -> bool:
        """Whether `follow()` may begin the next message with this final dot:
        the server pipelines and this message needs no further transaction."""
        return self.pipelining and not self._later and not self._over

    def put(self, before: bytes) -> None:
        """Write `before` (a held body and dot, or nothing) and MAIL/RCPT/DATA at once."""
        group = "".join(f"{c}\r\n" for c in self._commands)
        self._conn.send(before + group.encode(self._conn.command_encoding))

    def exchange(self) -> None:
        """MAIL, RCPT, DATA up to the 354 (pipelined: only their replies)."""
        conn, pipelined = self._conn, self.pipelining
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
                if self._over and not pipelined:
                    self._over.append(rcpt)  # past the limit: not asked (RFC 5321 4.5.3.1.10)
                    continue
                code, text = reply(command)
                if code in (250, 251):
                    accepted.append(rcpt)
                elif over_recipient_limit(code, text):
                    self._over.append(rcpt)
                elif code >= 500:
                    self._refused[rcpt] = (code, text)
                elif is_account_reply(code, text):
                    raise fail(classify_reply(code, text, stage="mail"))
                else:
                    self._deferred[rcpt] = (code, text)
            if not accepted:
                if self._over:
                    # Not even the first recipient fits: no transaction can take it.
                    self._deferred.update(dict.fromkeys(self._over, (code, text)))
                    self._over = []
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
        if self.pipelining:
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
        if self._held is None or not self.pipelined:
            raise RuntimeError("follow() needs a pipelined transaction after end()")
        nxt = self._owner.transaction(sender, recipients, data)
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
        self._owner.touch()
        text = text_of(resp)
        if code == 421:
            # The server is closing (RFC 5321 3.8): nothing begun after it goes on.
            self._owner._drop()
        if code != 250:
            raise classify_reply(code, text, stage="data")
        later = tuple(self._over) + self._later
        return SendResult(self._accepted, self._refused, self._deferred, f"{code} {text}", later)

    def again(self, recipients: tuple[str, ...]) -> Transaction:
        """After `reply()`: the same message to `recipients`, a new transaction
        on the same connection (reconnecting if it went)."""
        return self._owner.begin(self._sender, recipients, self._data)

    def abandon(self) -> None:
        """Give it up before `end()`: drop the connection; the server discards it."""
        self._held = None
        self._owner._drop()
