"""The IMAP adapter (imaplib): login, folder, new messages by UID, mail sent elsewhere.

Owns the IMAP receive position: per key "imap:<user>@<host>/<folder>" the
store keeps (UIDVALIDITY, last delivered UID), so a check asks the server
only for UIDs above that one (10,000 old messages and 3 new ones cost 3
fetches). Messages are fetched one at a time with BODY.PEEK[] from a folder
opened read-only (EXAMINE): the practice's mail clients still see them as
unread, and the position is recorded after each delivered message.

A UIDVALIDITY change means the server rebuilt the folder and every old UID
is meaningless. Each delivery also records a fingerprint of the message
(its Message-ID, or a hash of its header block when it has none); after a
UIDVALIDITY change the adapter reads the headers of every message in the
folder and delivers only those whose fingerprint it has not delivered
before. No mail is lost; a message that truly is new but shares its
Message-ID with an already delivered one is skipped, the accepted price.
"""

from __future__ import annotations

import datetime as dt
import imaplib
import re
import ssl
import time
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32

from exactmaild.receive.mailbox import (
    Deliver,
    LoginFailure,
    MailboxFailure,
    OnStep,
    describe,
    xoauth2,
)
from exactmaild.receive.mailbox.common import Adapter, OwnSocket
from exactmaild.receive.mailbox.imapdata import (
    fingerprint,
    header_time,
    imap_date,
    ints,
    last_int,
    norm_mid,
    quote_mailbox,
    uid_set,
)

# Errors a server or the network can cause while talking IMAP.
_WIRE_ERRORS = (OSError, EOFError, imaplib.IMAP4.error, ValueError)

# Header fetches are batched (cheap); full messages are fetched one at a time.
_HEADER_BATCH = 250

# Response codes meaning "this login will not work until someone changes it";
# anything else refused at login (UNAVAILABLE, SERVERBUG...) is temporary.
_TEMPORARY_LOGIN_CODES = ("[UNAVAILABLE]", "[SERVERBUG]", "[INUSE]", "[LIMIT]")

_UID_RE = re.compile(rb"\bUID (\d+)")
_INTERNALDATE_RE = re.compile(rb'INTERNALDATE "([^"]+)"')


@dataclass(frozen=True)
class FolderInfo:
    uidvalidity: int
    uidnext: int | None
    exists: int


class _IMAP4(OwnSocket, imaplib.IMAP4):
    """imaplib with our own socket: DNS, connect and (implicit) TLS as separate steps."""


