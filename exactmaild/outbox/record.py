"""The history record of a finished message, built from what the Outbox knows.

The Outbox writes a record wherever a message is finished (sent, partly
sent, failed, cancelled): this module turns a message's header section, its
file's owner and what each recipient got into a `store.history.Finished`.
The header section is read cheaply (the subject, the Message-ID and the
recipient fields only), so building the record of an ordinary send costs
microseconds beside its synced commit.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import pwd
import re
import sqlite3
from collections.abc import Iterable
from email.header import decode_header, make_header

from exactmaild.core.clock import Clock
from exactmaild.core.log import Log
from exactmaild.core.states import ACTIVE, FAILED
from exactmaild.outbox.claim import Claim, Settlement
from exactmaild.outbox.spool import Spool
from exactmaild.store.history import Delivery, Finished, RcptStatus, Result
from exactmaild.store.state import StateStore

# A header section longer than this is cut for the record: it only needs
# the subject, the Message-ID and the recipients.
_MAX_HEAD = 256 * 1024
# What a failed message's record reads of its file: the header section.
_HEAD_READ = 64 * 1024
_BLANK = re.compile(rb"\r?\n\r?\n")
_FIELD = r"(?im)^{name}:[ \t]*(.*(?:\r?\n[ \t].*)*)"


def header_section(raw: bytes) -> bytes:
    """The header section of a raw message (up to the first empty line)."""
    m = _BLANK.search(raw, 0, _MAX_HEAD)
    return raw[: m.start()] if m else raw[:_MAX_HEAD]


def _fields(head: bytes, name: str) -> list[str]:
    text = head.decode("ascii", "replace")
    return [
        re.sub(r"\r?\n[ \t]+", " ", v).strip() for v in re.findall(_FIELD.format(name=name), text)
    ]


def _decoded(value: str) -> str:
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        return value


def subject_of(head: bytes) -> str:
    found = _fields(head, "subject")
    return _decoded(found[0]) if found else ""


def message_id_of(head: bytes) -> str:
    found = _fields(head, "message-id")
    return found[0] if found else ""


def recipients_of(head: bytes) -> tuple[str, ...]:
    """Every address in To, Cc and Bcc, each once, in order (as the sender reads them)."""
    values: list[str] = []
    for name in ("to", "cc", "bcc"):
        values.extend(_fields(head, name))
    out: list[str] = []
    for _, addr in email.utils.getaddresses(values):
        addr = addr.strip()
        if addr and "@" in addr and addr not in out:
            out.append(addr)
    return tuple(out)


@functools.lru_cache(maxsize=64)
def user_name(uid: int) -> str:
    """The local user a spool file belongs to: who submitted the message."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def merge(
    head: bytes,
    known: Iterable[Delivery],
    rest: tuple[RcptStatus, str] | None,
    at: float,
) -> tuple[Delivery, ...]:
    """Each recipient once: what is known of it (later entries win), and for
    the recipients of the header section not known, `rest` (status, reply)."""
    by_addr: dict[str, Delivery] = {}
    for d in known:
        by_addr[d.address] = d
    if rest is not None:
        for addr in recipients_of(head):
            if addr not in by_addr:
                by_addr[addr] = Delivery(addr, rest[0], rest[1], at)
    return tuple(by_addr.values())


def result_of(recipients: tuple[Delivery, ...]) -> Result:
    """sent (every recipient took it), partly sent (some did), failed (none did)."""
    accepted = sum(1 for d in recipients if d.status == "accepted")
    if recipients and accepted == len(recipients):
        return "sent"
    return "partly sent" if accepted else "failed"


def build(
    queue_id: str,
    head: bytes,
    *,
    message_id: str = "",
    user: str = "",
    recipients: tuple[Delivery, ...],
    at: float,
    reason: str = "",
    queued_at: float | None = None,
    tries: int = 1,
    result: Result | None = None,
) -> Finished:
    return Finished(
        queue_id=queue_id,
        message_id=message_id or message_id_of(head),
        subject=subject_of(head),
        user=user,
        result=result or result_of(recipients),
        reason=reason,
        at=at,
        recipients=recipients,
        queued_at=queued_at,
        tries=tries,
    )


