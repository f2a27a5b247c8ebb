"""Start-up recovery: what a previous run left in `active/`, and the queue index.

A message in `active/` at start was being sent when the daemon stopped. Its
last attempt decides: recorded as sent, its file goes (the send is not
repeated); in flight at `MAX_CRASH_CLAIMS` crashes in a row, it is failed
(it may be what kills the daemon); otherwise it goes back to `new/`, the
one duplicate a crash may cost. Then the queue index is built from one scan
of the spool (`rebuild_index`), mail for later's times from `later/` alone.
"""

from __future__ import annotations

from exactmaild.core.log import Log
from exactmaild.core.states import ACTIVE, DEFERRED, NEW
from exactmaild.outbox import later
from exactmaild.outbox.index import QueueIndex
from exactmaild.outbox.record import Recorder
from exactmaild.outbox.spool import Spool
from exactmaild.store.state import StateStore

# A message that was in flight when the daemon died this many times is failed
# instead of being tried again: it may be what kills the daemon.
MAX_CRASH_CLAIMS = 3


def settle_active(spool: Spool, store: StateStore, records: Recorder, log: Log) -> None:
    """Remove, fail or requeue each message left in `active/`."""
    for name in spool.names(ACTIVE):
        last = store.last_attempt(name)
        if last is not None and last.status == "sent":
            spool.remove_sent(name)
            store.forget_message(name)
            log.info("recovered_sent", queue_id=name, message_id=last.message_id)
        elif (crashes := store.crashes(name)) >= MAX_CRASH_CLAIMS:
            reason = (
                f"the daemon stopped unexpectedly {crashes} times while sending this "
                "message; it was taken out of the queue so it cannot stop the daemon again. "
                "Look at the message, then `exactmaild queue retry` it if it is sound."
            )
            spool.fail(name, ACTIVE, reason)
            store.forget_message(name)
            records.failed(name, reason, crashes)
            log.error("message_failed", queue_id=name, reason=reason)
        else:
            spool.move(name, ACTIVE, NEW)
            log.warning("recovered_claimed", queue_id=name, requeued=True)


def rebuild_index(spool: Spool, store: StateStore, index: QueueIndex, now: float) -> None:
    """Deferred messages by their next try (due now if it is unknown), then
    new/ oldest first (what settle_active() requeued sorts by mtime too)."""
    for name in spool.names(DEFERRED):
        info = store.message(name)
        index.deferred.set(name, info.next_try if info and info.next_try else now)
    index.new.reset(spool.queued_oldest_first())
    later.recover(spool, index, now)


__all__ = ["MAX_CRASH_CLAIMS", "rebuild_index", "settle_active"]
