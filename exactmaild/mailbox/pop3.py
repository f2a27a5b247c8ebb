"""The POP3 adapter (poplib): login, UIDL tracking, RETR, and DELE after delivery.

Owns the POP3 receive position: the set of UIDLs already delivered, per key
"pop3:<user>@<host>". POP3 has no folders and no UIDs that grow, only UIDL
strings, so the whole listing is compared with that set at each check
(UIDLs no longer on the server are forgotten: servers may reuse them).

`leave_on_server: true` never fetches a seen UIDL again, and fetches with TOP so
the message stays unread on the server. `false` fetches with RETR and sends DELE
for a message only after it is in the Maildir and its UIDL is recorded as
seen. A POP3 server applies DELE only at QUIT; if the QUIT is lost (crash,
dropped connection) the messages come back, are recognised as seen, and are
deleted at the next check without being delivered again.
"""

from __future__ import annotations

import base64
import contextlib
import poplib
import socket
import ssl
from typing import TYPE_CHECKING, Any

from exactmaild.config import Incoming
from exactmaild.credentials import Credentials
from exactmaild.errors import ExactmailError
from exactmaild.mailbox import (
    DEFAULT_TIMEOUT,
    Deliver,
    LoginFailure,
    MailboxFailure,
    OnStep,
    describe,
    open_socket,
    peer_is_loopback,
    tls_context,
    wrap_tls,
    xoauth2,
)

if TYPE_CHECKING:
    from exactmaild.state import StateStore

# poplib refuses lines over 2048 bytes (RFC 1939 says 512), but real mail has
# far longer ones (unwrapped HTML, base64 without breaks); refusing them would
# leave such a message on the server forever. The cap still bounds memory.
poplib._MAXLINE = max(poplib._MAXLINE, 64 * 1024 * 1024)  # type: ignore[attr-defined]

_WIRE_ERRORS = (OSError, EOFError, poplib.error_proto, ValueError)

# RFC 3206 response codes that mean "try later", not "wrong credentials".
_TEMPORARY_LOGIN_CODES = (b"[SYS/TEMP]", b"[IN-USE]", b"[LOGIN-DELAY]")


class _POP3(poplib.POP3):
    """poplib with our own socket: DNS, connect and (implicit) TLS as separate steps."""

    def __init__(
        self,
        incoming: Incoming,
        timeout: float,
        ctx: ssl.SSLContext | None,
        on_step: OnStep | None,
    ) -> None:
        self._incoming = incoming
        self._ctx = ctx
        self._on_step = on_step
        super().__init__(incoming.host, incoming.port, timeout)

    def _create_socket(self, timeout: float) -> socket.socket:
        sock = open_socket(self._incoming, timeout or DEFAULT_TIMEOUT, self._on_step)
        if self._ctx is not None:
            return wrap_tls(
                sock, self._ctx, self._incoming.host, self._incoming.port, self._on_step
            )
        return sock

    def auth_xoauth2(self, sasl: str) -> None:
        """AUTH XOAUTH2 with the initial response on the command line (RFC 5034)."""
        # poplib has no AUTH command; its untyped line helpers do the framing.
        raw: Any = self
        raw._putcmd("AUTH XOAUTH2 " + base64.b64encode(sasl.encode()).decode())
        resp = raw._getresp()  # raises error_proto on -ERR
        if not resp.startswith(b"+OK"):
            # A "+ <error details>" challenge: answer empty, the -ERR follows.
            raw._putline(b"")
            raw._getresp()


