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
import poplib
import ssl
from typing import Any

from exactmaild.receive.mailbox import (
    Deliver,
    LoginFailure,
    MailboxFailure,
    OnStep,
    describe,
    xoauth2,
)
from exactmaild.receive.mailbox.common import Adapter, OwnSocket

# poplib refuses lines over 2048 bytes (RFC 1939 says 512), but real mail has
# far longer ones (unwrapped HTML, base64 without breaks); refusing them would
# leave such a message on the server forever. The cap still bounds memory.
poplib._MAXLINE = max(poplib._MAXLINE, 64 * 1024 * 1024)  # type: ignore[attr-defined]

_WIRE_ERRORS = (OSError, EOFError, poplib.error_proto, ValueError)

# _sizes lists the whole mailbox once when the new messages are at least
# 1/_LIST_ALL_SHARE of it, else asks "LIST n" for each new one.
_LIST_ALL_SHARE = 20

# RFC 3206 response codes that mean "try later", not "wrong credentials".
_TEMPORARY_LOGIN_CODES = (b"[SYS/TEMP]", b"[IN-USE]", b"[LOGIN-DELAY]")


class _POP3(OwnSocket, poplib.POP3):
    """poplib with our own socket: DNS, connect and (implicit) TLS as separate steps."""

    def scan_listing(self, num: int) -> bytes:
        """Message `num`'s scan listing, b"num size" ("LIST n"; typeshed knows only "LIST")."""
        raw: Any = self
        resp: bytes = raw._shortcmd(f"LIST {num}")  # raises error_proto on -ERR
        return resp.removeprefix(b"+OK")

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


class POP3Mailbox(Adapter[_POP3]):
    """One POP3 session with `incoming` (see the module docstring for what it keeps)."""

    wire_errors = _WIRE_ERRORS
    greets_as = "a POP3 server"
    starttls_command = "STLS"
    starttls_hint = ": use security: tls (usually port 995) if the server has no STLS"
    _no_top = False  # set when the server refuses TOP

    def _position_key(self) -> str:
        return f"pop3:{self.credentials.username}@{self.incoming.host}"

    @property
    def _pop(self) -> _POP3 | None:
        """The session (tests drop it to play a lost QUIT)."""
        return self._client

    @_pop.setter
    def _pop(self, pop: _POP3 | None) -> None:
        self._client = pop

    # -- connection (the steps are in Adapter) ------------------------------------

    def _open(self, ctx: ssl.SSLContext | None, on_step: OnStep | None) -> _POP3:
        return _POP3(self.incoming, self.timeout, ctx, on_step)

    def _start_tls(self, client: _POP3, ctx: ssl.SSLContext) -> None:
        client.stls(context=ctx)

    def _without_login(self, client: _POP3, on_step: OnStep | None) -> None:
        self.close()
        raise LoginFailure(
            f"POP3 always needs a login but account.auth.method is none: "
            f"set the method and its secret for {self.incoming.host}"
        )

    def _authenticate(self, client: _POP3, username: str, secret: str) -> str:
        if self.credentials.method == "oauth2":
            client.auth_xoauth2(xoauth2(username, secret))
            return "XOAUTH2"
        client.user(username)
        client.pass_(secret)
        return "USER/PASS"

    def _refusal(self, exc: BaseException) -> tuple[str, bool] | None:
        if not isinstance(exc, poplib.error_proto):
            return None
        raw = exc.args[0] if exc.args and isinstance(exc.args[0], bytes) else b""
        text = raw.decode(errors="replace") or describe(exc)
        return text, any(code in raw for code in _TEMPORARY_LOGIN_CODES)

    def _goodbye(self, client: _POP3) -> None:
        """QUIT: this is also what makes the server apply the DELEs of this session."""
        client.quit()

    def _drop(self, client: _POP3) -> None:
        # The DELEs are re-sent next check: seen UIDLs are recorded.
        client.close()

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
        present = {u for _, u in listing}
        # One read of the seen set. keep_pop3_seen (which reads it again) is
        # needed only when a seen UIDL has left the server, which is rare;
        # since only UIDLs in the listing are looked up below, the set read
        # before that clean-up answers "seen?" exactly as the one after it.
        seen = self.state().pop3_seen(self.key)
        if not seen <= present:
            self.state().keep_pop3_seen(self.key, present)
        delete = not self.incoming.leave_on_server
        new = [num for num, uidl in listing if uidl not in seen]
        # Sizes are for TOP only (leave_on_server): see _top and _sizes.
        sizes = self._sizes(pop, new, len(listing)) if not delete else {}
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

    def _sizes(self, pop: _POP3, nums: list[int], total: int) -> dict[int, int]:
        """The sizes of messages `nums` (the new ones) in a mailbox of `total`.

        "LIST n" for each when they are few next to the mailbox (the usual
        check: its cost then grows with the new messages, not the mailbox);
        one LIST of the whole mailbox when they are many (a first check:
        one listing beats a round trip per message).
        """
        if not nums:
            return {}
        if len(nums) * _LIST_ALL_SHARE >= total:
            try:
                _resp, lines, _octets = pop.list()
            except _WIRE_ERRORS as exc:
                raise MailboxFailure("fetch", f"LIST failed ({describe(exc)})") from exc
        else:
            lines = []
            for num in nums:
                try:
                    lines.append(pop.scan_listing(num))
                except _WIRE_ERRORS as exc:
                    raise MailboxFailure("fetch", f"LIST {num} failed ({describe(exc)})") from exc
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
