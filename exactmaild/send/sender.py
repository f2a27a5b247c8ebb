"""The sending thread: it decides *when*, and nothing else.

Like Mailman's runner, one `step()` picks the next due message from the
Outbox, asks the pure core when it may go (pacing, opening hours, the daily
cap: `core.schedule.next_send_time`), drives the transport, and hands the
outcome to `send.outcomes`, which settles it as one step of the message's
`Claim`; an account problem instead pauses the whole queue and gives the
message back. Between steps it waits (`send.waiter`) on a timer, a file
arriving in the spool, or a wake-up from the main loop, and it closes the
SMTP connection when the next send is further off than outgoing.keepalive.

Inside one send (`send.inflight`), MAIL/RCPT/DATA go out, the reservation
commits while the server answers, then the body and its final dot: the
order the Outbox's promises rest on. While the next message may go at once
on a server that pipelines, its MAIL/RCPT/DATA share that final dot's write
(`_follow()`): one round trip a message. The main loop talks to this thread
only through `flush()`, `apply()`, `stop()`, `set_external()` and `snapshot()`.
"""

from __future__ import annotations

import copy
import math
import sqlite3
import threading
from collections.abc import Callable

from exactmaild.config.model import Config
from exactmaild.core.clock import Clock, SystemClock
from exactmaild.core.errors import AccountFailure, PermanentFailure, TemporaryFailure
from exactmaild.core.forecast import Pacing
from exactmaild.core.log import Log
from exactmaild.core.states import NEW
from exactmaild.outbox import Outbox, Queued, Snapshot, Spool, is_storage_problem
from exactmaild.send.blocking import Blocking, Forecaster, pacing_of
from exactmaild.send.inflight import InFlight, Verdict
from exactmaild.send.jobs import Job, Lookahead, read_signature, too_big
from exactmaild.send.outcomes import Outcomes, SendMetrics
from exactmaild.send.pausing import Pausing
from exactmaild.send.transport import SendResult, Transaction, Transport
from exactmaild.send.waiter import Waiter
from exactmaild.send.weights import Weights
from exactmaild.store.state import StateStore

# How long to wait before retrying after the spool or the state store could not be written.
STORAGE_RETRY = 5.0
# The daemon forecasts each message's time up to this many waiting (about
# 15 us and a few hundred bytes each); past it, `exactmaild status` does.
FORECAST_HORIZON = 5000


