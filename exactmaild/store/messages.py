"""Per-message retry state: what the store remembers of a message still in
the spool between its attempts.

A message has a row in `messages` once a send of it failed for now (how many
tries, since when, when next, the last error) or once some of its recipients
already have it (never sent to again). The row goes with the message: when
it is sent (in the same commit, see `sends`) or leaves the spool otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from exactmaild.store.db import Database


@dataclass(frozen=True)
class MessageInfo:
    """What the store remembers of a message still in the spool."""

    queue_id: str
    first_try: float | None
    tries: int
    next_try: float | None
    last_error: str
    done_rcpts: tuple[str, ...]


class MessageRecords(Database):
    """The messages table: retries and recipients already done, per queue id."""

    def message(self, queue_id: str) -> MessageInfo | None:
        """The retry state of one message, or None if it has none."""
        rows = self._query(
            "SELECT queue_id, first_try, tries, next_try, last_error, done_rcpts"
            " FROM messages WHERE queue_id = ?",
            (queue_id,),
        )
        if not rows:
            return None
        q, first, tries, nxt, err, done = rows[0]
        return MessageInfo(
            str(q),
            float(first) if first is not None else None,
            int(tries),
            float(nxt) if nxt is not None else None,
            str(err),
            tuple(json.loads(str(done))),
        )

    def messages(self) -> dict[str, MessageInfo]:
        """The retry state of every message that has one, by queue id."""
        rows = self._query("SELECT queue_id FROM messages")
        out = {}
        for (qid,) in rows:
            info = self.message(str(qid))
            if info is not None:
                out[info.queue_id] = info
        return out

    def note_temporary_failure(
        self, queue_id: str, now: float, error: str, next_try: float
    ) -> MessageInfo:
        """One more failed try: count it, keep the error, set when to try next."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO messages (queue_id, first_try, tries, next_try, last_error)"
                " VALUES (?, ?, 1, ?, ?) ON CONFLICT (queue_id) DO UPDATE SET"
                " tries = tries + 1, next_try = excluded.next_try,"
                " last_error = excluded.last_error,"
                " first_try = COALESCE(first_try, excluded.first_try)",
                (queue_id, now, next_try, error),
            )
        info = self.message(queue_id)
        assert info is not None
        return info

    def add_done_recipients(self, queue_id: str, rcpts: list[str]) -> None:
        """Recipients that already have the message: never send to them again."""
        info = self.message(queue_id)
        done = list(info.done_rcpts) if info else []
        done.extend(r for r in rcpts if r not in done)
        with self._tx() as db:
            db.execute(
                "INSERT INTO messages (queue_id, done_rcpts) VALUES (?, ?)"
                " ON CONFLICT (queue_id) DO UPDATE SET done_rcpts = excluded.done_rcpts",
                (queue_id, json.dumps(done)),
            )

    def forget_message(self, queue_id: str) -> None:
        """Drop the retry state of a message that left the spool."""
        with self._tx() as db:
            db.execute("DELETE FROM messages WHERE queue_id = ?", (queue_id,))
