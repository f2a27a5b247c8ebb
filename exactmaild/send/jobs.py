"""A queued message made ready to send: prepared, and weighed against the limit.

Preparation (`send.message.prepare`) adds what the practice's mail needs
(From, Message-ID, Date, the signature; Bcc stripped) and skips recipients
that already have it; the weight is what the send counts against the daily
limit (`send.limit_counts`: 1 per message, or 1 per recipient); its lane
(`core.lanes`) is read from the same headers the queue index filed it by.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from exactmaild.config.model import Config, Send
from exactmaild.core.errors import BadMessage
from exactmaild.core.lanes import Lane, lane_of
from exactmaild.outbox import Born, Outbox, Queued, is_storage_problem, missing_headers
from exactmaild.send import message as msgmod
from exactmaild.send.prepared import Prepared


@dataclass(frozen=True)
class Job:
    queued: Queued
    prepared: Prepared
    units: int
    lane: Lane = "normal"


def read_signature(cfg: Config) -> str | None:
    return None if cfg.send.signature is None else Path(cfg.send.signature).read_text("utf-8")


def job_for(q: Queued, cfg: Config, signature: str | None, now: float) -> Job:
    """Raises BadMessage for a message that can never be sent. The Date and
    Message-ID a message lacks come from its file (outbox/stamp.py), the
    same at every attempt."""
    domain = cfg.account.address.rpartition("@")[2] or None
    born = q.born or Born(q.name, 0, int(now * 1e9))  # not read from a file (tests)
    stamp = missing_headers(q.raw, born, domain=domain, timezone=cfg.timezone)
    prepared = msgmod.prepare(
        q.raw,
        sender=cfg.account.address,
        display_name=cfg.account.display_name,
        signature=signature,
        max_size=cfg.spool.max_message_size,
        skip_recipients=q.info.done_rcpts if q.info else (),
        date=stamp.date,
        message_id=stamp.message_id,
    )
    units = 1 if cfg.send.limit_counts == "messages" else len(prepared.recipients)
    return Job(q, prepared, max(1, units), lane_of(q.raw))


def too_big(job: Job, send: Send) -> str:
    """Why a message larger than the whole allowance (less the urgent reserve,
    for normal and bulk mail) is failed, not kept waiting."""
    allowance, urgent_reserve = send.allowance, send.urgent_reserve
    if job.lane != "urgent" and urgent_reserve and job.units <= allowance:
        return (
            f"the message counts {job.units} against the limit but a {job.lane} message "
            f"may use only {allowance - urgent_reserve} (send.daily_limit - send.reserve "
            "- send.urgent_reserve); split the recipients over several messages"
        )
    return (
        f"the message counts {job.units} against the limit but the whole "
        f"allowance is {allowance} (send.daily_limit - send.reserve); "
        "split the recipients over several messages"
    )


class Lookahead:
    """The next message, read and prepared ahead: while a commit syncs, and
    while it waits for its time. `ready` is it; the sender drops it when what
    it rests on changes (a flush, a reload)."""

    def __init__(self, outbox: Outbox, reject: Callable[[Queued, str], None]) -> None:
        self._outbox = outbox
        self._reject = reject
        self.ready: Job | None = None

    def next(self, now: float, cfg: Config, signature: str | None) -> Job | None:
        """The message to send next, prepared, or None; one that can never be
        sent is rejected on the way."""
        if self.ready is not None:
            if self._outbox.still_next(self.ready.queued, now):
                return self.ready
            self.ready = None
        while (q := self._outbox.next_due(now, cfg.spool.max_message_size)) is not None:
            try:
                return job_for(q, cfg, signature, now)
            except BadMessage as exc:
                self._reject(q, str(exc))
        return None

    def prefetch(self, now: float, cfg: Config, signature: str | None) -> None:
        """Read and prepare the next message now, if none is ready."""
        if self.ready is not None:
            return
        try:
            self.ready = self.next(now, cfg, signature)
        except (OSError, sqlite3.Error) as exc:
            if not is_storage_problem(exc):
                raise
            # The next step meets it again and handles it there.
