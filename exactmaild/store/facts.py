"""Small facts for `status` and the metrics: the `meta` key/value table.

The daemon's pid, the last and next check, the last errors, a pause and the
sends counted elsewhere: strings under a key, set or cleared several at a
time in one commit.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from exactmaild.store.db import Database

_SENT_ELSEWHERE = "sent_elsewhere"


@dataclass(frozen=True)
class SentElsewhere:
    """Mail the account sent elsewhere (webmail, phones), found in the Sent
    folder: `units` in the limit window that began at `window_start`."""

    window_start: float
    units: int


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

    def sent_elsewhere(self) -> SentElsewhere | None:
        """The last count of the Sent folder, if there is one (and it reads)."""
        value = self.get(_SENT_ELSEWHERE)
        if value is None:
            return None
        start, _, units = value.partition(":")
        with contextlib.suppress(ValueError):
            return SentElsewhere(float(start), int(units))
        return None

    def set_sent_elsewhere(self, count: SentElsewhere) -> None:
        """Keep the count, so a restart (and `status`) still charges it."""
        self.put(**{_SENT_ELSEWHERE: f"{count.window_start!r}:{count.units}"})
