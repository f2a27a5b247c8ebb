"""Mail for later in the spool: put off on arrival, let go at its time.

A message whose `Deferred-Delivery:` time (RFC 4021; `submit --at` writes
one) is still ahead waits in `later/`, where it counts against nothing and
can still be cancelled or held. Its time lives in the message itself
(`core.later`), so:

- on arrival (inotify) the header section is read once and the message is
  renamed `new/` -> `later/` (the `ScheduledIndex` has its time from then);
- at start-up only `later/` is read again: the rest of the spool is never
  opened for it, so a start with 100,000 queued costs what it did;
- whatever is in `new/` without having been looked at (queued while the
  daemon was stopped, or a missed event) is checked when its turn comes:
  the sender reads it then anyway, and it goes to `later/` instead;
- when its time comes it is renamed back into `new/` and joins the back of
  its own priority lane (read with its time) like a message arriving then,
  paced and capped as any other.

A crash between two of these steps leaves the file in `new/` or `later/`
with its header: never lost, never sent before its time.
"""

from __future__ import annotations

import datetime as dt

from exactmaild.core.errors import BadMessage
from exactmaild.core.lanes import Lane, lane_of
from exactmaild.core.later import HEAD_LIMIT, deferred_until
from exactmaild.core.log import Log
from exactmaild.core.states import LATER, NEW, State
from exactmaild.outbox.index import QueueIndex
from exactmaild.outbox.spool import Spool


def time_of(spool: Spool, state: State, name: str) -> float | None:
    """A spooled message's Deferred-Delivery time (None: none, or unreadable)."""
    return head_of(spool, state, name)[0]


def head_of(spool: Spool, state: State, name: str) -> tuple[float | None, Lane]:
    """A spooled message's Deferred-Delivery time (None: none, or unreadable)
    and its priority lane, from one read of its header section."""
    try:
        raw = spool.read(state, name, HEAD_LIMIT)
    except OSError:
        return None, "normal"
    try:
        return deferred_until(raw), lane_of(raw)
    except BadMessage:
        return None, lane_of(raw)


def recover(spool: Spool, index: QueueIndex, now: float) -> None:
    """Start-up: the time and lane of each message in `later/`, from its
    header (only `later/` is read). One without a readable time is due now:
    the sender meets (and fails, with the reason) whatever is wrong with it."""
    for name in spool.names(LATER):
        at, lane = head_of(spool, LATER, name)
        index.later.set(name, now if at is None else at, lane)


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


class Later:
    """The Outbox's part for mail for later: the renames into and out of
    `later/`, and the scheduled index (`QueueIndex.later`)."""

    def __init__(self, spool: Spool, index: QueueIndex, log: Log) -> None:
        self.spool = spool
        self.index = index
        self.log = log

    def arrived(self, name: str, now: float) -> bool:
        """A name inotify saw arrive in `new/`: to `later/` if its time is
        ahead, else into the queue in its lane; True if it joined the queue
        just now. One read of its header section serves both."""
        try:
            head = self.spool.read(NEW, name, HEAD_LIMIT)
        except OSError:
            head = b""  # the sender meets it, and fails it with the reason
        if self._put_off(name, now, head, sending=False):
            return False
        return self.index.new.append(name, lane_of(head))

    def take_in(self, name: str, now: float, raw: bytes) -> bool:
        """Put off a message of `new/` the sender just read for sending
        (`raw`) whose time is still ahead; True if it now waits in `later/`.
        A failed rename is raised: it must never go early."""
        return self._put_off(name, now, raw, sending=True)

    def _put_off(self, name: str, now: float, head: bytes, *, sending: bool) -> bool:
        try:
            at = deferred_until(head)
        except BadMessage:
            return False  # the sender meets it, and fails it with the reason
        if at is None or at <= now:
            return False  # a time in the past means now
        try:
            self.spool.move(name, NEW, LATER)
        except FileNotFoundError:
            return False  # cancelled or claimed meanwhile
        except OSError:
            if sending:
                raise  # the sender's storage handling: it must not go now
            return False  # an arrival: checked again when its turn comes
        self.index.new.discard(name)
        self.index.later.set(name, at, lane_of(head))  # its lane when it comes due
        self.log.info("scheduled", queue_id=name, at=_iso(at))
        return True

    def release_due(self, now: float) -> None:
        """Move what has come due back into `new/`, at the back of its lane."""
        for name, lane in self.index.later.pop_due(now):
            try:
                self.spool.move(name, LATER, NEW)
            except FileNotFoundError:
                continue  # cancelled or held meanwhile
            except OSError:
                self.index.later.set(name, now, lane)  # still there: again at the next look
                raise
            self.index.new.append(name, lane)
            self.log.info("schedule_reached", queue_id=name)

    def next_time(self) -> float:
        return self.index.later.next_time()


__all__ = ["Later", "recover", "time_of"]
