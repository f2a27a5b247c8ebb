"""What the Outbox drops once an hour: what no limit window can count any more.

The ledger keeps a day of sends beyond the window, the attempts table a week,
the sent history `history_days`: so all three stay bounded however long the
daemon runs.
"""

from __future__ import annotations

import sqlite3
import threading

from exactmaild.core.limits import DAY, Ledger
from exactmaild.core.log import Log
from exactmaild.outbox.storage import is_storage_problem
from exactmaild.store.state import StateStore

# Attempts older than this are pruned: every limit window, the Sent-folder
# count and crash recovery look back two days at most.
ATTEMPTS_KEPT = 7 * DAY
PRUNE_EVERY = 3600.0


def prune(
    ledger: Ledger,
    lock: threading.RLock,
    store: StateStore,
    log: Log,
    now: float,
    history_days: int,
) -> bool:
    """Drop what is past keeping; False if storage trouble stopped it (try again soon)."""
    # A day of margin: a clock stepped back across midnight still finds the
    # sends of the window it lands in.
    with lock:
        ledger.prune(now - DAY)
    try:
        store.prune_attempts(now - ATTEMPTS_KEPT)
        if gone := store.prune_history(now - history_days * DAY):
            log.info("history_pruned", records=gone, history_days=history_days)
    except (OSError, sqlite3.Error) as exc:
        if not is_storage_problem(exc):
            raise
        return False
    return True
