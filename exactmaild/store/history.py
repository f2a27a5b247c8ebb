"""The sent history: what became of each finished message, for `history` and
`queue show`.

A message is finished when it leaves the spool's queue for good: sent (every
recipient took it), partly sent (some refused it for good), failed (with the
reason), or cancelled. Its record keeps the queue id, Message-ID, subject,
the local user who submitted it, and each recipient with what it got:
accepted, refused (with the server's reply) or deferred (still refused for
now when the message was given up). Recipients live here, in the state
store, and never in a metric's labels.

The record of a send is written inside the commit that records the send
itself (`sends._record_sent` calls `insert_finished`): it costs an INSERT,
not a second synced commit. While a message is still queued after a partial
send, what its recipients got so far waits in `history_pending` and joins
the final record. Records older than `history_days` are pruned a chunk per
commit, like the attempts.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any, Literal

from exactmaild.store.db import Database

# What a recipient got ("not sent": the message was cancelled, or could
# never be sent, before this recipient's turn).
RcptStatus = Literal["accepted", "refused", "deferred", "not sent"]
# What became of the message.
Result = Literal["sent", "partly sent", "failed", "cancelled"]
RESULTS: tuple[Result, ...] = ("sent", "partly sent", "failed", "cancelled")

# Rows deleted per commit by prune_history(): the sender's next commit waits
# behind each one (see sends._PRUNE_CHUNK).
_PRUNE_CHUNK = 5000


@dataclass(frozen=True)
class Delivery:
    """One recipient of a finished message and what it got."""

    address: str
    status: RcptStatus
    reply: str = ""  # the server's reply (or the error) for that recipient
    at: float | None = None  # when that was decided


@dataclass(frozen=True)
class Finished:
    """The history record of one finished message."""

    queue_id: str
    message_id: str
    subject: str
    user: str  # the local user who submitted it ('' if not known)
    result: Result
    reason: str  # why it failed, or who cancelled it; '' when sent
    at: float  # when it finished
    recipients: tuple[Delivery, ...]
    queued_at: float | None = None
    tries: int = 1  # attempts to send it (0: never tried)

    def as_row(self) -> tuple[object, ...]:
        rcpts = [[d.address, d.status, d.reply, d.at] for d in self.recipients]
        return (
            self.queue_id,
            self.message_id,
            self.subject,
            self.user,
            self.result,
            self.reason,
            self.at,
            json.dumps(rcpts, ensure_ascii=False),
            self.queued_at,
            self.tries,
        )


_COLUMNS = (
    "queue_id, message_id, subject, user, result, reason, finished, recipients, queued_at, tries"
)
_INSERT = f"INSERT INTO history ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


def insert_finished(db: sqlite3.Connection, rec: Finished) -> None:
    """Inside a transaction: add a record, and drop what was pending for it."""
    db.execute(_INSERT, rec.as_row())


def _deliveries(text: str) -> tuple[Delivery, ...]:
    out = []
    for addr, status, reply, at in json.loads(text):
        out.append(Delivery(str(addr), status, str(reply), float(at) if at is not None else None))
    return tuple(out)


def _finished(row: tuple[Any, ...]) -> Finished:
    qid, mid, subject, user, result, reason, at, rcpts, queued_at, tries = row
    return Finished(
        str(qid),
        str(mid),
        str(subject),
        str(user),
        result,
        str(reason),
        float(at),
        _deliveries(str(rcpts)),
        float(queued_at) if queued_at is not None else None,
        int(tries),
    )


class HistoryRecords(Database):
    """The history table, and what partial sends leave pending for it."""

    def record_finished(self, rec: Finished) -> None:
        """Add the record of a message finished other than by a send (failed,
        cancelled, sent already): its own commit."""
        with self._tx() as db:
            insert_finished(db, rec)
            db.execute("DELETE FROM history_pending WHERE queue_id = ?", (rec.queue_id,))

    def note_deliveries(self, queue_id: str, deliveries: tuple[Delivery, ...]) -> None:
        """What some recipients got, while the message waits for the others."""
        have = {d.address: d for d in self.pending_deliveries(queue_id)}
        have.update((d.address, d) for d in deliveries)
        text = json.dumps([[d.address, d.status, d.reply, d.at] for d in have.values()])
        with self._tx() as db:
            db.execute(
                "INSERT INTO history_pending (queue_id, recipients, updated) VALUES (?, ?, ?)"
                " ON CONFLICT (queue_id) DO UPDATE SET recipients = excluded.recipients,"
                " updated = excluded.updated",
                (queue_id, text, max((d.at or 0.0) for d in have.values())),
            )

    def pending_deliveries(self, queue_id: str) -> tuple[Delivery, ...]:
        """What recipients of a still-queued message got so far (a partial send)."""
        rows = self._query("SELECT recipients FROM history_pending WHERE queue_id = ?", (queue_id,))
        return _deliveries(str(rows[0][0])) if rows else ()

    def history(
        self, *, since: float | None = None, to: str | None = None, limit: int | None = None
    ) -> list[Finished]:
        """Finished messages, newest first: since a time, to an address (any
        recipient, case-insensitive), at most `limit`."""
        sql = f"SELECT {_COLUMNS} FROM history"
        where: list[str] = []
        args: list[object] = []
        if since is not None:
            where.append("finished >= ?")
            args.append(since)
        if to:
            # A coarse filter in SQL (LIKE is case-insensitive for ASCII); the
            # exact match on the address is made below.
            where.append("recipients LIKE ? ESCAPE '\\'")
            escaped = to.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            args.append(f"%{escaped}%")
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY finished DESC, id DESC"
        rows = [_finished(r) for r in self._query(sql, tuple(args))]
        if to:
            want = to.strip().lower()
            rows = [r for r in rows if any(d.address.lower() == want for d in r.recipients)]
        return rows[:limit] if limit is not None else rows

    def finished(self, queue_id: str) -> Finished | None:
        """The latest record of one message, if it finished and is still kept."""
        rows = self._query(
            f"SELECT {_COLUMNS} FROM history WHERE queue_id = ? ORDER BY id DESC LIMIT 1",
            (queue_id,),
        )
        return _finished(rows[0]) if rows else None

    def prune_history(self, before: float) -> int:
        """Forget records of messages finished before `before`; how many went.

        A chunk per commit through the `finished` index, as prune_attempts().
        Pending deliveries of messages that left the spool without a record
        (removed by hand) go with them once as old.
        """
        gone = 0
        while True:
            with self._tx() as db:
                cur = db.execute(
                    "DELETE FROM history WHERE id IN (SELECT id FROM history"
                    " WHERE finished < ? LIMIT ?)",
                    (before, _PRUNE_CHUNK),
                )
            gone += max(cur.rowcount, 0)
            if cur.rowcount < _PRUNE_CHUNK:
                break
        with self._tx() as db:
            db.execute("DELETE FROM history_pending WHERE updated < ?", (before,))
        return gone
