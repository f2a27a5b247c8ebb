"""IMAP IDLE (RFC 2177) on imaplib's connection: wait for the server to say "new mail".

imaplib (Python 3.11) has no IDLE command, so this module speaks it on the
connection an `IMAPMailbox` already holds: `TAG IDLE`, the server's `+`,
then nothing but a wait until the server sends an untagged `EXISTS` or
`RECENT` (new mail), the renewal time passes, or another thread writes to
the wake-up pipe (stop, reload, a scheduled check); then `DONE` and the
tagged `OK`. The connection is ready for the next command at once.

The wait costs nothing while nothing happens: one `select()` on the socket
and the wake-up pipe, with the renewal time as its timeout; no polling.
Bytes imaplib's reader already holds (an `EXISTS` that came with the `+`, or
TLS records already decrypted) are looked at before each `select()`, with
the socket briefly non-blocking, so a notification is never left waiting
for the next renewal.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import re
import selectors
import socket
import ssl
import time

from exactmaild.receive.mailbox import MailboxFailure, describe
from exactmaild.receive.mailbox.imap import _WIRE_ERRORS, IMAPMailbox

# RFC 2177: servers may log a client out after 30 minutes of inactivity, so
# IDLE is ended and begun again before that. The watcher passes its own.
RENEW_AFTER = 25 * 60.0
# How long the server may take to answer IDLE, DONE or to finish a line.
REPLY_TIMEOUT = 30.0

# TCP keepalive while idling: first probe after 2 minutes of quiet, then every 30 s.
KEEPALIVE_IDLE = 120
KEEPALIVE_INTERVAL = 30
KEEPALIVE_PROBES = 4

_NEW_MAIL = re.compile(rb"^\* \d+ (EXISTS|RECENT)\b", re.IGNORECASE)
_tags = itertools.count(1)


class Ended(enum.Enum):
    """Why one IDLE ended."""

    MAIL = "mail"  # the server announced new mail
    RENEW = "renew"  # the renewal time passed: begin IDLE again
    WOKEN = "woken"  # another thread asked (stop, reload, a scheduled check)


class IdleRefused(MailboxFailure):
    """The server does not offer IDLE, or refused it: retrying will not help."""

    def __init__(self, message: str) -> None:
        super().__init__("idle", message)


def supports_idle(box: IMAPMailbox) -> bool:
    """Whether the logged-in server lists IDLE among its capabilities.

    imaplib keeps the list the server gave before the login; some servers
    name more once logged in, so the server is asked again when IDLE is not
    in it."""
    client = box._conn()
    if "IDLE" in client.capabilities:
        return True
    try:
        typ, data = client.capability()
    except _WIRE_ERRORS as exc:
        raise MailboxFailure("idle", f"CAPABILITY failed ({describe(exc)})") from exc
    words = b" ".join(d for d in data if isinstance(d, bytes)).upper().split()
    return typ == "OK" and b"IDLE" in words


def idle(box: IMAPMailbox, wake_fd: int, renew_after: float = RENEW_AFTER) -> Ended:
    """One IDLE on the open folder of `box`, until new mail, renewal or a wake-up.

    Raises `MailboxFailure` when the server or the network drops the
    connection (the caller reconnects), `IdleRefused` when IDLE is refused.
    """
    client = box._conn()
    sock = client.sock
    timeout = sock.gettimeout()
    tag = f"EXI{next(_tags)}".encode()
    try:
        _keepalive(sock)
        sock.settimeout(REPLY_TIMEOUT)
        client.send(tag + b" IDLE\r\n")
        first = _line(client)
        if first.startswith(tag):
            raise IdleRefused(
                f"the server refused IDLE ({first.decode(errors='replace').strip()}): "
                "set incoming.idle: false; the scheduled checks still run"
            )
        if not first.startswith(b"+"):
            raise MailboxFailure("idle", f"unexpected answer to IDLE: {first[:200]!r}")
        ended = _wait(client, wake_fd, time.monotonic() + renew_after)
        sock.settimeout(REPLY_TIMEOUT)
        client.send(b"DONE\r\n")
        while True:
            line = _line(client)
            if _NEW_MAIL.match(line):
                ended = Ended.MAIL if ended is Ended.RENEW else ended
            if line.startswith(tag):
                break
        if not line[len(tag) :].strip().upper().startswith(b"OK"):
            raise MailboxFailure("idle", f"ending IDLE failed: {line[:200]!r}")
        return ended
    except _WIRE_ERRORS as exc:
        raise MailboxFailure(
            "idle", f"the connection broke while idling ({describe(exc)})"
        ) from exc
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(timeout)


def _keepalive(sock: socket.socket) -> None:
    """TCP keepalives while idling: a NAT box or firewall that forgets a quiet
    connection after a few minutes sees traffic every 2 minutes, and a peer that
    vanished without a word is noticed within about 4 minutes (not at the renewal)."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)


def _line(client: object) -> bytes:
    """One line from the server; EOF is a dropped connection."""
    line: bytes = client.readline()  # type: ignore[attr-defined]
    if not line:
        raise EOFError("the server closed the connection")
    if line.startswith(b"* BYE"):
        raise EOFError(f"the server said goodbye: {line.decode(errors='replace').strip()}")
    return line


def _wait(client: object, wake_fd: int, deadline: float) -> Ended:
    """Read untagged lines until new mail, the deadline, or the wake-up pipe."""
    sock = client.sock  # type: ignore[attr-defined]
    reader = client.file  # type: ignore[attr-defined]
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ)
        sel.register(wake_fd, selectors.EVENT_READ)
        ready = _buffered(sock, reader)
        while True:
            if ready:
                sock.settimeout(REPLY_TIMEOUT)
                if _NEW_MAIL.match(_line(client)):
                    return Ended.MAIL
                # "* OK Still here", flag changes, expunges: keep waiting.
                ready = _buffered(sock, reader)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return Ended.RENEW
            events = sel.select(left)
            if any(key.fd == wake_fd for key, _ in events):
                return Ended.WOKEN
            # Readable with nothing to read is EOF, which readline then reports;
            # a TLS record with no data in it (a session ticket) is not ready.
            ready = bool(events) and _buffered(sock, reader, eof_is_data=True)


def _buffered(sock: object, reader: object, *, eof_is_data: bool = False) -> bool:
    """Whether a line (or EOF, for the caller's readline to see) can be read without waiting.

    A non-blocking peek: what imaplib's buffered reader holds, else one read
    of what the socket (or the TLS layer) has ready.
    """
    sock.settimeout(0.0)  # type: ignore[attr-defined]
    try:
        data = reader.peek(1)  # type: ignore[attr-defined]
    except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return False
    finally:
        sock.settimeout(REPLY_TIMEOUT)  # type: ignore[attr-defined]
    # Empty: nothing ready, or EOF after select() said readable.
    return bool(data) or eof_is_data
