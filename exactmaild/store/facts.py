"""Small facts for `status` and the metrics: the `meta` key/value table.

The daemon's pid, the last and next check, the last errors, a pause and the
sends counted elsewhere: strings under a key, set or cleared several at a
time in one commit.
"""

from __future__ import annotations

from exactmaild.store.db import Database


class Facts(Database):
    """The meta table: one string per key."""

    def get(self, key: str) -> str | None:
        """The fact under `key`, or None if it is not set."""
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def get_all(self) -> dict[str, str]:
        """Every fact, by key."""
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