def for_claim(claim: Claim, s: Settlement, at: float, pending: tuple[Delivery, ...]) -> Finished:
    """The record of a claimed message that settlement `s` finishes; `pending`:
    what its recipients got in earlier attempts."""
    rest = claim.rest
    if rest is None and not claim.deliveries:
        # Nothing told per recipient: sent (or done already) means every
        # recipient took it; a failure means none was sent to.
        rest = ("accepted", s.detail) if s.to is None else ("not sent", s.error)
    recipients = merge(claim.head, (*pending, *claim.deliveries), rest, at)
    failed = s.to is not None
    return build(
        claim.name,
        claim.head,
        message_id=claim.message_id,
        user=claim.user,
        recipients=recipients,
        at=at,
        reason=s.error if failed else "",
        queued_at=claim.queued_at,
        tries=claim.tries + (1 if s.attempt is not None else 0),
    )


def for_unsent(
    name: str,
    raw: bytes,
    result: Result,
    reason: str,
    user: str,
    queued_at: float | None,
    tries: int,
    at: float,
) -> Finished:
    """The record of a message finished without being sent: failed before it
    could go, or cancelled. `pending`-free: a partial send's earlier
    recipients are merged by the caller that has them."""
    head = header_section(raw)
    return build(
        name,
        head,
        user=user,
        recipients=merge(head, (), ("not sent", reason), at),
        at=at,
        reason=reason,
        queued_at=queued_at,
        tries=tries,
        result=result,
    )


class Recorder:
    """Writes the Outbox's history records: what a claim needs at its claim,
    the record a settlement finishes, and the record of a message failed
    without a send."""

    def __init__(self, spool: Spool, store: StateStore, log: Log, clock: Clock) -> None:
        self.spool, self.store, self.log, self.clock = spool, store, log, clock

    def about(self, claim: Claim, raw: bytes) -> None:
        """What the record will need of a message just claimed (into active/)."""
        claim.head = header_section(raw)
        with contextlib.suppress(OSError):
            uid, claim.queued_at = self.spool.owner(ACTIVE, claim.name)
            claim.user = user_name(uid)

    def record(self, claim: Claim, s: Settlement, at: float) -> Finished:
        """The record of a claimed message that `s` finishes."""
        # Only a message with retry state can have recipients done earlier.
        pending = self.store.pending_deliveries(claim.name) if claim.info is not None else ()
        return for_claim(claim, s, at, pending)

    def keep(self, claim: Claim, s: Settlement, at: float) -> None:
        """Write that record in a commit of its own (a failure, not a send),
        once however often `s` is applied."""
        if not s.record_written:
            self.store.record_finished(self.record(claim, s, at))
            s.record_written = True

    def failed(self, name: str, reason: str, tries: int, raw: bytes | None = None) -> None:
        """The record of a message failed without a send (never sendable, or
        in flight at too many crashes), read from its file in failed/."""
        try:
            if raw is None:
                raw = self.spool.read(FAILED, name, _HEAD_READ)
            uid, queued_at = self.spool.owner(FAILED, name)
            now = self.clock.time()
            rec = for_unsent(name, raw, "failed", reason, user_name(uid), queued_at, tries, now)
            self.store.record_finished(rec)
        except (OSError, sqlite3.Error) as exc:
            # The message is failed with its reason beside it all the same;
            # only `history` will not show it.
            self.log.warning("history_not_recorded", queue_id=name, error=str(exc))


__all__ = [
    "Recorder",
    "build",
    "for_claim",
    "for_unsent",
    "header_section",
    "merge",
    "recipients_of",
    "result_of",
    "user_name",
]
