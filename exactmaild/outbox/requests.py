"""The operator's requests to the running daemon's queue: `queue send-now`
and the re-reading of the spool after a batch operation.

They arrive on the main thread (the control socket) and are applied on the
sender's, where the queue index lives, the next time it looks for a message
to send: the index is never changed from two threads. A deque's append and
popleft are atomic, which is all the hand-over needs.

Why a re-read: `queue cancel`, `hold`, `release` and `retry` rename files
while the daemon runs. What arrives in `new/` the daemon sees at once
(inotify); what leaves `new/` or `deferred/` it would only find gone when
its turn came, and meanwhile count it in the queue's levels (a message
retried out of `deferred/` would sit in the retry index until its old retry
time). `rescan` drops those names, and adds what `deferred/` gained.
"""

from __future__ import annotations

from collections import deque

from exactmaild.core.log import Log
from exactmaild.core.states import DEFERRED, LATER, NEW
from exactmaild.outbox.index import QueueIndex
from exactmaild.outbox.spool import Spool, valid_name
from exactmaild.store.state import StateStore

RESCAN = "rescan"
SEND_NOW = "send-now"


class Requests:
    """Requests waiting for the sender's thread, in the order they came."""

    def __init__(self) -> None:
        self._waiting: deque[tuple[str, str]] = deque()

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def send_now(self, name: str) -> None:
        self._waiting.append((SEND_NOW, name))

    def rescan(self) -> None:
        self._waiting.append((RESCAN, ""))

    def apply(
        self, index: QueueIndex, spool: Spool, store: StateStore, now: float, log: Log
    ) -> None:
        """On the sender's thread: apply every waiting request."""
        while self._waiting:
            kind, name = self._waiting.popleft()
            if kind == RESCAN:
                _rescan(index, spool, store, now)
            elif _send_now(index, spool, name):
                log.info("send_now", queue_id=name)
            else:
                log.warning("send_now_not_queued", queue_id=name)


def _send_now(index: QueueIndex, spool: Spool, name: str) -> bool:
    if not valid_name(name):
        return False
    if name not in index.new and name not in index.deferred:
        # Released or retried a moment ago: inotify has not told us yet.
        if spool.is_regular(NEW, name):
            index.new.append(name)
        elif spool.is_regular(DEFERRED, name):
            index.deferred.set(name, 0.0)
        else:
            return False
    index.put_first(name)
    return True


def _rescan(index: QueueIndex, spool: Spool, store: StateStore, now: float) -> None:
    queued = set(spool.names(NEW))
    index.new.retain(queued)
    for name in spool.queued_oldest_first():
        index.new.append(name)  # no-op for the names it has
    deferred = set(spool.names(DEFERRED))
    for name in index.deferred.names():
        if name not in deferred:
            index.deferred.discard(name)
    for name in deferred - set(index.deferred.names()):
        info = store.message(name)
        index.deferred.set(name, info.next_try if info and info.next_try else now)
    index.later.retain(set(spool.names(LATER)))  # cancelled or held while scheduled


__all__ = ["Requests"]
