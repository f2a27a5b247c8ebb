"""The SQLite database under the state store: opening it, its schema, and the
two ways in (a write transaction, a read query).

One SQLite database under `state_dir`, in WAL mode so `status` and the other
commands can read while the daemon writes. Every write is committed with
`synchronous=FULL`: a send that was recorded survives a crash or power loss,
which is what lets the daily limit be a hard cap across restarts.

Two connections: every write goes through one (under a lock, in order), every
read through the other, so a read (a scrape, `status`, the receive thread)
never waits behind the sender's commit and its fsync: WAL readers see the
last committed state.

`Database` is the base of each part of the store (`sends`, `messages`,
`history`, `facts`, `positions`); `state.StateStore` combines them over one database.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DB_NAME = "exactmaild.sqlite3"

# The whole schema in one place, although each table belongs to one part of
# the store: `CREATE ... IF NOT EXISTS` runs at every start, so a database
# made by an older version gains what it lacks.
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
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY,
    queue_id TEXT NOT NULL,
    message_id TEXT NOT NULL DEFAULT '',
    subject TEXT NOT NULL DEFAULT '',
    user TEXT NOT NULL DEFAULT '',
    result TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    finished REAL NOT NULL,
    recipients TEXT NOT NULL DEFAULT '[]',
    queued_at REAL,
    tries INTEGER NOT NULL DEFAULT 1
);
-- No index beside the rowid: each is one more page in the send's synced
-- commit. Rows go in finishing order, so the rowid orders them by time, and
-- a month of history is scanned in milliseconds by `history` and `queue show`.
CREATE TABLE IF NOT EXISTS history_pending (
    queue_id TEXT PRIMARY KEY,
    recipients TEXT NOT NULL,
    updated REAL NOT NULL
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


class Database:
    """The open database: a writer connection under a lock, a reader beside it.

    Thread-safe: the sender and the receiver share one store.
    """

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

    def probe_writable(self) -> None:
        """Raise unless the store takes a commit at least as big as a send's
        (after SQLITE_FULL or an I/O error, say): 32 KiB written and removed in
        one synced commit. A one-row write can fit in a nearly full file system
        that the next send's commit does not fit in."""
        # The meta table is scratch space here: the row never outlives the
        # transaction, so no reader ever sees it.
        with self._tx() as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('probe', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                ("x" * 32768,),
            )
            db.execute("DELETE FROM meta WHERE key = 'probe'")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed (and synced) when the block ends."""
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
        """Rows of one read on the reader connection: the last committed state."""
        with self._rlock:
            return list(self._rdb.execute(sql, args).fetchall())