class Sender:
    def __init__(
        self,
        cfg: Config,
        state: StateStore,
        spool: Spool,
        metrics: SendMetrics,
        log: Log,
        *,
        transport_factory: Callable[[Config], Transport],
        clock: Clock | None = None,
    ) -> None:
        self.state = state
        self.spool = spool
        self.metrics = metrics
        self.log = log
        self.clock: Clock = clock or SystemClock()
        # A new configuration's server or account gets a new transport.
        self._transport_factory = transport_factory
        self._lock = threading.RLock()  # the main thread reads levels and swaps config
        self._cfg = cfg
        self.outbox = Outbox(
            spool,
            state,
            send=cfg.send,
            timezone=cfg.timezone,
            log=log,
            clock=self.clock,
            lock=self._lock,
            history_days=cfg.history_days,
        )
        self._outcomes = Outcomes(self.outbox, metrics, self.clock)
        self.transport: Transport = self._transport_factory(cfg)
        self.signature = read_signature(cfg)
        self.last_send: float | None = None  # last attempt: what pacing counts from
        self.last_success: float | None = None
        self._pausing = Pausing(state, log, metrics.send_failures)
        self.pause = self._pausing.pause
        self._flush = False
        self._blocking = Blocking(log)  # what holds sending back, logged when it changes
        self._weights = Weights(spool, state)
        self._forecaster = Forecaster()
        self._stopping = False
        self._jobs = Lookahead(self.outbox, self._reject)
        self._waiter = Waiter(spool.dir(NEW))
        self.thread: threading.Thread | None = None
        self.on_crash: Callable[[], None] | None = None  # the main loop's wake-up
        self.crashed = False

    @property
    def _pacing(self) -> Pacing:
        return pacing_of(self._cfg, self.outbox.ledger)

    @property
    def pause_reason(self) -> str:
        return self.pause.reason

    @property
    def storage_error(self) -> str | None:
        return self.outbox.storage.error

    def recover(self) -> None:
        """Start-up: the Outbox settles what a previous run left behind."""
        self.outbox.recover()
        self.last_send = self.last_success = self.state.last_sent()
        self._pausing.forget_stored()  # a new run starts unpaused

    # -- control from the main thread --------------------------------------------------

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="sender", daemon=True)
        self.thread.start()

    def wake(self) -> None:
        self._waiter.wake()

    def flush(self) -> None:
        """Send what the cap lets go now: no delay, no window; the rest stays paced."""
        with self._lock:
            self._flush = True
            self._pausing.lift()
            self._jobs.ready = None
            self.outbox.retry_all_now()
        self.wake()

    def apply(self, cfg: Config) -> None:
        """Swap in a new configuration (already validated whole by the caller)."""
        with self._lock:
            old, self._cfg = self._cfg, cfg
            self.signature = read_signature(cfg)
            self.outbox.set_limits(cfg.send, cfg.timezone)
            self.outbox.history_days = cfg.history_days
            if (cfg.outgoing, cfg.account) != (old.outgoing, old.account):
                # A new server or account: the old connection must not carry on.
                self.transport.close()
                self.transport = self._transport_factory(cfg)
                self._pausing.lift()  # fixed, perhaps: try it at once
            self._jobs.ready = None
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
            self.outbox.ledger.set_external(window_start, units)
        self.wake()

    def snapshot(self) -> Snapshot:
        """The levels, and the forecast worked out on a copy outside the lock
        (a long queue takes a while: the sending thread must not wait for it).
        Past FORECAST_HORIZON waiting messages the daemon leaves the times to
        `exactmaild status`: its memory and CPU stay those of the queue itself."""
        now = self.clock.time()
        whole = len(self.outbox) <= FORECAST_HORIZON
        with self._lock:
            levels = self.outbox.snapshot(
                now,
                daily_limit=self._cfg.send.daily_limit,
                last_send=self.last_success,
                paused=self.pause.active(now),
                weigh=(lambda n, src: self._weights.of(n, src, self._cfg)) if whole else None,
            )
            queue = levels.waiting
            self._weights.keep_only({w.name for w in queue})
            ledger = copy.deepcopy(self.outbox.ledger) if whole else self.outbox.ledger
            pacing, last = self._pacing, self.last_send
            until, q = self.pause.until if levels.paused else None, self._pausing.quota
            if not whole:  # what blocks sending, without the times
                return self._forecaster.blocked_only(levels, now, ledger, pacing, until, quota=q)
        return self._forecaster(levels, now, ledger, queue, pacing, last, until, quota=q)

    # -- the loop ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping:
                timeout = self.step()
                if self._stopping:
                    break
                if timeout > 0:
                    # About to wait: the last accepted send is recorded now,
                    # not left for a reservation that may be hours away.
                    self.outbox.settle()
                # In storage trouble only a wake-up (stop, flush, reload) cuts the
                # pause short: a file moving in the spool, which the sender's own
                # retries do, must not turn the back-off into a busy loop.
                self._wait(timeout, spool_events=self.outbox.storage.error is None)
        except Exception:
            # A bug: say it loudly; the main loop sees the thread gone and exits
            # non-zero for a restart.
            self.log.exception("sender_crashed")
            self.crashed = True  # set before the wake-up: the thread is still alive then
            if self.on_crash is not None:
                self.on_crash()
            raise
        finally:
            self.outbox.settle()
            self.transport.close()

    def _wait(self, timeout: float, *, spool_events: bool = True) -> None:  # (tests drive it)
        self._waiter.wait(timeout, spool_events=spool_events)

    def _drain_inotify(self) -> None:
        self.outbox.arrived(self._waiter.arrivals())

    def step(self) -> float:
        """Do what is due now; return how long to sleep until something else is due."""
        self._drain_inotify()
        now = self.clock.time()
        ob = self.outbox
        if ob.storage and not ob.recover_storage():
            return STORAGE_RETRY
        with self._lock:
            if self.pause.active(now):
                assert self.pause.until is not None
                self._close_if_idle(self.pause.until - now)
                return self.pause.until - now
            try:
                ob.maintain(now)
                job = self._next_job(now)
            except OSError as exc:
                if not is_storage_problem(exc):
                    raise
                ob.storage.failed(exc)
                return STORAGE_RETRY
            if job is None:
                self._flush = False
                self._blocking.clear()
                nxt = ob.next_retry_time()
                self._close_if_idle(nxt - now)
                return nxt - now
            due = self._due(job, now)
            if math.isinf(due):
                self._jobs.ready = None
                self._reject(job.queued, too_big(job, self._cfg.send))
                return 0.0
            # A flush covers what the cap lets go now; the first message that
            # must wait ends it, so it never fires later in a burst.
            self._flush = self._flush and self._pacing.flushing(now, due, self.last_send)
            if not self._flush:
                units = job.units if due > now else None
                self._blocking.note(now, units, self._pacing, ob.ledger, len(ob), job.lane)
            if due > now:
                self._jobs.ready = job
                # The next send is a while off: don't hold the connection open for it.
                self._close_if_idle(due - now)
                # Only a retry of a higher lane coming due takes the job's place
                # (`Outbox.still_next()`): waking for any other would only spin.
                retry = ob.next_retry_time(above=job.lane)
                return (due if retry <= now else min(due, retry)) - now
            self._jobs.ready = None
        # The send itself runs without the lock: a scrape or a reload must not
        # wait for a slow SMTP server.
        try:
            self._send(job, now)
        except (OSError, sqlite3.Error) as exc:
            if not is_storage_problem(exc):
                raise
            ob.storage.failed(exc)
            return STORAGE_RETRY
        return 0.0

    def _due(self, job: Job, now: float) -> float:
        """When `job` may go (core.schedule: pacing, hours, the cap)."""
        ob, last = self.outbox, self.last_send
        return self._pacing.due(
            now, last_send=last, flush=self._flush, ledger=ob.ledger, units=job.units, lane=job.lane
        )

    def _close_if_idle(self, idle_for: float) -> None:
        # Kept while the next send is due within outgoing.keepalive: a login
        # per paced message is what providers throttle ("454 4.7.0 Too many
        # login attempts"); the transport probes it before reuse.
        if idle_for > self._cfg.outgoing.keepalive and self.transport.connected:
            self.transport.close()
            self.log.debug("smtp_closed_idle")

    def _next_job(self, now: float) -> Job | None:
        return self._jobs.next(now, self._cfg, self.signature)

    def _prefetch(self, now: float) -> None:
        """Read and prepare the next message while the server reads this one."""
        with self._lock:
            if not self._stopping:
                self._jobs.prefetch(now, self._cfg, self.signature)

    def _reject(self, q: Queued, reason: str) -> None:
        self.outbox.reject(q, reason)
        self.metrics.send_failures.labels("permanent").inc()

    # -- one send ---------------------------------------------------------------------

    def _send(self, job: Job, now: float) -> None:
        """Send `job`; while the next message may go at once, carry on with it,
        its transaction begun in the same write as this final dot."""
        p = job.prepared
        log = self.log.bind(queue_id=job.queued.name, message_id=p.message_id)
        claim = self.outbox.claim(job.queued, log)
        if claim is None:
            return  # cancelled or moved while we waited
        if not p.recipients:
            self.outbox.settle()
            claim.done_already()
            return
        # MAIL, RCPT and DATA go out first (pipelined): the server answers
        # them while the reservation syncs.
        flight: InFlight | None = InFlight.begin(job, claim, log, now, self.transport.begin)
        while flight is not None:
            flight = self._fly(flight)

    def _fly(self, f: InFlight) -> InFlight | None:
        """Reserve, deliver and settle one message; returns the next one if its
        transaction was begun with this final dot."""
        f.reserve()
        verdict, nxt = f.deliver(self._dot_went, self._follow, lambda: self._prefetch(f.now))
        gone = isinstance(verdict, AccountFailure) or not self.transport.connected
        if nxt is not None and gone:
            nxt.give_back()  # the connection went with this message, or the queue pauses
            nxt = None
        try:
            self._settle(f, verdict)
        except BaseException:
            if nxt is not None:
                nxt.give_back()
            raise
        return nxt

    def _dot_went(self) -> None:
        # Pace from the final dot (or the failure): the next dot comes after its
        # reservation, so the server never sees a gap shorter than the delay.
        self.last_send = self.clock.time()
        self.outbox.tidy()  # the previous file goes while the server reads

    def _follow(self, tx: Transaction) -> InFlight | None:
        """Begin the next message in the same write as this final dot (RFC
        2920): where the server pipelines and the next message may go now
        (`immediately` or `flush`, under the cap, in the hours). A paced
        sender has nothing to follow with."""
        if not tx.pipelined or self._stopping:
            return None
        self._drain_inotify()
        now = self.clock.time()
        with self._lock:
            try:
                job = None if self.pause.active(now) else self._next_job(now)
            except (OSError, sqlite3.Error) as exc:
                if not is_storage_problem(exc):
                    raise
                return None  # the next step meets it again
            if job is None or not job.prepared.recipients or self._due(job, now) > now:
                self._jobs.ready = job
                return None
            self._jobs.ready = None
        log = self.log.bind(queue_id=job.queued.name, message_id=job.prepared.message_id)
        return InFlight.follow(self.outbox, job, log, now, tx)

    def _settle(self, f: InFlight, verdict: Verdict) -> None:
        steps = self._cfg.send.account_pause
        if isinstance(verdict, AccountFailure):
            with self._lock:  # the ledger: when the provider's quota frees
                self._pausing.refused(verdict, f.now, steps, self.outbox.ledger)
            self._flush = False  # the flush lifted the pause; it must not outlast it
            self.transport.close()
            f.claim.give_back(str(verdict))
            return
        if isinstance(verdict, SendResult):
            self.last_success = self.clock.time()
            self._pausing.succeeded()
        elif isinstance(verdict, PermanentFailure):
            self._pausing.other()
        self._outcomes.settle(self._cfg, f.claim, verdict, f.job.prepared, f.now, f.log)
        # Deferred: the same reply to message after message pauses the account.
        # (The connection stays: a message begun with this one's dot goes on.)
        if isinstance(verdict, TemporaryFailure) and self._pausing.temporary(
            verdict, f.job.queued.name, f.now, steps
        ):
            self._flush = False  # the flush lifted the pause; it must not outlast it
