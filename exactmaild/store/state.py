"""The state store: the only module that writes exactmaild's durable state.

One SQLite database under `state_dir`, in WAL mode so `status` and the other
commands can read while the daemon writes. Send records are committed with
`synchronous=FULL`: a send that was recorded survives a crash or power loss,
which is what lets the daily limit be a hard cap across restarts.

Two connections: every write goes through one (under a lock, in order), every
read through the other, so a read (a scrape, `status`, the receive thread)
never waits behind the sender's commit and its fsync: WAL readers see the
last committed state.

The rule that makes the cap hard: a send is *reserved* (a row counted against
the limit) before the message goes to the SMTP server, and only released if
the server definitely did not take it. A crash mid-send therefore leaves the
send counted, never uncounted.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DB_NAME = "exactmaild.sqlite3"

# Attempt statuses that count against the daily limit. "unknown" is a send
# whose outcome was lost (crash, dropped connection after DATA): counting it
# may waste one send of the allowance but can never exceed the limit.
COUNTED = ("inflight", "sent", "unknown")
# The detail start-up recovery gives a send the daemon died during: how
# `crashes()` tells a crash from a connection lost after the body.
CRASHED = "the daemon stopped during this send"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    queue_id TEXT NOT NULL,
    message_id TEXT NOT NULL DEFAULT '',
    started REAL NOT NULL,
    units INTEGER NOT NULL,
    status TEXT NOT NULL,
    finished REAL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS attempts_started ON attempts (started);
CREATE INDEX IF NOT EXISTS attempts_queue ON attempts (queue_id);
DROP INDEX IF EXISTS attempts_message;
CREATE TABLE IF NOT EXISTS messages (
    queue_id TEXT PRIMARY KEY,
    first_try REAL,
    tries INTEGER NOT NULL DEFAULT 0,
    next_try REAL,
    last_error TEXT NOT NULL DEFAULT '',
    done_rcpts TEXT NOT NULL DEFAULT '[]'
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS imap_position (
    key TEXT PRIMARY KEY,
    uidvalidity INTEGER NOT NULL,
    last_uid INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS imap_delivered (
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    delivered REAL NOT NULL,
    PRIMARY KEY (key, fingerprint)
);
CREATE TABLE IF NOT EXISTS pop3_seen (
    key TEXT NOT NULL,
    uidl TEXT NOT NULL,
    seen REAL NOT NULL,
    PRIMARY KEY (key, uidl)
);
"""


@dataclass(frozen=True)
class MessageInfo:
    """What the store remembers of a message still in the spool."""

    queue_id: str
    first_try: float | None
    tries: int
    next_try: float | None
    last_error: str
    done_rcpts: tuple[str, ...]


@dataclass(frozen=True)
class Attempt:
    id: int
    queue_id: str
    message_id: str
    started: float
    units: int
    status: str
    finished: float | None
    detail: str


