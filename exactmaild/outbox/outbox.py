"""The Outbox: everything that happens to a queued message, in one owner.

Like Mailman's switchboard, the queue's operations are its lifecycle:
- `recover()` at start-up settles what a previous run left in `active/`;
- `arrived()` takes in what producers drop into `new/` (mail for later: `outbox.later`);
- `next_due()` reads the message to send next (lane by lane: the earliest
  due retry, else the oldest in `new/`), `reject()` fails one that cannot be sent;
- `claim()` takes it for sending and returns the `Claim` whose steps
  (reserve, then sent / deferred / held / failed / given back) move the file
  and write the state together;
- `settle()` and `tidy()` finish what the overlap leaves waiting.
It owns the spool renames (through `Spool`), the state store's rows of a
send and its history record (`record`), the queue index and the ledger:
callers never build a path, and nothing else writes a message's state.

**The overlap.** A send the server accepted is recorded in the same synced
commit that reserves the next one (`Claim.reserve()`), and that commit runs
while the server reads the next message's MAIL/RCPT/DATA (or once their
replies are in, where they went with the previous final dot). So at most one
send is ever accepted but unrecorded: `settle()` writes it on its own before
the sender waits for anything, and its file is removed (`tidy()`) while the
server reads the next message's body. A crash at any point leaves the
message in `active/` and, once reserved, its send counted: `recover()` puts
it back in the queue, or removes it if its send was recorded. A crash costs
at most one duplicate, never a loss, never a send beyond the cap.
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3
import threading
from collections.abc import Iterable
from zoneinfo import ZoneInfo

from exactmaild.config.model import Send
from exactmaild.core.clock import Clock
from exactmaild.core.lanes import Lane
from exactmaild.core.limits import DAY, Ledger
from exactmaild.core.log import Log
from exactmaild.core.states import ACTIVE, DEFERRED, FAILED, NEW, State
from exactmaild.outbox.claim import Claim, Phase, Queued, Settlement
from exactmaild.outbox.index import QueueIndex
from exactmaild.outbox.later import Later
from exactmaild.outbox.levels import Snapshot, Weigh, measure
from exactmaild.outbox.pruning import PRUNE_EVERY, prune
from exactmaild.outbox.record import Recorder
from exactmaild.outbox.recovery import rebuild_index, settle_active
from exactmaild.outbox.requests import Requests
from exactmaild.outbox.spool import Spool, valid_name
from exactmaild.outbox.storage import StorageTrouble, is_storage_problem
from exactmaild.store.state import StateStore


class Outbox:
    def __init__(
        self,
        spool: Spool,
        store: StateStore,
        *,
        send: Send,
        timezone: str,
        log: Log,
        clock: Clock,
        lock: threading.RLock | None = None,
        history_days: int = 30,  # how long `history` keeps a finished message
    ) -> None:
        self.spool = spool
        self.store = store
        self.log = log
        self.clock = clock
        # Held while the ledger changes: the main thread reads it for levels.
        self._lock = lock or threading.RLock()
        self.ledger = Ledger(send.limit_window, ZoneInfo(timezone), send.allowance)
        self._index = QueueIndex(spool.lane)  # each message's lane read once, on arrival
        self._later = Later(spool, self._index, log)  # mail for later
        self._ignored: set[str] = set()  # non-files already logged once
        self._unrecorded: Claim | None = None  # accepted; its record waits
        self._unremoved: Claim | None = None  # recorded; its file waits
        self.storage = StorageTrouble(spool, store, log)  # true while in trouble
        self._records = Recorder(spool, store, log, clock)
        self.requests = Requests()  # the operator's, applied on the sender's thread
        self._next_prune = 0.0
        self.history_days = history_days  # a reload sets it

    # -- start-up and configuration ---------------------------------------------------

    def recover(self) -> None:
        """Settle what a previous run left behind and build the queue index."""
        now = self.clock.time()
        n = self.store.recover_inflight(now)
        if n:
            self.log.warning("recovered_unknown_sends", count=n, counted=True)
        self._replay(self.ledger, now)
        settle_active(self.spool, self.store, self._records, self.log)
        rebuild_index(self.spool, self.store, self._index, now)
        self.maintain(now)
        self.log.info(
            "spool_scanned",
            queued=len(self._index.new),
            deferred=len(self._index.deferred),
            sent_in_window=self.ledger.used(now),
        )

    def _replay(self, ledger: Ledger, now: float) -> None:
        for ts, units in self.store.counted_sends(now - 2 * DAY):
            ledger.record(ts, units)

    def set_limits(self, send: Send, timezone: str) -> None:
        """A reload: a new window kind or zone rebuilds the ledger from the store;
        a new allowance applies to the current window at once."""
        tz = ZoneInfo(timezone)
        with self._lock:
            if (send.limit_window, tz) != (self.ledger.kind, self.ledger.tz):
                ledger = Ledger(send.limit_window, tz, send.allowance)
                self._replay(ledger, self.clock.time())
                self.ledger = ledger
            else:
                self.ledger.set_allowance(send.allowance)

    def maintain(self, now: float) -> None:
        """Drop what no limit window can count any more, once an hour: the
        ledger and the attempts table stay bounded however long it runs."""
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_EVERY
        if not prune(self.ledger, self._lock, self.store, self.log, now, self.history_days):
            self._next_prune = now  # storage trouble: try again at the next step

    # -- the queue ----------------------------------------------------------------------

    def __len__(self) -> int:
        """Messages waiting: queued in new/ and deferred."""
        return len(self._index)

    @property
    def queued(self) -> int:
        return len(self._index.new)

    def arrived(self, names: Iterable[str | None]) -> None:
        """Producers renamed these into new/ (None: too many to tell, the
        kernel's event queue overflowed: read new/ again)."""
        for name in names:
            if name is None:
                self._index.new.reset(self.spool.queued_oldest_first())
            elif valid_name(name) and self._later.arrived(name, self.clock.time()):
                self.log.debug("noticed", queue_id=name)

    def next_retry_time(self, above: Lane | None = None) -> float:
        """The next retry (`above`: of the lanes before that one) or message for later."""
        return min(self._index.deferred.next_time(above), self._later.next_time())

    def retry_all_now(self) -> None:
        """`flush`: every deferred message is due now."""
        self._index.all_due_now()

    def next_due(self, now: float, max_size: int) -> Queued | None:
        """The message to send next, read (at most max_size + 1 bytes), or None."""
        self.requests.apply(self._index, self.spool, self.store, now, self.log)
        self._later.release_due(now)
        while (first := self._index.first(now)) is not None:
            name, src = first
            if not self.spool.is_regular(src, name):
                self._skip(name, src)
                continue
            try:
                raw, born = self.spool.read_born(src, name, max_size)
            except FileNotFoundError:
                self._skip(name, src)
                continue
            except PermissionError:
                # A producer wrote it without the group's read bit (umask 077):
                # failed with the fix, never a stop of the whole queue.
                self.reject(
                    Queued(name, src, b"", self.store.message(name)),
                    "the daemon may not read this file: a producer must write it with "
                    "mode 0640 (umask 027) so the group exactmaild can read it",
                )
                continue
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.EISDIR):  # swapped for a symlink/dir
                    self._skip(name, src)
                    continue
                raise
            if src == NEW and self._later.take_in(name, now, raw):
                continue  # its Deferred-Delivery time is ahead: to later/
            return Queued(name, src, raw, self.store.message(name), born)
        return None

    def still_next(self, q: Queued, now: float) -> bool:
        """Whether a message read earlier is still the one to send next (mail
        for later of a higher lane may have come due meanwhile)."""
        self.requests.apply(self._index, self.spool, self.store, now, self.log)
        self._later.release_due(now)
        return self._index.is_first(q.name, q.src, now) and self.spool.is_regular(q.src, q.name)

    def _skip(self, name: str, src: State) -> None:
        """Drop a name from the index: it vanished, or it is not a regular file."""
        self._index.discard(name, src)
        if self.spool.exists(src, name) and name not in self._ignored:
            self._ignored.add(name)
            self.log.warning(
                "ignored_non_file",
                queue_id=name,
                state=src,
                reason="not a regular file (symlink, directory or device); never followed",
            )

    def reject(self, q: Queued, reason: str) -> None:
        """A message that can never be sent (unreadable, too big for the
        allowance): to failed/ with its reason, without claiming it."""
        self._index.discard(q.name, q.src)
        try:
            self.spool.fail(q.name, q.src, reason)
        except FileNotFoundError:
            return
        self.store.forget_message(q.name)
        self._records.failed(q.name, reason, q.info.tries if q.info else 0, q.raw)
        self.log.error("message_failed", queue_id=q.name, reason=reason)

    def claim(self, q: Queued, log: Log) -> Claim | None:
        """Take a message for sending: None if it is gone."""
        self._index.discard(q.name, q.src)
        if self.spool.claim(q.name, q.src) is None:
            return None
        return Claim(self, q, log)

    def read_failed(self, name: str, max_size: int) -> bytes:
        return self.spool.read(FAILED, name, max_size)

    # -- the steps of a Claim (called by it) -----------------------------------------

    def _reserve(self, claim: Claim, message_id: str, units: int, now: float) -> int:
        prev, self._unrecorded = self._unrecorded, None
        row = None
        record = None
        if prev is not None:
            row = (prev.attempt, prev.name, prev.accepted_at, prev.reply, prev.info is not None)
            record = self._records.record(prev, prev.record(), prev.accepted_at)
        try:
            attempt = self.store.settle_and_reserve(
                row, claim.name, message_id, units, now, record=record
            )
        except BaseException:
            if prev is not None:
                self.storage.stranded.append((prev, prev.record()))
            claim.phase = Phase.SETTLED
            self.storage.stranded.append((claim, Settlement(claim.src, back=True)))
            raise
        with self._lock:
            self.ledger.record(now, units)
        if prev is not None:
            self._unremoved = prev
        return attempt

    def _accepted(self, claim: Claim) -> None:
        self._unrecorded = claim

    def _about(self, claim: Claim, raw: bytes) -> None:  # what the history will say
        self._records.about(claim, raw)

    def _apply(self, claim: Claim, s: Settlement) -> None:
        """Write a settlement; if storage refuses, keep it for later and raise."""
        try:
            self._write(claim, s)
        except (OSError, sqlite3.Error) as exc:
            if not is_storage_problem(exc):
                raise
            self.storage.stranded.append((claim, s))
            self.storage.failed(exc)
            raise

    def _write(self, claim: Claim, s: Settlement) -> None:
        name = claim.name
        now = s.at if s.at is not None else self.clock.time()
        if s.attempt is not None and not s.attempt_written:
            if s.attempt == "sent" and s.to is None:
                record = self._records.record(claim, s, now)
                self.store.finish_sent(
                    claim.attempt, name, now, s.detail, claim.info is not None, record=record
                )
                s.record_written = True
            else:
                self.store.finish(claim.attempt, s.attempt, now, s.detail)
            if s.attempt == "released":
                # The server definitely did not take it: the allowance comes back.
                with self._lock:
                    self.ledger.forget(claim.reserved_at, claim.units)
            s.attempt_written = True
        if s.done_rcpts and not s.rcpts_written:
            self.store.add_done_recipients(name, list(s.done_rcpts))
            if s.to == DEFERRED:  # what they got joins the record once all is done
                done = tuple(d for d in claim.deliveries if d.status != "deferred")
                self.store.note_deliveries(name, done)
            s.rcpts_written = True
        if s.to is None:
            with contextlib.suppress(FileNotFoundError):  # an interrupted earlier try removed it
                self.spool.remove_sent(name)
            if s.attempt is None:
                self.store.forget_message(name)
                self._records.keep(claim, s, now)
            else:
                claim.log.info("sent", recipients=claim.recipients)
        elif s.back:
            self._from_active(name, s.to)
            if s.to == NEW:
                self._index.new.push_front(name)
            else:
                info = claim.info
                self._index.deferred.set(name, info.next_try if info and info.next_try else 0.0)
        elif s.to == FAILED:
            # Applied again after a storage problem, the file may be in failed/ already.
            if self.spool.exists(ACTIVE, name) or not self.spool.exists(FAILED, name):
                self.spool.fail(name, ACTIVE, s.error)
            self.store.forget_message(name)
            self._records.keep(claim, s, now)
        elif s.to == DEFERRED:
            # Under the lock a flush takes: one between the move and the index
            # would leave this message at its old retry time, not due now.
            with self._lock:
                self._from_active(name, DEFERRED)
                self.store.note_temporary_failure(name, now, s.error, s.retry_at)
                self._index.deferred.set(name, s.retry_at)
        else:
            self._from_active(name, s.to)

    def _from_active(self, name: str, dst: str) -> None:
        """active/ -> dst/, or nothing if an earlier, interrupted try moved it."""
        if not self.spool.exists(ACTIVE, name) and self.spool.exists(dst, name):
            return
        self.spool.move(name, ACTIVE, dst)

    # -- the overlap ---------------------------------------------------------------------

    def tidy(self) -> None:
        """Remove the file of the send the last reservation recorded: called
        while the server reads the next message."""
        prev, self._unremoved = self._unremoved, None
        if prev is not None:
            self._finish_quietly(prev, Settlement(None, "sent", attempt_written=True))

    def settle(self) -> None:
        """Record the waiting accepted send on its own (nothing shares its
        commit): called before the sender waits, and when it stops."""
        self.tidy()
        prev, self._unrecorded = self._unrecorded, None
        if prev is not None:
            self._finish_quietly(prev, prev.record())

    def _finish_quietly(self, claim: Claim, s: Settlement) -> None:
        # The attempt stays "inflight" (counted) and the file in active/ until
        # this is written: never lost; only a restart before then re-sends it
        # (once: the one unknown outcome a crash may cost).
        try:
            self._apply(claim, s)
        except (OSError, sqlite3.Error) as exc:
            if not is_storage_problem(exc):
                raise

    # -- storage trouble -------------------------------------------------------------------

    def recover_storage(self) -> bool:
        """Apply what a storage failure left undone once the spool and the
        store take writes again; True once all is well (`storage` says what
        is wrong meanwhile)."""
        return self.storage.recover(self._write)

    # -- levels ---------------------------------------------------------------------------

    def snapshot(
        self,
        now: float,
        *,
        daily_limit: int,
        last_send: float | None,
        paused: bool,
        weigh: Weigh | None,
    ) -> Snapshot:
        """The levels monitoring, STATUS= and `status` read, and the queue in send order."""
        return measure(
            self._index,
            self.spool,
            self.store,
            self.ledger,
            now,
            daily_limit=daily_limit,
            last_send=last_send,
            paused=paused,
            storage_ok=self.storage.error is None,
            weigh=weigh,
        )
