"""What the IMAP and POP3 adapters do alike, around their protocol specifics.

`OwnSocket` gives imaplib.IMAP4 and poplib.POP3 our own socket (DNS,
connect and implicit TLS as separate steps). `Adapter` is the connection
skeleton both adapters share: the connect steps, STARTTLS/STLS, the login
with its error mapping, the polite close; each adapter supplies the
protocol commands through a few small hooks. This module imports neither
imaplib nor poplib: only the adapters speak the protocols.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from exactmaild.auth.credentials import Credentials
from exactmaild.auth.tls import TlsContexts
from exactmaild.config.model import Incoming
from exactmaild.core.errors import ExactmailError
from exactmaild.core.log import Log
from exactmaild.receive.mailbox import (
    DEFAULT_TIMEOUT,
    LoginFailure,
    MailboxFailure,
    OnStep,
    describe,
    open_socket,
    peer_is_loopback,
    tls_context,
    wrap_tls,
)

if TYPE_CHECKING:
    from exactmaild.store.state import StateStore


class OwnSocket:
    """Mixin before imaplib.IMAP4 / poplib.POP3: DNS, connect and (implicit) TLS as steps."""

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
        client: Any = super()  # the protocol class: (host, port, timeout)
        client.__init__(incoming.host, incoming.port, timeout)

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        sock = open_socket(self._incoming, timeout or DEFAULT_TIMEOUT, self._on_step)
        if self._ctx is not None:
            return wrap_tls(
                sock, self._ctx, self._incoming.host, self._incoming.port, self._on_step
            )
        return sock


class _Client(Protocol):
    sock: socket.socket


C = TypeVar("C", bound=_Client)


class Adapter(Generic[C]):
    """The connection an IMAP or POP3 adapter keeps, and how it connects, logs in, closes."""

    # Errors a server or the network can cause while talking the protocol.
    wire_errors: ClassVar[tuple[type[BaseException], ...]]
    greets_as: ClassVar[str]  # "an IMAP server"
    starttls_command: ClassVar[str]  # "STARTTLS" / "STLS"
    starttls_hint: ClassVar[str] = ""  # appended to a failed STARTTLS's message

    def __init__(
        self,
        incoming: Incoming,
        credentials: Credentials,
        state: StateStore | None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        log: Log | None = None,
        tls: TlsContexts | None = None,
    ) -> None:
        self.incoming = incoming
        self._tls = tls if tls is not None else TlsContexts()
        self.credentials = credentials
        self._state = state
        self.timeout = timeout
        self.log = log
        self.key = self._position_key()
        self.fetches = 0
        # When the server took in the message fetched last (IMAP's
        # INTERNALDATE), for the receive latency; None where unknown (POP3).
        self.arrived: float | None = None
        self._client: C | None = None

    # -- protocol hooks ----------------------------------------------------------

    def _position_key(self) -> str:
        """The key of this account's receive position in the state store."""
        raise NotImplementedError

    def _open(self, ctx: ssl.SSLContext | None, on_step: OnStep | None) -> C:
        """The protocol client, connected and greeted (TLS already done if `ctx`)."""
        raise NotImplementedError

    def _start_tls(self, client: C, ctx: ssl.SSLContext) -> None:
        """Send STARTTLS/STLS and do the handshake."""
        raise NotImplementedError

    def _without_login(self, client: C, on_step: OnStep | None) -> None:
        """account.auth.method is none: return if the server let us in, else raise."""
        raise NotImplementedError

    def _authenticate(self, client: C, username: str, secret: str) -> str:
        """Log in with the account's method; returns how (for the step message)."""
        raise NotImplementedError

    def _refusal(self, exc: BaseException) -> tuple[str, bool] | None:
        """A login refused by the server: (its text, whether it is temporary); None else."""
        raise NotImplementedError

    def _goodbye(self, client: C) -> None:
        """The polite end of the session (LOGOUT / QUIT)."""
        raise NotImplementedError

    def _drop(self, client: C) -> None:
        """Close the socket when the goodbye failed."""
        raise NotImplementedError

    # -- connection ------------------------------------------------------------

    def connect(self, on_step: OnStep | None = None) -> None:
        inc = self.incoming
        ctx = tls_context(inc, self._tls) if inc.security != "none" else None
        try:
            client = self._open(ctx if inc.security == "tls" else None, on_step)
        except ExactmailError:
            raise
        except self.wire_errors as exc:
            raise MailboxFailure(
                "connect",
                f"{inc.host} port {inc.port} did not greet as {self.greets_as} "
                f"({describe(exc)}): "
                "check incoming.port, incoming.protocol and incoming.security",
            ) from exc
        self._client = client
        if inc.security == "starttls":
            assert ctx is not None
            self._starttls(client, ctx, on_step)
        self._login(client, on_step)

    def _starttls(self, client: C, ctx: ssl.SSLContext, on_step: OnStep | None) -> None:
        inc = self.incoming
        command = self.starttls_command
        try:
            self._start_tls(client, ctx)
        except ssl.SSLCertVerificationError as exc:
            self.close()
            raise MailboxFailure(
                "TLS",
                f"the certificate of {inc.host} port {inc.port} is not trusted "
                f"({exc.verify_message or exc}): if the server uses a private CA or a "
                "self-signed certificate, set incoming.tls_ca_file to it; check that "
                "incoming.host is the name on the certificate",
            ) from exc
        except self.wire_errors as exc:
            self.close()
            raise MailboxFailure(
                "TLS",
                f"{command} with {inc.host} port {inc.port} failed ({describe(exc)})"
                + self.starttls_hint,
            ) from exc
        if on_step:
            sock = client.sock
            version = sock.version() if isinstance(sock, ssl.SSLSocket) else "TLS"
            on_step("TLS", f"{command}, {version}, certificate verified for {inc.host}")

    def _login(self, client: C, on_step: OnStep | None) -> None:
        creds = self.credentials
        inc = self.incoming
        if creds.method == "none":
            self._without_login(client, on_step)
            return
        if inc.security == "none" and not peer_is_loopback(client.sock):
            # check-config refuses this too; this is the last line of defence.
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
            how = self._authenticate(client, creds.username, secret)
        except ExactmailError:
            self.close()
            raise
        except self.wire_errors as exc:
            self.close()
            refusal = self._refusal(exc)
            if refusal is None:
                raise MailboxFailure("login", f"login failed ({describe(exc)})") from exc
            text, temporary = refusal
            if temporary:
                raise MailboxFailure(
                    "login", f"{inc.host} cannot log in {creds.username} right now ({text})"
                ) from exc
            creds.invalidate()
            raise LoginFailure(
                f"{inc.host} refused the login for {creds.username} ({text}): check "
                "account.auth.username and the password file (or the OAuth2 grant)"
            ) from exc
        if on_step:
            on_step("login", f"{creds.username} logged in ({how})")

    def close(self) -> None:
        """Say goodbye; never raises (see `_goodbye` for what the goodbye does)."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            self._goodbye(client)
        except Exception:
            with contextlib.suppress(Exception):
                self._drop(client)

    def state(self) -> StateStore:
        """The state store: needed to receive, not to test a connection."""
        if self._state is None:
            raise MailboxFailure("fetch", "no state store: this connection only tests the login")
        return self._state

    def _conn(self) -> C:
        if self._client is None:
            raise MailboxFailure("connect", "not connected")
        return self._client
