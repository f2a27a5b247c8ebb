"""Receive positions: how far each mailbox check got, so no mail is
delivered into the Maildir twice.

IMAP: per folder, the UIDVALIDITY and the last UID delivered, plus a
fingerprint of each delivered message (for a folder whose UIDVALIDITY
changed). POP3: the UIDLs already seen. The keys name an account and folder.
"""

from __future__ import annotations

from exactmaild.store.db import Database


class ReceivePositions(Database):
    """The imap_position, imap_delivered and pop3_seen tables."""

    def imap_position(self, key: str) -> tuple[int, int] | None:
        """(UIDVALIDITY, last delivered UID) for a mailbox folder, if any."""
        rows = self._query("SELECT uidvalidity, last_uid FROM imap_position WHERE key = ?", (key,))
        return (int(rows[0][0]), int(rows[0][1])) if rows else None

    def set_imap_position(self, key: str, uidvalidity: int, last_uid: int) -> None:
        """Set a folder's position where there is no delivery to record (a batch
        of messages already known, an empty folder, the start from now)."""
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
        """The UIDLs already delivered from this POP3 mailbox."""
        return {str(r[0]) for r in self._query("SELECT uidl FROM pop3_seen WHERE key = ?", (key,))}

    def add_pop3_seen(self, key: str, uidl: str, now: float) -> None:
        """A POP3 message is safely in the Maildir: never deliver it again."""
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