class IMAPMailbox(Adapter[_IMAP4]):
    """One IMAP connection to `incoming` (see the module docstring for what it keeps)."""

    wire_errors = _WIRE_ERRORS
    greets_as = "an IMAP server"
    starttls_command = "STARTTLS"
    _folder: FolderInfo | None = None  # set by open_folder

    def _position_key(self) -> str:
        inc = self.incoming
        return f"imap:{self.credentials.username}@{inc.host}/{inc.folder}"

    # -- connection (the steps are in Adapter) ------------------------------------

    def _open(self, ctx: ssl.SSLContext | None, on_step: OnStep | None) -> _IMAP4:
        return _IMAP4(self.incoming, self.timeout, ctx, on_step)

    def _starttls(self, client: _IMAP4, ctx: ssl.SSLContext, on_step: OnStep | None) -> None:
        inc = self.incoming
        if "STARTTLS" not in client.capabilities:
            self.close()
            raise MailboxFailure(
                "TLS",
                f"{inc.host} port {inc.port} does not offer STARTTLS: use security: tls "
                "(usually port 993) or ask the provider",
            )
        super()._starttls(client, ctx, on_step)

    def _start_tls(self, client: _IMAP4, ctx: ssl.SSLContext) -> None:
        client.starttls(ssl_context=ctx)

    def _without_login(self, client: _IMAP4, on_step: OnStep | None) -> None:
        if client.state == "AUTH":  # PREAUTH greeting: the server logged us in
            if on_step:
                on_step("login", "pre-authenticated by the server")
            return
        self.close()
        raise LoginFailure(
            f"{self.incoming.host} asks for a login but account.auth.method is none: "
            "set the method and its secret"
        )

    def _authenticate(self, client: _IMAP4, username: str, secret: str) -> str:
        try:
            if self.credentials.method == "oauth2":
                sent = False

                def answer(_challenge: bytes) -> bytes:
                    # The first call carries the token; a second call is the
                    # server's error challenge, answered empty to end the exchange.
                    nonlocal sent
                    if sent:
                        return b""
                    sent = True
                    return xoauth2(username, secret).encode()

                client.authenticate("XOAUTH2", answer)
                return "XOAUTH2"
            client.login(username, secret)
            return "LOGIN"
        except imaplib.IMAP4.abort as exc:
            raise MailboxFailure(
                "login", f"the connection broke during login ({describe(exc)})"
            ) from exc

    def _refusal(self, exc: BaseException) -> tuple[str, bool] | None:
        if not isinstance(exc, imaplib.IMAP4.error):
            return None
        text = describe(exc)
        return text, any(code in text for code in _TEMPORARY_LOGIN_CODES)

    def _goodbye(self, client: _IMAP4) -> None:
        client.logout()

    def _drop(self, client: _IMAP4) -> None:
        # A polite goodbye only; the socket is closed either way.
        client.shutdown()

    # -- folder ------------------------------------------------------------------

    def select(self, folder: str) -> FolderInfo:
        """EXAMINE `folder` (read-only: nothing we do can change a flag)."""
        imap = self._conn()
        try:
            typ, data = imap.select(quote_mailbox(folder), readonly=True)
        except _WIRE_ERRORS as exc:
            raise MailboxFailure(
                "folder", f"opening folder {folder!r} failed ({describe(exc)})"
            ) from exc
        if typ != "OK":
            reason = b" ".join(d for d in data if isinstance(d, bytes)).decode(errors="replace")
            raise MailboxFailure(
                "folder",
                f"cannot open folder {folder!r} ({reason}): check the folder name; "
                f"this account has: {', '.join(self.list_folders()) or '(none listed)'}",
            )
        uidvalidity = last_int(imap.untagged_responses.get("UIDVALIDITY"))
        if uidvalidity is None:
            uidvalidity = self._status_int(folder, "UIDVALIDITY")
        if uidvalidity is None:
            raise MailboxFailure("folder", f"the server reports no UIDVALIDITY for {folder!r}")
        return FolderInfo(
            uidvalidity=uidvalidity,
            uidnext=last_int(imap.untagged_responses.get("UIDNEXT")),
            exists=last_int(data) or 0,
        )

    def _status_int(self, folder: str, item: str) -> int | None:
        try:
            typ, data = self._conn().status(quote_mailbox(folder), f"({item})")
        except _WIRE_ERRORS:
            return None
        if typ != "OK" or not data or not isinstance(data[0], bytes):
            return None
        m = re.search(rb"%s (\d+)" % item.encode(), data[0])
        return int(m.group(1)) if m else None

    def list_folders(self) -> list[str]:
        try:
            typ, data = self._conn().list()
        except _WIRE_ERRORS:
            return []
        names = []
        for line in data if typ == "OK" else []:
            if isinstance(line, bytes):
                m = re.match(rb'\([^)]*\) (?:"[^"]*"|NIL) (.*)$', line)
                if m:
                    names.append(m.group(1).decode(errors="replace").strip('"'))
        return names

    def open_folder(self) -> str:
        self._folder = self.select(self.incoming.folder)
        return (
            f"{self.incoming.folder}: {self._folder.exists} messages, "
            f"UIDVALIDITY {self._folder.uidvalidity}"
        )

    # -- receiving -----------------------------------------------------------------

    def fetch_new(self, deliver: Deliver, now: float) -> int:
        if self._folder is None:
            self.open_folder()
        assert self._folder is not None
        uv = self._folder.uidvalidity
        position = self.state().imap_position(self.key)
        if position is not None and position[0] != uv:
            return self._resync(deliver, now, old=position[0], uidvalidity=uv)
        last = position[1] if position is not None else 0
        if (
            position is not None
            and self._folder.uidnext is not None
            and self._folder.uidnext <= last + 1
        ):
            return 0  # UIDNEXT says nothing arrived since the last delivered UID
        delivered = 0
        for uid in self._uids_after(last):
            data = self._fetch(uid)
            if data is None:
                continue  # expunged between SEARCH and FETCH
            deliver(data)
            self.state().record_imap_delivery(self.key, uv, uid, fingerprint(data), now)
            delivered += 1
        return delivered

    def _uids_after(self, last: int) -> list[int]:
        try:
            typ, data = self._conn().uid("SEARCH", f"UID {last + 1}:*")
        except _WIRE_ERRORS as exc:
            raise MailboxFailure("fetch", f"UID SEARCH failed ({describe(exc)})") from exc
        if typ != "OK":
            raise MailboxFailure("fetch", f"UID SEARCH refused: {data!r}")
        # "N:*" always matches the highest UID, even one below N: filter.
        return sorted(u for u in ints(data) if u > last)

    def _fetch(self, uid: int) -> bytes | None:
        try:
            typ, data = self._conn().uid("FETCH", str(uid), "(INTERNALDATE BODY.PEEK[])")
        except _WIRE_ERRORS as exc:
            raise MailboxFailure("fetch", f"fetching UID {uid} failed ({describe(exc)})") from exc
        if typ != "OK":
            raise MailboxFailure("fetch", f"fetching UID {uid} refused: {data!r}")
        self.fetches += 1
        for i, item in enumerate(data):
            if isinstance(item, tuple) and b"BODY[]" in item[0]:
                m = _UID_RE.search(item[0])
                if m is None or int(m.group(1)) == uid:
                    # INTERNALDATE: when the server took the message in (the
                    # receive latency's start); before or after the literal.
                    tail = data[i + 1] if i + 1 < len(data) else b""
                    self.arrived = _internaldate(
                        bytes(item[0]) + (tail if isinstance(tail, bytes) else b"")
                    )
                    return bytes(item[1])
        return None

    def _resync(self, deliver: Deliver, now: float, *, old: int, uidvalidity: int) -> int:
        """The folder was rebuilt: deliver what was never delivered, by fingerprint."""
        if self.log is not None:
            self.log.warning(
                "receive_uidvalidity_changed",
                key=self.key,
                old=old,
                new=uidvalidity,
                detail="the server rebuilt the folder; matching messages by Message-ID",
            )
        known = self.state().imap_delivered(self.key)
        present: set[str] = set()
        delivered = 0
        uids = self._uids_after(0)
        for start in range(0, len(uids), _HEADER_BATCH):
            batch = uids[start : start + _HEADER_BATCH]
            headers = self._headers(batch, "BODY.PEEK[HEADER]", "BODY[HEADER]")
            for uid in batch:
                head = headers.get(uid)
                if head is None:
                    continue
                fp = fingerprint(head[0])
                present.add(fp)
                if fp in known:
                    continue
                data = self._fetch(uid)
                if data is None:
                    continue
                deliver(data)
                self.state().record_imap_delivery(self.key, uidvalidity, uid, fp, now)
                delivered += 1
            # Known messages need no per-message write: a crash re-reads their headers only.
            self.state().set_imap_position(self.key, uidvalidity, batch[-1])
        if not uids:
            self.state().set_imap_position(self.key, uidvalidity, 0)
        self.state().keep_imap_delivered(self.key, present)
        return delivered

    def _headers(self, uids: list[int], item: str, answer: str) -> dict[int, tuple[bytes, bytes]]:
        """uid -> (header bytes, the response line around them) for a batch of UIDs."""
        if not uids:
            return {}
        try:
            typ, data = self._conn().uid("FETCH", uid_set(uids), f"(UID INTERNALDATE {item})")
        except _WIRE_ERRORS as exc:
            raise MailboxFailure("fetch", f"fetching headers failed ({describe(exc)})") from exc
        if typ != "OK":
            raise MailboxFailure("fetch", f"fetching headers refused: {data!r}")
        out: dict[int, tuple[bytes, bytes]] = {}
        key = answer.encode()
        for i, part in enumerate(data):
            if not isinstance(part, tuple) or key not in part[0].upper():
                continue
            m = _UID_RE.search(part[0])
            if m is None:
                continue
            tail = data[i + 1] if i + 1 < len(data) and isinstance(data[i + 1], bytes) else b""
            out[int(m.group(1))] = (bytes(part[1]), bytes(part[0]) + bytes(tail))
        return out

    # -- mail sent elsewhere -----------------------------------------------------------

    def count_sent(
        self, folder: str, since: float, until: float, exclude_message_ids: set[str]
    ) -> int:
        """Messages in `folder` dated in [since, until) that exactmaild did not send.

        The server's SEARCH SINCE works on whole dates in its own time zone,
        so it is asked from the day before and the exact instants are then
        compared here, from the Date header (INTERNALDATE when there is none).
        """
        self.select(folder)
        day = dt.datetime.fromtimestamp(since, dt.UTC).date() - dt.timedelta(days=1)
        try:
            typ, data = self._conn().uid("SEARCH", "SINCE", imap_date(day))
        except _WIRE_ERRORS as exc:
            raise MailboxFailure(
                "folder", f"searching {folder!r} failed ({describe(exc)})"
            ) from exc
        if typ != "OK":
            raise MailboxFailure("folder", f"searching {folder!r} refused: {data!r}")
        uids = sorted(ints(data))
        ours = {norm_mid(m) for m in exclude_message_ids}
        count = 0
        for start in range(0, len(uids), _HEADER_BATCH):
            batch = uids[start : start + _HEADER_BATCH]
            item = "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID DATE)]"
            for head, line in self._headers(batch, item, "BODY[HEADER.FIELDS").values():
                msg = BytesHeaderParser(policy=compat32).parsebytes(head)
                when = header_time(msg.get("Date")) or _internaldate(line)
                if when is None or not since <= when < until:
                    continue
                mid = msg.get("Message-ID")
                if mid is not None and norm_mid(str(mid)) in ours:
                    continue
                count += 1
        return count


def _internaldate(line: bytes) -> float | None:
    m = _INTERNALDATE_RE.search(line)
    if m is None:
        return None
    parsed = imaplib.Internaldate2tuple(b'INTERNALDATE "' + m.group(1) + b'"')
    return time.mktime(parsed) if parsed is not None else None