class StateStore:
    """Durable state. Thread-safe: the sender and the receiver share one store."""

    def __init__(self, state_dir: Path, *, create: bool = True) -> None:
        self.path = state_dir / DB_NAME
        if create:
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        elif not self.path.exists():
            raise FileNotFoundError(str(self.path))
        self._lock = threading.RLock()
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a record
        # is durable exactly when the method that writes it returns.
        self._db = sqlite3.connect(
            str(self.path), timeout=10.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA busy_timeout = 10000")
        if create:
            self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")
        if create:
            self._db.executescript(_SCHEMA)
        self._rlock = threading.Lock()
        self._rdb = sqlite3.connect(
            str(self.path), timeout=10.0, isolation_level=None, check_same_thread=False
        )
        self._rdb.execute("PRAGMA busy_timeout = 10000")

    def close(self) -> None:
        with self._lock:
            self._db.close()
        with self._rlock:
            self._rdb.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (disk full, I/O error) may or may not have
                # rolled back by itself; left open, it would refuse every
                # later BEGIN and the store would never recover.
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        with self._rlock:
            return list(self._rdb.execute(sql, args).fetchall())

    # -- sends and the limit -------------------------------------------------

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
    ) -> int:
        """Reserve a send (count it against the limit) and, in the same synced
        commit, record the previous send the server accepted, if any; returns
        the new attempt id.

        `sent` is (attempt id, queue id, finished, detail, had retry state) of
        that previous send. Each send is still recorded before the next one's
        final dot, so at most one send is ever accepted but unrecorded; what is
        saved is one commit per message.
        """
        with self._tx() as db:
            if sent is not None:
                _record_sent(db, *sent)
            cur = db.execute(
                "INSERT INTO attempts (queue_id, message_id, started, units, status)"
                " VALUES (?, ?, ?, ?, 'inflight')",
                (queue_id, message_id, now, units),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

    def finish_sent(
        self, attempt_id: int, queue_id: str, now: float, detail: str = "", had_state: bool = True
    ) -> None:
        """Record a completed send and forget the message's retry state, in one commit."""
        with self._tx() as db:
            _record_sent(db, attempt_id, queue_id, now, detail, had_state)

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
        rows = self._query(
            "SELECT id, queue_id, message_id, started, units, status, finished, detail"
            " FROM attempts WHERE queue_id = ? ORDER BY id DESC LIMIT 1",
            (queue_id,),
        )
        return _attempt(rows[0]) if rows else None

    def last_sent(self) -> float | None:
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
        """Old settled attempts no longer matter to any limit window."""
        with self._tx() as db:
            db.execute("DELETE FROM attempts WHERE started < ? AND status != 'inflight'", (before,))

    # -- per-message retry state ----------------------------------------------

    def message(self, queue_id: str) -> MessageInfo | None:
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

    def set_next_try(self, queue_id: str, next_try: float | None) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO messages (queue_id, next_try) VALUES (?, ?)"
                " ON CONFLICT (queue_id) DO UPDATE SET next_try = excluded.next_try",
                (queue_id, next_try),
            )

    def forget_message(self, queue_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM messages WHERE queue_id = ?", (queue_id,))

    # -- small facts for `status` and the metrics -----------------------------

    def get(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def get_all(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self._query("SELECT key, value FROM meta")}

    def put(self, **values: str | None) -> None:
        """Set (or, with None, delete) several facts in one transaction."""
        with self._tx() as db:
            for key, value in values.items():
                if value is None:
                    db.execute("DELETE FROM meta WHERE key = ?", (key,))
                else:
                    db.execute(
                        "INSERT INTO meta (key, value) VALUES (?, ?)"
                        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        (key, value),
                    )

    def probe_writable(self) -> None:
        """Raise unless the store takes a commit at least as big as a send's
        (after SQLITE_FULL or an I/O error, say): 32 KiB written and removed in
        one synced commit. A one-row write can fit in a nearly full file system
        that the next send's commit does not fit in."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('probe', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                ("x" * 32768,),
            )
            db.execute("DELETE FROM meta WHERE key = 'probe'")

    # -- receive positions ------------------------------------------------------

    def imap_position(self, key: str) -> tuple[int, int] | None:
        """(UIDVALIDITY, last delivered UID) for a mailbox folder, if any."""
        rows = self._query("SELECT uidvalidity, last_uid FROM imap_position WHERE key = ?", (key,))
        return (int(rows[0][0]), int(rows[0][1])) if rows else None

    def set_imap_position(self, key: str, uidvalidity: int, last_uid: int) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO imap_position (key, uidvalidity, last_uid) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET uidvalidity = excluded.uidvalidity,"
                " last_uid = excluded.last_uid",
                (key, uidvalidity, last_uid),
            )

    def record_imap_delivery(
        self, key: str, uidvalidity: int, uid: int, fingerprint: str, now: float
    ) -> None:
        """A message is safely in the Maildir: advance the position and remember it.

        One transaction, so the position and the fingerprint never disagree.
        The fingerprints (Message-ID, or a header hash) are what lets a check
        after a UIDVALIDITY change skip mail already delivered.
        """
        with self._tx() as db:
            db.execute(
                "INSERT INTO imap_position (key, uidvalidity, last_uid) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET uidvalidity = excluded.uidvalidity,"
                " last_uid = excluded.last_uid",
                (key, uidvalidity, uid),
            )
            if fingerprint:
                db.execute(
                    "INSERT OR IGNORE INTO imap_delivered (key, fingerprint, delivered)"
                    " VALUES (?, ?, ?)",
                    (key, fingerprint, now),
                )

    def imap_delivered(self, key: str) -> set[str]:
        """Fingerprints of the messages delivered from this folder (see record_imap_delivery)."""
        rows = self._query("SELECT fingerprint FROM imap_delivered WHERE key = ?", (key,))
        return {str(r[0]) for r in rows}

    def keep_imap_delivered(self, key: str, present: set[str]) -> None:
        """After a full pass over a rebuilt folder: forget fingerprints no longer in it."""
        gone = self.imap_delivered(key) - present
        if not gone:
            return
        with self._tx() as db:
            db.executemany(
                "DELETE FROM imap_delivered WHERE key = ? AND fingerprint = ?",
                [(key, f) for f in gone],
            )

    def pop3_seen(self, key: str) -> set[str]:
        return {str(r[0]) for r in self._query("SELECT uidl FROM pop3_seen WHERE key = ?", (key,))}

    def add_pop3_seen(self, key: str, uidl: str, now: float) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO pop3_seen (key, uidl, seen) VALUES (?, ?, ?)",
                (key, uidl, now),
            )

    def keep_pop3_seen(self, key: str, present: set[str]) -> None:
        """Forget UIDLs no longer on the server (the server may reuse them one day)."""
        seen = self.pop3_seen(key)
        gone = seen - present
        if not gone:
            return
        with self._tx() as db:
            db.executemany(
                "DELETE FROM pop3_seen WHERE key = ? AND uidl = ?", [(key, u) for u in gone]
            )

    def reset_receive(self) -> None:
        """Forget every receive position: the next check fetches all that is on the server."""
        with self._tx() as db:
            db.execute("DELETE FROM imap_position")
            db.execute("DELETE FROM imap_delivered")
            db.execute("DELETE FROM pop3_seen")


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
) -> None:
    """Inside a transaction: the attempt was accepted; the message needs no retry
    state (`had_state` False: it never had any, nothing to delete)."""
    db.execute(
        "UPDATE attempts SET status = 'sent', finished = ?, detail = ? WHERE id = ?",
        (finished, detail, attempt_id),
    )
    if had_state:
        db.execute("DELETE FROM messages WHERE queue_id = ?", (queue_id,))
