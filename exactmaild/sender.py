"""The sending side of the daemon: takes messages from the spool, paces them,
enforces the daily cap, sends them over SMTP and records the outcome.

It runs in a thread of its own so a slow SMTP server never stalls signal
handling, metrics or mailbox checks, and the main loop talks to it only
through `flush()`, `apply()`, `stop()` and `snapshot()`.

The order of a send is what makes both promises hold, "never over the
limit" and "never lost":

1. the message is claimed by a rename (new/ -> active/);
2. a send is reserved in the state store (counted against the limit, durably);
3. the SMTP transaction runs;
4. the outcome is recorded (sent / released / unknown) durably;
5. only then does the file leave active/.

A crash between any two steps leaves the message in active/ and the send
counted; start-up recovery puts the message back in the queue (or removes it
if step 4 said sent), so a crash costs at most one duplicate, never a loss,
and never a send beyond the cap.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import selectors
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from inotify_simple import INotify, flags

from exactmaild import message as msgmod
from exactmaild.config import Config
from exactmaild.credentials import credentials_for
from exactmaild.errors import (
    AccountFailure,
    BadMessage,
    PermanentFailure,
    TemporaryFailure,
    UnknownOutcome,
)
from exactmaild.limits import Ledger
from exactmaild.metrics import Metrics, Snapshot
from exactmaild.pacing import format_seconds
from exactmaild.smtp import SmtpSender
from exactmaild.spool import Spool
from exactmaild.state import StateStore
from exactmaild.windows import next_send_time

# A message that was in flight when the daemon died this many times is failed
# instead of being tried again: it may be what kills the daemon.
MAX_CRASH_CLAIMS = 3
# Keep the SMTP connection open while the next send is at most this far away.
IDLE_CLOSE_AFTER = 10.0
# Back-off for account-level problems (login refused, quota): doubles up to the cap.
PAUSE_FIRST, PAUSE_MAX = 60.0, 1800.0
# How long to wait before retrying after the spool or the state store could not be written.
STORAGE_RETRY = 15.0


class Clock(Protocol):
    def time(self) -> float: ...


class SystemClock:
    def time(self) -> float:
        return time.time()


class Transport(Protocol):
    """What the sender needs from an SMTP connection (smtp.SmtpSender)."""

    @property
    def connected(self) -> bool: ...
    def send(self, sender: str, recipients: tuple[str, ...], data: bytes) -> Any: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


@dataclass
class _Job:
    name: str
    src: str  # "new" or "deferred"
    prepared: msgmod.Prepared
    units: int


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
        metrics: Metrics,
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
        self._transport_factory = transport_factory or _smtp_transport
        self._lock = threading.RLock()
        self._cfg = cfg
        self.tz = ZoneInfo(cfg.timezone)
        self.ledger = Ledger(cfg.send.limit_window, self.tz, cfg.send.allowance)
        self.transport: Transport = self._transport_factory(cfg)
        self.signature = _read_signature(cfg)
        self.last_send: float | None = None  # last attempt: what pacing counts from
        self.last_success: float | None = None
        self.deferred: dict[str, float] = {}  # name -> next try
        self.paused_until: float | None = None
        self.pause_reason = ""
        self._pause_streak = 0
        self.storage_error: str | None = None
        self.last_error: str | None = None
        self._flush = False
        self._stopping = False
        self._stranded: list[tuple[str, str]] = []  # (name, state to return it to)
        self._ignored: set[str] = set()
        self._cached: _Job | None = None
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sel.register(self._wake_r, selectors.EVENT_READ)
        self._inotify = INotify()
        self._inotify.add_watch(str(spool.dir("new")), flags.MOVED_TO | flags.CLOSE_WRITE)
        self._sel.register(self._inotify.fileno(), selectors.EVENT_READ)
        self.thread: threading.Thread | None = None

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
            elif info is not None and info.claims >= MAX_CRASH_CLAIMS:
                reason = (
                    f"the daemon stopped unexpectedly {info.claims} times while sending this "
                    "message; it was taken out of the queue so it cannot stop the daemon again. "
                    "Look at the message, then `exactmaild queue retry` it if it is sound."
                )
                self.spool.fail(name, "active", reason)
                self.state.forget_message(name)
                self.log.error("message_failed", queue_id=name, reason=reason)
            else:
                self.spool.move(name, "active", "new")
                self.log.warning("recovered_claimed", queue_id=name, requeued=True)
        for name in self.spool.names("deferred"):
            info = self.state.message(name)
            self.deferred[name] = info.next_try if info and info.next_try else now
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
            for name in self.deferred:
                self.deferred[name] = 0.0
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
                self._wait(timeout)
        finally:
            self.transport.close()

    def _wait(self, timeout: float) -> None:
        for key, _ in self._sel.select(max(0.0, min(timeout, 3600.0))):
            if key.fd == self._wake_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)

    def _drain_inotify(self) -> None:
        for event in self._inotify.read(timeout=0):
            if event.mask & flags.Q_OVERFLOW:
                self.spool.scan_new()
            elif event.name and self.spool.noticed(event.name):
                self.log.debug("noticed", queue_id=event.name)

    def step(self) -> float:
        """Do what is due now; return how long to sleep until something else is due."""
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
                nxt = min(self.deferred.values(), default=math.inf)
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
                nxt = min(self.deferred.values(), default=math.inf)
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
                self.spool.peek() == c.name
                if c.src == "new"
                else self.deferred.get(c.name, math.inf) <= now
            )
            if still and self.spool.is_regular(c.src, c.name):
                return c
            self._cached = None
        while True:
            due_deferred = [n for n, t in self.deferred.items() if t <= now]
            if due_deferred:
                name = min(due_deferred, key=lambda n: self.deferred[n])
                src = "deferred"
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
            return _Job(name, src, prepared, max(1, units))

    def _skip(self, name: str, src: str) -> None:
        """Drop a name from the index: it vanished, or it is not a regular file."""
        if src == "new":
            self.spool.forget(name)
        else:
            self.deferred.pop(name, None)
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
            self.deferred.pop(job.name, None)
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
            self.deferred.pop(name, None)
        if self.spool.claim(name, src) is None:
            return  # cancelled or moved while we waited
        try:
            claims = self.state.note_claim(name, now)
            attempt = self.state.reserve(name, p.message_id, job.units, now)
        except BaseException:
            self._stranded.append((name, src))
            raise
        reserved = (now, job.units)
        with self._lock:
            self.ledger.record(*reserved)
        self.last_send = now
        log = self.log.bind(queue_id=name, message_id=p.message_id)
        log.info("sending", recipients=len(p.recipients), claims=claims)
        try:
            result = self.transport.send(p.sender, p.recipients, p.data)
        except AccountFailure as exc:
            self._settle(attempt, "released", str(exc), reserved)
            self._return(name, src)
            self._pause(str(exc), now)
        except UnknownOutcome as exc:
            self._settle(attempt, "unknown", str(exc), reserved)
            self.metrics.send_failures.labels("transient").inc()
            if self._cfg.send.on_unknown_outcome == "hold":
                self.spool.move(name, "active", "hold")
                self.state.settle_claim(name)
                log.warning("held", reason=str(exc))
            else:
                self._defer(name, str(exc), now, log)
        except TemporaryFailure as exc:
            self._settle(attempt, "released", str(exc), reserved)
            self.metrics.send_failures.labels("transient").inc()
            self._defer(name, str(exc), now, log)
        except PermanentFailure as exc:
            self._settle(attempt, "released", str(exc), reserved)
            self.metrics.send_failures.labels("permanent").inc()
            self._fail_claimed(name, str(exc), p, log)
        else:
            self._sent(attempt, name, p, result, now, log)

    def _settle(self, attempt: int, status: str, detail: str, reserved: tuple[float, int]) -> None:
        self.state.finish(attempt, status, self.clock.time(), detail)
        if status == "released":
            # The server definitely did not take it: give the allowance back.
            with self._lock:
                self.ledger.forget(*reserved)
        self.last_error = detail

    def _sent(
        self, attempt: int, name: str, p: msgmod.Prepared, result: Any, now: float, log: Any
    ) -> None:
        refused = dict(getattr(result, "refused", {}) or {})
        deferred = dict(getattr(result, "deferred", {}) or {})
        accepted = tuple(getattr(result, "accepted", p.recipients))
        self.state.finish(attempt, "sent", self.clock.time(), getattr(result, "reply", ""))
        self.metrics.sent.inc()
        self.last_success = self.clock.time()
        self._pause_streak = 0
        self.paused_until = None
        if deferred:
            # Some recipients were told "try later": they get it on a retry, the
            # ones that already have it never get it twice.
            self.state.add_done_recipients(name, list(accepted))
            first = next(iter(deferred.items()))
            self._defer(
                name, f"recipient {first[0]} deferred: {first[1][0]} {first[1][1]}", now, log
            )
            log.info("sent_partially", accepted=len(accepted), deferred=len(deferred))
            return
        if refused:
            reason = "sent to {} recipient(s); refused for good: {}".format(
                len(accepted), "; ".join(f"{r}: {c} {t}" for r, (c, t) in refused.items())
            )
            log.warning("recipients_refused", refused=sorted(refused), accepted=len(accepted))
            self.last_error = reason
        self.spool.remove_sent(name)
        self.state.forget_message(name)
        log.info("sent", recipients=len(accepted), sent_in_window=self.ledger.used(now))

    def _return(self, name: str, src: str) -> None:
        """Back where it came from, unblamed (account-level problem)."""
        self.spool.move(name, "active", src)
        self.state.settle_claim(name)
        if src == "new":
            self.spool.requeue_front(name)
        else:
            info = self.state.message(name)
            self.deferred[name] = info.next_try if info and info.next_try else 0.0

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
            self._fail_claimed(name, reason, None, log)
            return
        interval = cfg.retry_intervals[min(tries - 1, len(cfg.retry_intervals) - 1)]
        nxt = now + interval
        self.spool.move(name, "active", "deferred")
        self.state.note_temporary_failure(name, now, error, nxt)
        self.deferred[name] = nxt
        log.warning("deferred", error=error, tries=tries, retry_in=interval)

    def _fail_claimed(self, name: str, reason: str, p: msgmod.Prepared | None, log: Any) -> None:
        self.spool.fail(name, "active", reason)
        self.state.forget_message(name)
        log.error("message_failed", reason=reason)

    def _pause(self, reason: str, now: float) -> None:
        self._pause_streak += 1
        wait = min(PAUSE_MAX, PAUSE_FIRST * 2 ** (self._pause_streak - 1))
        self.paused_until = now + wait
        self.metrics.send_failures.labels("account").inc()
        if self._pause_streak == 1 or reason != self.pause_reason:
            self.log.error("sending_paused", reason=reason, retry_in=wait)
        self.pause_reason = reason
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

    def _recover_storage(self, now: float) -> bool:
        """Retry what a storage failure left undone; True once all is well again."""
        try:
            while self._stranded:
                name, src = self._stranded[0]
                if os.path.lexists(self.spool.dir("active") / name):
                    self.spool.move(name, "active", src)
                if src == "new":
                    self.spool.requeue_front(name)
                else:
                    self.deferred[name] = now
                self._stranded.pop(0)
            self.state.put(storage_error=None)
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
            ext = self.ledger.external_used(now) if hasattr(self.ledger, "external_used") else 0
            queued = len(self.spool.queue)
            oldest = 0.0
            head = self.spool.peek()
            if head is not None:
                with contextlib.suppress(OSError):
                    oldest = now - os.lstat(self.spool.dir("new") / head).st_mtime
            if self.deferred:
                with contextlib.suppress(OSError, sqlite3.Error):
                    for name in list(self.deferred)[:100]:
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


def _smtp_transport(cfg: Config) -> Transport:
    return SmtpSender(cfg.outgoing, credentials_for(cfg.account), timeout=60.0)