class POP3Mailbox:
    """One POP3 session with `incoming` (see the module docstring for what it keeps)."""

    def __init__(
        self,
        incoming: Incoming,
        credentials: Credentials,
        state: StateStore | None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        log: Any = None,
    ) -> None:
        self.incoming = incoming
        self.credentials = credentials
        self._state = state
        self.timeout = timeout
        self.log = log
        self.key = f"pop3:{credentials.username}@{incoming.host}"
        self.fetches = 0
        self._no_top = False
        self._pop: _POP3 | None = None

    # -- connection ------------------------------------------------------------

    def connect(self, on_step: OnStep | None = None) -> None:
        inc = self.incoming
        ctx = tls_context(inc.tls_ca_file) if inc.security != "none" else None
        try:
            pop = _POP3(inc, self.timeout, ctx if inc.security == "tls" else None, on_step)
        except ExactmailError:
            raise
        except _WIRE_ERRORS as exc:
            raise MailboxFailure(
                "connect",
                f"{inc.host} port {inc.port} did not greet as a POP3 server ({describe(exc)}): "
                "check incoming.port, incoming.protocol and incoming.security",
            ) from exc
        self._pop = pop
        if inc.security == "starttls":
            assert ctx is not None
            try:
                pop.stls(context=ctx)
            except ssl.SSLCertVerificationError as exc:
                self.close()
                raise MailboxFailure(
                    "TLS",
                    f"the certificate of {inc.host} port {inc.port} is not trusted "
                    f"({exc.verify_message or exc}): if the server uses a private CA or a "
                    "self-signed certificate, set incoming.tls_ca_file to it; check that "
                    "incoming.host is the name on the certificate",
                ) from exc
            except _WIRE_ERRORS as exc:
                self.close()
                raise MailboxFailure(
                    "TLS",
                    f"STLS with {inc.host} port {inc.port} failed ({describe(exc)}): "
                    "use security: tls (usually port 995) if the server has no STLS",
                ) from exc
            if on_step:
                sock = pop.sock
                version = sock.version() if isinstance(sock, ssl.SSLSocket) else "TLS"
                on_step("TLS", f"STLS, {version}, certificate verified for {inc.host}")
        self._login(pop, on_step)

    def _login(self, pop: _POP3, on_step: OnStep | None) -> None:
        creds = self.credentials
        inc = self.incoming
        if creds.method == "none":
            self.close()
            raise LoginFailure(
                f"POP3 always needs a login but account.auth.method is none: "
                f"set the method and its secret for {inc.host}"
            )
        if inc.security == "none" and not peer_is_loopback(pop.sock):
            self.close()
            raise MailboxFailure(
                "login",
                f"refusing to send credentials unencrypted to {inc.host}: "
                "use security: tls or starttls (security: none is for loopback only)",
            )
        try:
            secret = creds.secret()
        except ExactmailError:
            self.close()
            raise
        try:
            if creds.method == "oauth2":
                pop.auth_xoauth2(xoauth2(creds.username, secret))
                how = "XOAUTH2"
            else:
                pop.user(creds.username)
                pop.pass_(secret)
                how = "USER/PASS"
        except poplib.error_proto as exc:
            self.close()
            raw = exc.args[0] if exc.args and isinstance(exc.args[0], bytes) else b""
            text = raw.decode(errors="replace") or describe(exc)
            if any(code in raw for code in _TEMPORARY_LOGIN_CODES):
                raise MailboxFailure(
                    "login", f"{inc.host} cannot log in {creds.username} right now ({text})"
                ) from exc
            creds.invalidate()
            raise LoginFailure(
                f"{inc.host} refused the login for {creds.username} ({text}): check "
                "account.auth.username and the password file (or the OAuth2 grant)"
            ) from exc
        except _WIRE_ERRORS as exc:
            self.close()
            raise MailboxFailure("login", f"login failed ({describe(exc)})") from exc
        if on_step:
            on_step("login", f"{creds.username} logged in ({how})")

    def close(self) -> None:
        """QUIT: this is also what makes the server apply the DELEs of this session."""
        pop, self._pop = self._pop, None
        if pop is None:
            return
        try:
            pop.quit()
        except Exception:  # the DELEs are re-sent next check: seen UIDLs are recorded
            with contextlib.suppress(Exception):
                pop.close()

    def state(self) -> StateStore:
        """The state store: needed to receive, not to test a connection."""
        if self._state is None:
            raise MailboxFailure("fetch", "no state store: this connection only tests the login")
        return self._state

    def _conn(self) -> _POP3:
        if self._pop is None:
            raise MailboxFailure("connect", "not connected")
        return self._pop

    # -- mailbox ------------------------------------------------------------------

    def open_folder(self) -> str:
        try:
            count, size = self._conn().stat()
        except _WIRE_ERRORS as exc:
            raise MailboxFailure("folder", f"STAT failed ({describe(exc)})") from exc
        return f"{count} messages ({size} bytes)"

    def fetch_new(self, deliver: Deliver, now: float) -> int:
        pop = self._conn()
        listing = self._uidl(pop)
        self.state().keep_pop3_seen(self.key, {u for _, u in listing})
        seen = self.state().pop3_seen(self.key)
        delete = not self.incoming.leave_on_server
        sizes = self._sizes(pop) if not delete else {}
        delivered = 0
        for num, uidl in listing:
            if uidl not in seen:
                data = self._retr(pop, num) if delete else self._top(pop, num, sizes.get(num))
                deliver(data)
                # Seen before DELE: if the QUIT that commits the DELE is lost,
                # the message is recognised next time instead of re-delivered.
                self.state().add_pop3_seen(self.key, uidl, now)
                delivered += 1
            if delete:
                try:
                    pop.dele(num)
                except _WIRE_ERRORS as exc:
                    raise MailboxFailure(
                        "fetch", f"DELE of message {num} failed ({describe(exc)})"
                    ) from exc
        return delivered

    def _uidl(self, pop: _POP3) -> list[tuple[int, str]]:
        try:
            _resp, lines, _octets = pop.uidl()
        except poplib.error_proto as exc:
            raise MailboxFailure(
                "fetch",
                f"the server refused UIDL ({describe(exc)}); without it exactmaild cannot "
                "tell new messages from old: use IMAP if the provider offers it",
            ) from exc
        except _WIRE_ERRORS as exc:
            raise MailboxFailure("fetch", f"UIDL failed ({describe(exc)})") from exc
        out: list[tuple[int, str]] = []
        for line in lines:
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit():
                out.append((int(parts[0]), parts[1].decode(errors="replace")))
        return out

    def _sizes(self, pop: _POP3) -> dict[int, int]:
        try:
            _resp, lines, _octets = pop.list()
        except _WIRE_ERRORS as exc:
            raise MailboxFailure("fetch", f"LIST failed ({describe(exc)})") from exc
        out: dict[int, int] = {}
        for line in lines:
            parts = line.split()
            if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
                out[int(parts[0])] = int(parts[1])
        return out

    def _top(self, pop: _POP3, num: int, size: int | None) -> bytes:
        """The whole message without marking it read, when it stays on the server.

        RETR makes servers (Dovecot among them) flag the message as read, so
        webmail would show the practice's new mail as already read. "TOP n L"
        with L above the message's line count returns all of it (RFC 1939)
        and leaves the flag alone; a message of S octets has at most S+1 lines.
        """
        if size is None or self._no_top:
            return self._retr(pop, num)
        try:
            _resp, lines, _octets = pop.top(num, size + 1)
        except poplib.error_proto:
            self._no_top = True  # TOP is optional in POP3: RETR from now on
            return self._retr(pop, num)
        except _WIRE_ERRORS as exc:
            raise MailboxFailure("fetch", f"TOP {num} failed ({describe(exc)})") from exc
        self.fetches += 1
        return b"\r\n".join(lines) + b"\r\n"

    def _retr(self, pop: _POP3, num: int) -> bytes:
        try:
            _resp, lines, _octets = pop.retr(num)
        except _WIRE_ERRORS as exc:
            raise MailboxFailure("fetch", f"RETR {num} failed ({describe(exc)})") from exc
        self.fetches += 1
        # poplib has stripped the CRLFs and undone the dot-stuffing.
        return b"\r\n".join(lines) + b"\r\n"
