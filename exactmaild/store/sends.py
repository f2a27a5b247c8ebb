"""Send attempts: the rows that make the daily limit a hard cap.

The rule that makes the cap hard: a send is *reserved* (a row counted against
the limit) before the message goes to the SMTP server, and only released if
the server definitely did not take it. A crash mid-send therefore leaves the
send counted, never uncounted.

Each attempt is one row of `attempts`: `inflight` from its reservation until
it is settled as `sent`, `unknown` (outcome lost; still counted) or
`released` (the server did not take it; no longer counted). Settled rows
that no limit window reaches any more are deleted by `prune_attempts`.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from exactmaild.store.db import Database
from exactmaild.store.history import Finished, insert_finished

# Attempt statuses that count against the daily limit. "unknown" is a send
# whose outcome was lost (crash, dropped connection after DATA): counting it
# may waste one send of the allowance but can never exceed the limit.
COUNTED = ("inflight", "sent", "unknown")
# The detail start-up recovery gives a send the daemon died during: how
# `crashes()` tells a crash from a connection lost after the body.
CRASHED = "the daemon stopped during this send"

# Rows deleted per commit by prune_attempts(): each commit holds the writer
# lock, and the sender's next commit waits behind it, so a first prune of a
# table that grew for years must not take it for long.
_PRUNE_CHUNK = 5000


@dataclass(frozen=True)
class Attempt:
    """One send attempt as recorded: its reservation and how it was settled."""

    id: int
    queue_id: str
    message_id: str
    started: float
    units: int
    status: str
    finished: float | None
    detail: str


class SendRecords(Database):
    """The attempts table: reservations, their settlement, and what counts."""

    def reserve(self, queue_id: str, message_id: str, units: int, now: float) -> int:
        """Count a send against the limit *before* it is attempted; returns the attempt id."""
        return self.settle_and_reserve(None, queue_id, message_id, units, now)

    def settle_and_reserve(
        self,
        sent: tuple[int, str, float, str, bool] | None,
        queue_id: str,
        message_id: str,
        units: int,
        now: float,
        *,
        record: Finished | None = None,
    ) -> int:
        """Reserve a send (count it against the limit) and, in the same synced
        commit, record the previous send the server accepted, if any, with its
        history `record`; returns the new attempt id.

        `sent` is (attempt id, queue id, finished, detail, had retry state) of
        that previous send. Each send is still recorded before the next one's
        final dot, so at most one send is ever accepted but unrecorded; what is
        saved is one commit per message.
        """
        with self._tx() as db:
            if sent is not None:
                _record_sent(db, *sent, record=record)
            cur = db.execute(
                "INSERT INTO attempts (queue_id, message_id, started, units, status)"
                " VALUES (?, ?, ?, ?, 'inflight')",
                (queue_id, message_id, now, units),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

    def finish_sent(
        self,
        attempt_id: int,
        queue_id: str,
        now: float,
        detail: str = "",
        had_state: bool = True,
        *,
        record: Finished | None = None,
    ) -> None:
        """Record a completed send (with its history `record`) and forget the
        message's retry state, in one commit."""
        with self._tx() as db:
            _record_sent(db, attempt_id, queue_id, now, detail, had_state, record=record)

    def finish(self, attempt_id: int, status: str, now: float, detail: str = "") -> None:
        """Settle an attempt: sent, unknown (kept counted) or released (not counted)."""
        assert status in ("sent", "unknown", "released")
        with self._tx() as db:
            db.execute(
                "UPDATE attempts SET status = ?, finished = ?, detail = ? WHERE id = ?",
                (status, now, detail, attempt_id),
            )

    def recover_inflight(self, now: float) -> int:
        """After a crash: attempts left in flight have an unknown outcome; they stay counted."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE attempts SET status = 'unknown', finished = ?, detail = ?"
                " WHERE status = 'inflight'",
                (now, CRASHED),
            )
            return cur.rowcount

    def crashes(self, queue_id: str) -> int:
        """How many times in a row the daemon died while sending this message
        (its latest attempts settled by recover_inflight())."""
        rows = self._query(
            "SELECT status, detail FROM attempts WHERE queue_id = ? ORDER BY id DESC LIMIT 100",
            (queue_id,),
        )
        n = 0
        for status, detail in rows:
            if status != "unknown" or detail != CRASHED:
                break
            n += 1
        return n

    def counted_sends(self, since: float) -> list[tuple[float, int]]:
        """(time, units) of every send counted against the limit since `since`, oldest first."""
        rows = self._query(
            "SELECT started, units FROM attempts WHERE started >= ? AND status IN (?, ?, ?)"
            " ORDER BY started",
            (since, *COUNTED),
        )
        return [(float(r[0]), int(r[1])) for r in rows]

    def last_attempt(self, queue_id: str) -> Attempt | None:
        """The latest attempt to send this message, if any is still recorded."""
        rows = self._query(
            "SELECT id, queue_id, message_id, started, units, status, finished, detail"
            " FROM attempts WHERE queue_id = ? ORDER BY id DESC LIMIT 1",
            (queue_id,),
        )
        return _attempt(rows[0]) if rows else None

    def last_sent(self) -> float | None:
        """When the latest send the server accepted finished, if any is still recorded."""
        rows = self._query("SELECT MAX(finished) FROM attempts WHERE status = 'sent'")
        value = rows[0][0] if rows else None
        return float(value) if value is not None else None

    def sent_message_ids(self, since: float) -> set[str]:
        """Message-IDs exactmaild itself sent since `since` (to tell them from webmail sends)."""
        rows = self._query(
            "SELECT message_id FROM attempts WHERE started >= ? AND status IN ('sent', 'unknown')",
            (since,),
        )
        return {str(r[0]) for r in rows if r[0]}

    def prune_attempts(self, before: float) -> None:
        """Forget settled attempts started before `before`, which no limit
        window reaches any more.

        An `inflight` attempt is never deleted, however old: it is a send
        whose outcome is not known yet, and it stays counted until settled.
        The rows go a chunk per commit, found through the `started` index, so
        a daily prune touches only the rows it deletes and never holds the
        writer for long.
        """
        while True:
            with self._tx() as db:
                cur = db.execute(
                    "DELETE FROM attempts WHERE id IN (SELECT id FROM attempts"
                    " WHERE started < ? AND status != 'inflight' LIMIT ?)",
                    (before, _PRUNE_CHUNK),
                )
            if cur.rowcount < _PRUNE_CHUNK:
                return


def _attempt(row: tuple[Any, ...]) -> Attempt:
    aid, qid, mid, started, units, status, finished, detail = row
    return Attempt(
        int(aid),
        str(qid),
        str(mid),
        float(started),
        int(units),
        str(status),
        float(finished) if finished is not None else None,
        str(detail),
    )


def _record_sent(
    db: sqlite3.Connection,
    attempt_id: int,
    queue_id: str,
    finished: float,
    detail: str,
    had_state: bool = True,
    *,
    record: Finished | None = None,
) -> None:
    """Inside a transaction: the attempt was accepted; the message needs no retry
    state (`had_state` False: it never had any, nothing to delete), and its
    history record, if given, is kept."""
    db.execute(
        "UPDATE attempts SET status = 'sent', finished = ?, detail = ? WHERE id = ?",
        (finished, detail, attempt_id),
    )
    # The retry state is the messages module's table, deleted here all the
    # same: a sent message and its forgotten retry state are one commit.
    if had_state:
        db.execute("DELETE FROM messages WHERE queue_id = ?", (queue_id,))
        db.execute("DELETE FROM history_pending WHERE queue_id = ?", (queue_id,))
    if record is not None:
        insert_finished(db, record)
