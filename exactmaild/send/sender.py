"""The sending side of the daemon: takes messages from the spool, paces them,
enforces the daily cap, sends them over SMTP and records the outcome.

It runs in a thread of its own so a slow SMTP server never stalls signal
handling, metrics or mailbox checks, and the main loop talks to it only
through `flush()`, `apply()`, `stop()` and `snapshot()`.

The order of a send is what makes both promises hold, "never over the
limit" and "never lost":

1. the message is claimed by a rename (new/ -> active/);
2. MAIL, RCPT and DATA go out (nothing the server can take yet);
3. the send is reserved in the state store (counted against the limit,
   durably), in the same synced commit that records the previous send;
4. the body and its final dot go out, and the server's verdict comes back;
5. the outcome is recorded durably (a plain success: in the next send's
   commit, step 3, or on its own before the sender waits for anything);
6. only then does the file leave active/.

So the reservation is durable before the server can accept the message,
and each send is recorded before the next one's final dot: at most one send
is ever accepted but unrecorded. The commit's fsync overlaps the server's
replies to step 2, and the previous file's removal and the next message's
preparation overlap the server's reading of the body.

A crash at any point leaves the message in active/ and, from step 3 on, its
send counted; start-up recovery puts the message back in the queue (or
removes it if its send was recorded), so a crash costs at most one
duplicate, never a loss, and never a send beyond the cap.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import math
import os
import re
import selectors
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from inotify_simple import INotify, flags

from exactmaild.auth.credentials import check_at_start, credentials_for
from exactmaild.config.model import Config
from exactmaild.core.errors import (
    AccountFailure,
    BadMessage,
    PermanentFailure,
    TemporaryFailure,
    UnknownOutcome,
)
from exactmaild.core.limits import Ledger
from exactmaild.core.pacing import format_seconds
from exactmaild.core.schedule import next_send_time
from exactmaild.outbox.levels import Snapshot
from exactmaild.outbox.spool import Spool
from exactmaild.send import dsn as notices
from exactmaild.send import message as msgmod
from exactmaild.send.smtp import SmtpSender
from exactmaild.store import maildir
from exactmaild.store.state import StateStore

# A message that was in flight when the daemon died this many times is failed
# instead of being tried again: it may be what kills the daemon.
MAX_CRASH_CLAIMS = 3
# Keep the SMTP connection open while the next send is at most this far away.
IDLE_CLOSE_AFTER = 10.0
# Back-off for account-level problems (login refused, quota): `send.account_pause`,
# one step per consecutive refusal, the last repeating.
# How long to wait before retrying after the spool or the state store could not be written.
STORAGE_RETRY = 5.0


class _Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class _Labelled(Protocol):
    def labels(self, *values: str) -> _Counter: ...


class SendMetrics(Protocol):
    """The counters the sender moves (daemon.metrics.Metrics has them)."""

    @property
    def sent(self) -> _Counter: ...
    @property
    def send_failures(self) -> _Labelled: ...


class Clock(Protocol):
    def time(self) -> float: ...


class SystemClock:
    def time(self) -> float:
        return time.time()


class Transaction(Protocol):
    """A transaction sent up to its final dot (smtp.Transaction)."""

    def end(self) -> None: ...
    def reply(self) -> Any: ...
    def abandon(self) -> None: ...


class Transport(Protocol):
    """What the sender needs from an SMTP connection (smtp.SmtpSender)."""

    @property
    def connected(self) -> bool: ...
    def begin(self, sender: str, recipients: tuple[str, ...], data: bytes) -> Transaction: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


@dataclass
class _Pending:
    """A send the server accepted whose record waits for the next reservation
    (one commit for both); written on its own before the sender waits."""

    attempt: int
    name: str
    when: float
    reply: str
    recipients: int
    log: Any
    had_state: bool  # the message has a row of retry state to forget

    def row(self) -> tuple[int, str, float, str, bool]:
        """What StateStore.settle_and_reserve() records."""
        return (self.attempt, self.name, self.when, self.reply, self.had_state)


class RetryIndex:
    """Deferred messages by their next try: the earliest is found in O(log n).

    A heap with lazy deletion beside a dict of the current times; a scan of
    every deferred message per send would make a backlog of retries (a server
    down for a day) quadratic.
    """

    def __init__(self) -> None:
        self._at: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._at)

    def __contains__(self, name: object) -> bool:
        return name in self._at

    def names(self) -> list[str]:
        return list(self._at)

    def get(self, name: str) -> float:
        return self._at.get(name, math.inf)

    def set(self, name: str, when: float) -> None:
        self._at[name] = when
        heapq.heappush(self._heap, (when, name))

    def discard(self, name: str) -> None:
        self._at.pop(name, None)

    def _top(self) -> tuple[float, str] | None:
        while self._heap:
            when, name = self._heap[0]
            if self._at.get(name) == when:
                return when, name
            heapq.heappop(self._heap)  # superseded or discarded
        return None

    def next_time(self) -> float:
        top = self._top()
        return top[0] if top else math.inf

    def first_due(self, now: float) -> str | None:
        top = self._top()
        return top[1] if top and top[0] <= now else None


@dataclass
class _Job:
    name: str
    src: str  # "new" or "deferred"
    prepared: msgmod.Prepared
    units: int
    had_state: bool = True  # the state store has retry state for it


def _storage_problem(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.OperationalError):
        return True
    return isinstance(exc, OSError) and exc.errno in (
        errno.ENOSPC,
        errno.EROFS,
        errno.EDQUOT,
        errno.EACCES,
        errno.EPERM,
        errno.EIO,
    )


class Sender:
    def __init__(
        self,
        cfg: Config,
        state: StateStore,
        spool: Spool,
        metrics: SendMetrics,
        log: Any,
        *,
        clock: Clock | None = None,
        transport_factory: Callable[[Config], Transport] | None = None,
    ) -> None:
        self.state = state
        self.spool = spool
        self.metrics = metrics
        self.log = log
        self.clock: Clock = clock or SystemClock()
        if transport_factory is None:
            # A secret file that other users can read, or that is missing, is
            # refused now, at start (exit 78), not at the first send.
            check_at_start(cfg.account)
        self._transport_factory = transport_factory or _smtp_transport
        self._lock = threading.RLock()
        self._cfg = cfg
        self.tz = ZoneInfo(cfg.timezone)
        self.ledger = Ledger(cfg.send.limit_window, self.tz, cfg.send.allowance)
        self.transport: Transport = self._transport_factory(cfg)
        self.signature = _read_signature(cfg)
        self.last_send: float | None = None  # last attempt: what pacing counts from
        self.last_success: float | None = None
        self.deferred = RetryIndex()
        self.paused_until: float | None = None
        self.pause_reason = ""
        self._pause_streak = 0
        self.storage_error: str | None = None
        self.last_error: str | None = None
        self._flush = False
        self._stopping = False
        # Outcomes decided but not yet written because the spool or the state
        # store refused a write: (queue id, the action that finishes the job).
        self._stranded: list[tuple[str, Callable[[], None]]] = []
        self._ignored: set[str] = set()
        self._cached: _Job | None = None
        self._pending: _Pending | None = None
        self._keep_pending = False
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sel.register(self._wake_r, selectors.EVENT_READ)
        self._inotify = INotify()
        self._inotify.add_watch(str(spool.dir("new")), flags.MOVED_TO | flags.CLOSE_WRITE)
        self._sel.register(self._inotify.fileno(), selectors.EVENT_READ)
        self.thread: threading.Thread | None = None
        self.on_crash: Callable[[], None] | None = None  # the main loop's wake-up
        self.crashed = False

    @property
    def cfg(self) -> Config:
        return self._cfg

    # -- start-up ------------------------------------------------------------------

    def recover(self) -> None:
        """Crash recovery: settle what a previous run left behind, rebuild the index."""
        now = self.clock.time()
        n = self.state.recover_inflight(now)
        if n:
            self.log.warning("recovered_unknown_sends", count=n, counted=True)
        for ts, units in self.state.counted_sends(now - 2 * 86400):
            self.ledger.record(ts, units)
        self.last_send = self.last_success = self.state.last_sent()
        for name in self.spool.names("active"):
            last = self.state.last_attempt(name)
            info = self.state.message(name)
            if last is not None and last.status == "sent":
                self.spool.remove_sent(name)
                self.state.forget_message(name)
                self.log.info("recovered_sent", queue_id=name, message_id=last.message_id)
            elif (crashes := self.state.crashes(name)) >= MAX_CRASH_CLAIMS:
                reason = (
                    f"the daemon stopped unexpectedly {crashes} times while sending this "
                    "message; it was taken out of the queue so it cannot stop the daemon again. "
                    "Look at the message, then `exactmaild queue retry` it if it is sound."
                )
                self._fail_claimed(name, reason, None, self.log.bind(queue_id=name), notice=False)
            else:
                self.spool.move(name, "active", "new")
                self.log.warning("recovered_claimed", queue_id=name, requeued=True)
        for name in self.spool.names("deferred"):
            info = self.state.message(name)
            self.deferred.set(name, info.next_try if info and info.next_try else now)
        self.spool.scan_new()
        # Names recovered into new/ above sort by mtime like everything else.
        self.log.info(
            "spool_scanned",
            queued=len(self.spool.queue),
            deferred=len(self.deferred),
            sent_in_window=self.ledger.used(now),
        )

    # -- control from the main thread --------------------------------------------------

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="sender", daemon=True)
        self.thread.start()

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def flush(self) -> None:
        """Send what is queued now: no delay, no window; the cap still holds."""
        with self._lock:
            self._flush = True
            self.paused_until = None
            self._cached = None
            for name in self.deferred.names():
                self.deferred.set(name, 0.0)
        self.wake()

    def apply(self, cfg: Config) -> None:
        """Swap in a new configuration (already validated whole by the caller)."""
        with self._lock:
            old = self._cfg
            self._cfg = cfg
            self.signature = _read_signature(cfg)
            if (cfg.timezone, cfg.send.limit_window) != (old.timezone, old.send.limit_window):
                self.tz = ZoneInfo(cfg.timezone)
                ledger = Ledger(cfg.send.limit_window, self.tz, cfg.send.allowance)
                for ts, units in self.state.counted_sends(self.clock.time() - 2 * 86400):
                    ledger.record(ts, units)
                self.ledger = ledger
            else:
                self.ledger.set_allowance(cfg.send.allowance)
            if (cfg.outgoing, cfg.account) != (old.outgoing, old.account):
                # A new server or account: the old connection must not carry on.
                self.transport.close()
                self.transport = self._transport_factory(cfg)
            self._cached = None
        self.wake()

    def stop(self, timeout: float = 5.0) -> None:
        """Finish or abandon the in-flight send; abandoned sends are retried, never lost."""
        self._stopping = True
        self.wake()
        if self.thread is None:
            return
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.transport.abort()
            self.thread.join(timeout)

    def set_external(self, window_start: float, units: int) -> None:
        with self._lock:
            self.ledger.set_external(window_start, units)
        self.wake()

    # -- the loop ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping:
                timeout = self.step()
                if self._stopping:
                    break
                # In storage trouble only a wake-up (stop, flush, reload) cuts the
                # pause short: a file moving in the spool, which the sender's own
                # retries do, must not turn the back-off into a busy loop.
                self._wait(timeout, spool_events=self.storage_error is None)
        except Exception:
            # A bug: say it loudly; the main loop sees the thread gone and exits
            # non-zero for a restart.
            self.log.exception("sender_crashed")
            self.crashed = True  # set before the wake-up: the thread is still alive then
            if self.on_crash is not None:
                self.on_crash()
            raise
        finally:
            self._settle_pending()
            self.transport.close()

    def _wait(self, timeout: float, *, spool_events: bool = True) -> None:
        if timeout <= 0:
            return  # something is due now; new files are read at the next step
        deadline = time.monotonic() + min(timeout, 3600.0)
        while True:
            left = deadline - time.monotonic()
            ready = self._sel.select(max(0.0, left))
            for key, _ in ready:
                if key.fd == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    return
            if not ready or spool_events or left <= 0:
                return
            # Only spool events, and they may not end this wait: take them in
            # (the step reads their names later) and wait on for the rest.
            self._drain_inotify()

    def _drain_inotify(self) -> None:
        for event in self._inotify.read(timeout=0):
            if event.mask & flags.Q_OVERFLOW:
                self.spool.scan_new()
            elif event.name and self.spool.noticed(event.name):
                self.log.debug("noticed", queue_id=event.name)

    def step(self) -> float:
        """Do what is due now; return how long to sleep until something else is due."""
        self._keep_pending = False
        try:
            return self._step()
        finally:
            # Only a step that just sent (and returns 0: no wait) leaves its
            # record for the next reservation; every other step writes it now.
            if not self._keep_pending:
                self._settle_pending()

    def _step(self) -> float:
        self._drain_inotify()
        now = self.clock.time()
        if (self._stranded or self.storage_error) and not self._recover_storage(now):
            return STORAGE_RETRY
        with self._lock:
            if self.paused_until is not None and now < self.paused_until:
                self._close_if_idle(self.paused_until - now)
                return self.paused_until - now
            try:
                job = self._next_job(now)
            except OSError as exc:
                if not _storage_problem(exc):
                    raise
                self._storage_failed(exc, now)
                return STORAGE_RETRY
            if job is None:
                self._flush = False
                nxt = self.deferred.next_time()
                self._close_if_idle(nxt - now)
                return nxt - now
            cfg = self._cfg
            due = next_send_time(
                now,
                last_send=self.last_send,
                delay=cfg.send.delay,
                immediately=cfg.send.immediately,
                flush=self._flush,
                ledger=self.ledger,
                units=job.units,
                tz=self.tz,
                days=cfg.schedule.days,
                window=cfg.schedule.window,
            )
            if math.isinf(due):
                self._cached = None
                self._fail_unclaimed(
                    job,
                    f"the message counts {job.units} against the limit but the whole "
                    f"allowance is {self.ledger.allowance} (send.daily_limit - send.reserve); "
                    "split the recipients over several messages",
                )
                return 0.0
            if due > now:
                self._cached = job
                # The next send is a while off: don't hold the connection open for it.
                self._close_if_idle(due - now)
                nxt = self.deferred.next_time()
                return min(due, nxt) - now
            self._cached = None
        # The send itself runs without the lock: a scrape or a reload must not
        # wait for a slow SMTP server.
        try:
            self._send(job, now)
        except (OSError, sqlite3.Error) as exc:
            if not _storage_problem(exc):
                raise
            self._storage_failed(exc, now)
            return STORAGE_RETRY
        return 0.0

    def _close_if_idle(self, idle_for: float) -> None:
        if idle_for > IDLE_CLOSE_AFTER and self.transport.connected:
            self.transport.close()
            self.log.debug("smtp_closed_idle")

    def _next_job(self, now: float) -> _Job | None:
        """The message to send next, prepared (so its units are known), or None."""
        if self._cached is not None:
            c = self._cached
            still = (
                self.spool.peek() == c.name if c.src == "new" else self.deferred.get(c.name) <= now
            )
            if still and self.spool.is_regular(c.src, c.name):
                return c
            self._cached = None
        while True:
            due = self.deferred.first_due(now)
            if due is not None:
                name, src = due, "deferred"
            else:
                name_or_none = self.spool.peek()
                if name_or_none is None:
                    return None
                name, src = name_or_none, "new"
            if not self.spool.is_regular(src, name):
                self._skip(name, src)
                continue
            try:
                raw = self.spool.read(src, name, self._cfg.spool.max_message_size)
            except FileNotFoundError:
                self._skip(name, src)
                continue
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.EISDIR):  # swapped for a symlink/dir
                    self._skip(name, src)
                    continue
                raise
            info = self.state.message(name)
            try:
                prepared = msgmod.prepare(
                    raw,
                    sender=self._cfg.account.address,
                    display_name=self._cfg.account.display_name,
                    signature=self.signature,
                    max_size=self._cfg.spool.max_message_size,
                    skip_recipients=info.done_rcpts if info else (),
                )
            except BadMessage as exc:
                self._fail_unclaimed(_Job(name, src, _EMPTY, 0), str(exc))
                continue
            units = 1 if self._cfg.send.limit_counts == "messages" else len(prepared.recipients)
            return _Job(name, src, prepared, max(1, units), info is not None)

    def _prefetch(self, now: float) -> None:
        """Read and prepare the next message now, while a commit syncs, so the
        next step finds it ready (`_cached`, checked again there)."""
        with self._lock:
            if self._cached is not None or self._stopping:
                return
            try:
                self._cached = self._next_job(now)
            except (OSError, sqlite3.Error) as exc:
                if not _storage_problem(exc):
                    raise
                # The next step meets it again and handles it there.

    def _skip(self, name: str, src: str) -> None:
        """Drop a name from the index: it vanished, or it is not a regular file."""
        if src == "new":
            self.spool.forget(name)
        else:
            self.deferred.discard(name)
        if os.path.lexists(self.spool.dir(src) / name) and name not in self._ignored:
            self._ignored.add(name)
            self.log.warning(
                "ignored_non_file",
                queue_id=name,
                state=src,
                reason="not a regular file (symlink, directory or device); never followed",
            )

    def _fail_unclaimed(self, job: _Job, reason: str) -> None:
        if job.src == "new":
            self.spool.forget(job.name)
        else:
            self.deferred.discard(job.name)
        try:
            self.spool.fail(job.name, job.src, reason)
        except FileNotFoundError:
            return
        self.state.forget_message(job.name)
        self.metrics.send_failures.labels("permanent").inc()
        self.log.error("message_failed", queue_id=job.name, reason=reason)

    # -- one send ---------------------------------------------------------------------

    def _send(self, job: _Job, now: float) -> None:
        name, src, p = job.name, job.src, job.prepared
        if src == "new":
            self.spool.forget(name)
        else:
            self.deferred.discard(name)
        if self.spool.claim(name, src) is None:
            return  # cancelled or moved while we waited
        if not p.recipients:
            # Every recipient already has it (a partial send, then a crash): done.
            self._settle_pending()
            self._finish_job(name, lambda: self._drop_done(name))
            return
        prev, self._pending = self._pending, None
        tx: Transaction | None = None
        early: Exception | None = None
        try:
            # MAIL, RCPT and DATA go out first (pipelined): the server answers
            # them while the commit below syncs.
            tx = self.transport.begin(p.sender, p.recipients, p.data)
        except (AccountFailure, TemporaryFailure, PermanentFailure) as exc:
            early = exc
        try:
            attempt = self.state.settle_and_reserve(
                prev.row() if prev is not None else None, name, p.message_id, job.units, now
            )
        except BaseException:
            if tx is not None:
                tx.abandon()  # nothing the server could take went out
            if prev is not None:
                self._stranded.append((prev.name, lambda: self._record_sent(prev)))
            self._stranded.append((name, lambda: self._return(name, src)))
            raise
        reserved = (now, job.units)
        with self._lock:
            self.ledger.record(*reserved)
        log = self.log.bind(queue_id=name, message_id=p.message_id)
        log.debug("sending", recipients=len(p.recipients))
        recorded = False
        try:
            try:
                if early is not None:
                    raise early
                assert tx is not None
                # The reservation (and the previous send's record) is durable:
                # the body and its final dot may go.
                tx.end()
            finally:
                # Pace from the final dot (or the failure): the next message's
                # dot comes after its whole begin(), so the gap the server sees
                # is never shorter than the delay, however long a commit takes.
                self.last_send = self.clock.time()
            if prev is not None:
                recorded = True
                self._recorded(prev)  # while the server reads the message
            self._prefetch(now)
            result = tx.reply()
        except AccountFailure as exc:
            self._pause(str(exc), now)
            self._settle(attempt, "released", str(exc), reserved)
            self._finish_job(name, lambda: self._return(name, src))
        except UnknownOutcome as exc:
            err = str(exc)
            self.metrics.send_failures.labels("transient").inc()
            self._settle(attempt, "unknown", err, reserved)
            if self._cfg.send.on_unknown_outcome == "hold":
                self._finish_job(name, lambda: self._hold(name, err, log))
            else:
                self._finish_job(name, lambda: self._defer(name, err, now, log))
        except TemporaryFailure as exc:
            err = str(exc)
            self.metrics.send_failures.labels("transient").inc()
            self._settle(attempt, "released", err, reserved)
            self._finish_job(name, lambda: self._defer(name, err, now, log))
        except PermanentFailure as exc:
            err = str(exc)
            self.metrics.send_failures.labels("permanent").inc()
            self._settle(attempt, "released", err, reserved)
            failures = _failures_for(p.recipients, exc)
            self._finish_job(name, lambda: self._fail_claimed(name, err, failures, log))
        else:
            self._sent(attempt, name, p, result, now, log, job.had_state)
        finally:
            if prev is not None and not recorded:
                self._recorded(prev)

    def _finish_job(self, name: str, action: Callable[[], None]) -> None:
        """Run what moves a claimed message on; if the spool or the state store
        refuses the write, keep the action to finish it once storage is back
        (the message waits in active/ meanwhile: never lost, never re-sent)."""
        try:
            action()
        except (OSError, sqlite3.Error) as exc:
            if not _storage_problem(exc):
                raise
            self._stranded.append((name, action))
            raise

    def _from_active(self, name: str, dst: str) -> None:
        """active/ -> dst/, or nothing if an earlier, interrupted try already moved it."""
        if not os.path.lexists(self.spool.dir("active") / name) and os.path.lexists(
            self.spool.dir(dst) / name
        ):
            return
        self.spool.move(name, "active", dst)

    def _hold(self, name: str, error: str, log: Any) -> None:
        self._from_active(name, "hold")
        log.warning("held", reason=error)

    def _drop_done(self, name: str) -> None:
        self.spool.remove_sent(name)
        self.state.forget_message(name)
        self.log.info("sent_already", queue_id=name)

    def _settle(self, attempt: int, status: str, detail: str, reserved: tuple[float, int]) -> None:
        self.last_error = detail
        when = self.clock.time()
        # If the state store refuses this write, the attempt stays "inflight"
        # (counted) until it is written: the next start-up settles it as unknown.
        self._finish_job_state(lambda: self.state.finish(attempt, status, when, detail))
        if status == "released":
            # The server definitely did not take it: give the allowance back.
            with self._lock:
                self.ledger.forget(*reserved)

    def _finish_job_state(self, action: Callable[[], None]) -> None:
        try:
            action()
        except (OSError, sqlite3.Error) as exc:
            if not _storage_problem(exc):
                raise
            self._stranded.append(("", action))
            self._storage_failed(exc, self.clock.time())

    def _sent(
        self,
        attempt: int,
        name: str,
        p: msgmod.Prepared,
        result: Any,
        now: float,
        log: Any,
        had_state: bool,
    ) -> None:
        refused = dict(getattr(result, "refused", {}) or {})
        deferred = dict(getattr(result, "deferred", {}) or {})
        accepted = tuple(getattr(result, "accepted", p.recipients))
        self.metrics.sent.inc()
        self.last_success = self.clock.time()
        if self._pause_streak:
            self.log.info("sending_resumed", paused_for=self._pause_streak)
        self._pause_streak = 0
        self.paused_until = None
        reply = str(getattr(result, "reply", ""))
        when = self.clock.time()
        if not refused and not deferred:
            # The common case: the record (and the end of the message's retry
            # state) goes into the next reservation's commit, or on its own
            # before the sender waits (step()); then the file may go.
            self._pending = _Pending(attempt, name, when, reply, len(accepted), log, had_state)
            self._keep_pending = True
            return
        self._finish_job_state(lambda: self.state.finish(attempt, "sent", when, reply))
        if refused:
            reason = "sent to {} recipient(s); refused for good: {}".format(
                len(accepted), "; ".join(f"{r}: {c} {t}" for r, (c, t) in refused.items())
            )
            log.warning(
                "recipients_refused", refused=sorted(refused), accepted=len(accepted), reason=reason
            )
            self.last_error = reason
            self.metrics.send_failures.labels("permanent").inc()
            raw = p.data
            failures = [notices.Failure(r, c, t) for r, (c, t) in refused.items()]
            self._notice(name, raw, failures, accepted, log)
        if deferred:
            # Some recipients were told "try later": they get it on a retry; the
            # ones that already have it (or refused it for good) never get it again.
            done = list(accepted) + list(refused)
            first = next(iter(deferred.items()))
            error = f"recipient {first[0]} deferred: {first[1][0]} {first[1][1]}"

            def partial() -> None:
                self.state.add_done_recipients(name, done)
                self._defer(name, error, now, log)

            self.metrics.send_failures.labels("transient").inc()
            self._finish_job(name, partial)
            log.info("sent_partially", accepted=len(accepted), deferred=len(deferred))
            return

        def done_with() -> None:
            self.spool.remove_sent(name)
            self.state.forget_message(name)

        self._finish_job(name, done_with)
        log.info("sent", recipients=len(accepted))

    def _settle_pending(self) -> None:
        """Write the waiting send record on its own (nothing to share its commit)."""
        prev, self._pending = self._pending, None
        if prev is None:
            return
        try:
            self._record_sent(prev)
        except (OSError, sqlite3.Error) as exc:
            if not _storage_problem(exc):
                raise
            # The attempt stays "inflight" (counted) and the file in active/
            # until the record is written: never lost; only a restart before
            # then re-sends it (once: the one unknown outcome a crash may cost).
            self._stranded.append((prev.name, lambda: self._record_sent(prev)))
            self._storage_failed(exc, self.clock.time())

    def _record_sent(self, prev: _Pending) -> None:
        self.state.finish_sent(*prev.row())
        self._recorded(prev)

    def _recorded(self, prev: _Pending) -> None:
        """The send record is durable: the file may go."""
        try:
            self.spool.remove_sent(prev.name)
        except FileNotFoundError:
            pass  # an earlier, interrupted try removed it
        except OSError as exc:
            if not _storage_problem(exc):
                raise
            # Start-up recovery removes it too (its send is recorded).
            self._stranded.append((prev.name, lambda: self.spool.remove_sent(prev.name)))
            self._storage_failed(exc, self.clock.time())
        prev.log.info("sent", recipients=prev.recipients)

    def _return(self, name: str, src: str) -> None:
        """Back where it came from, unblamed (account-level problem)."""
        self._from_active(name, src)
        if src == "new":
            self.spool.requeue_front(name)
        else:
            info = self.state.message(name)
            self.deferred.set(name, info.next_try if info and info.next_try else 0.0)

    def _defer(self, name: str, error: str, now: float, log: Any) -> None:
        cfg = self._cfg.send
        info = self.state.message(name)
        tries = (info.tries if info else 0) + 1
        first = info.first_try if info and info.first_try else now
        if now - first >= cfg.give_up_after:
            reason = (
                f"gave up after {format_seconds(now - first)} and {tries} attempts "
                f"(send.give_up_after is {format_seconds(cfg.give_up_after)}); last error: {error}"
            )
            self._fail_claimed(name, reason, None, log, gave_up=error)
            return
        interval = cfg.retry_intervals[min(tries - 1, len(cfg.retry_intervals) - 1)]
        nxt = now + interval
        self._from_active(name, "deferred")
        self.state.note_temporary_failure(name, now, error, nxt)
        self.deferred.set(name, nxt)
        log.warning("deferred", error=error, tries=tries, retry_in=interval)

    def _fail_claimed(
        self,
        name: str,
        reason: str,
        failures: list[notices.Failure] | None,
        log: Any,
        *,
        gave_up: str | None = None,
        notice: bool = True,
    ) -> None:
        """To failed/ with its reason, and a failure notice for the practice."""
        if not os.path.lexists(self.spool.dir("active") / name) and os.path.lexists(
            self.spool.dir("failed") / name
        ):
            return  # finished earlier (a retry after a storage problem)
        info = self.state.message(name)
        self.spool.fail(name, "active", reason)
        self.state.forget_message(name)
        log.error("message_failed", reason=reason)
        if not notice:
            return
        try:
            raw = self.spool.read("failed", name, self._cfg.spool.max_message_size)
        except OSError as exc:
            log.warning("notice_skipped", reason=f"cannot read the failed message: {exc}")
            return
        done = info.done_rcpts if info else ()
        if failures is None:
            try:
                rcpts = [r for r in msgmod.recipients(msgmod.parse(raw)) if r not in done]
            except Exception:  # a message we could send has readable headers; be safe
                rcpts = []
            failures = [_failure_from_text(r, gave_up or reason) for r in rcpts]
        self._notice(name, raw, failures, done, log)

    def _notice(
        self,
        name: str,
        raw: bytes,
        failures: list[notices.Failure],
        delivered_to: tuple[str, ...],
        log: Any,
    ) -> None:
        """Deliver an RFC 3464 notice into receive.maildir: never sent, never counted."""
        cfg = self._cfg
        if not failures:
            return
        if notices.is_notice(raw):
            log.info("notice_skipped", reason="the failed message is itself a notice")
            return
        if cfg.receive is None:
            log.info(
                "notice_skipped",
                reason="no receive.maildir (incoming: none): the failure is in the log "
                "and the reason file only",
            )
            return
        try:
            data = notices.build(
                raw,
                failures,
                to=cfg.account.address,
                reporting_host=socket.getfqdn(),
                now=self.clock.time(),
                delivered_to=delivered_to,
            )
            path = maildir.deliver(cfg.receive.maildir, data)
        except (OSError, ValueError) as exc:
            log.error("notice_failed", error=str(exc))
            return
        log.info("notice_delivered", path=str(path), recipients=len(failures))
        del name

    def _pause(self, reason: str, now: float) -> None:
        self._pause_streak += 1
        steps = self._cfg.send.account_pause
        wait = steps[min(self._pause_streak - 1, len(steps) - 1)]
        self.metrics.send_failures.labels("account").inc()
        if self._pause_streak == 1 or reason != self.pause_reason:
            self.log.error("sending_paused", reason=reason, retry_in=wait)
        # The reason before the pause itself: the main loop publishes the two
        # together as soon as it sees the pause.
        self.pause_reason = reason
        self.paused_until = now + wait
        self.transport.close()
        with contextlib.suppress(OSError, sqlite3.Error):
            self.state.put(pause_reason=reason, pause_until=str(self.paused_until))

    # -- storage trouble --------------------------------------------------------------

    def _storage_failed(self, exc: BaseException, now: float) -> None:
        text = f"cannot write the spool or the state store: {exc}"
        if self.storage_error is None:
            self.log.error("storage_problem", error=text, retry_in=STORAGE_RETRY)
        self.storage_error = text
        self.last_error = text
        # For `status`: written at once when the state store still takes writes
        # (a full spool); when it is the state store that fails, the metric,
        # the log and STATUS= still say it.
        with contextlib.suppress(OSError, sqlite3.Error):
            self.state.put(storage_error=text)

    def _probe_storage(self) -> None:
        """Raise unless the spool and the state store take writes the size of a send's."""
        self.spool.probe_writable()
        self.state.probe_writable()
        self.state.put(storage_error=None)

    def _recover_storage(self, now: float) -> bool:
        """Retry what a storage failure left undone; True once all is well again."""
        try:
            self._probe_storage()
            while self._stranded:
                _name, action = self._stranded[0]
                # FileNotFoundError: the message moved on meanwhile (already finished).
                with contextlib.suppress(FileNotFoundError):
                    action()
                self._stranded.pop(0)
        except (OSError, sqlite3.Error) as exc:
            self._storage_failed(exc, now)
            return False
        if self.storage_error is not None:
            self.log.info("storage_recovered")
        self.storage_error = None
        return True

    # -- what monitoring and `status` see -------------------------------------------

    def snapshot(self) -> Snapshot:
        now = self.clock.time()
        with self._lock:
            cfg = self._cfg
            used = self.ledger.used(now)
            ext = self.ledger.external_used(now)
            queued = len(self.spool.queue)
            oldest = 0.0
            head = self.spool.peek()
            if head is not None:
                with contextlib.suppress(OSError):
                    oldest = now - os.lstat(self.spool.dir("new") / head).st_mtime
            if self.deferred:
                with contextlib.suppress(OSError, sqlite3.Error):
                    for name in self.deferred.names()[:100]:
                        info = self.state.message(name)
                        if info and info.first_try:
                            oldest = max(oldest, now - info.first_try)
            counts = {"queued": queued, "deferred": len(self.deferred)}
            for state, d in (("active", "active"), ("hold", "hold"), ("failed", "failed")):
                with contextlib.suppress(OSError):
                    counts[state] = self.spool.count(d)
            return Snapshot(
                sent_in_window=used - ext,
                sent_elsewhere_in_window=ext,
                daily_limit=cfg.send.daily_limit,
                remaining=self.ledger.remaining(now),
                window_reset_seconds=self.ledger.reset_at(now) - now,
                queue=counts,
                oldest_queued_age_seconds=max(0.0, oldest),
                last_send_timestamp=self.last_success,
                paused=self.paused_until is not None and now < self.paused_until,
                storage_ok=self.storage_error is None,
            )


_EMPTY = msgmod.Prepared("", (), "", b"")


def _read_signature(cfg: Config) -> str | None:
    if cfg.send.signature is None:
        return None
    return Path(cfg.send.signature).read_text("utf-8")


def _failure_from_text(recipient: str, text: str) -> notices.Failure:
    """A Failure from one of our error texts, picking the SMTP code out of it."""
    m = re.search(r"\b([245]\d\d)[ -](.*)", text)
    if m:
        return notices.Failure(recipient, int(m.group(1)), m.group(2))
    return notices.Failure(recipient, 0, text)


def _failures_for(recipients: tuple[str, ...], exc: PermanentFailure) -> list[notices.Failure]:
    """Every recipient of a message refused as a whole (or each, when all were refused)."""
    per = getattr(exc, "refused", None)
    if isinstance(per, dict) and per:
        return [notices.Failure(r, c, t) for r, (c, t) in per.items()]
    return [_failure_from_text(r, str(exc)) for r in recipients]


def _smtp_transport(cfg: Config) -> Transport:
    return SmtpSender(cfg.outgoing, credentials_for(cfg.account), timeout=60.0)
