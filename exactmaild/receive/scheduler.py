"""When the mailbox is checked: the schedule, one check at a time, and what a check's result does.

The daemon's loop owns the clock and the waiting; a `CheckScheduler` owns
everything else about mailbox checks. The loop tells it the time
(`tick(now)`), asks when the next check is due (`due`) and sleeps until then
at most; `flush()` asks for a check at once and `apply(cfg)` takes a
reloaded configuration.

* A check runs in its own short-lived thread, so a hung IMAP server never
  stops sending; a check still running is never started twice.
* The thread marks its result ready (an Event) *before* it wakes the loop,
  and `tick` takes a ready result whether or not the thread has ended yet:
  the loop it wakes must not find the thread still alive and sleep on
  (results were handled up to the loop's 10 s nap late).
* The next check is computed (and written for `status`) when a check starts,
  not when it ends: a long fetch must not show a past `next_check`.
* With `incoming.idle: true`, inside the schedule's window, an `IdleWatcher`
  (`exactmaild.receive.watcher`) holds the one connection to the mailbox;
  a due check (or `flush`) is handed to it and runs on that connection,
  never beside it. Outside the window it is stopped, and checks start
  again on their own threads once it has logged out. Its results come back
  through the same counting and recording as a check thread's.
* A result is counted (metrics), logged once per failure streak, and written
  to the state store for `status`. With IMAP and `send.count_sent_folder`,
  the mail found in the Sent folder is handed to the sender (`set_external`)
  for the limit window the check started in, and kept in the state store so
  a restart still counts it.

It knows nothing of the daemon: what it needs comes in as arguments and
callbacks (the metric counters, the state store, the token cache, how to wake
the loop, how to tell the sender about mail sent elsewhere).
"""

from __future__ import annotations

import collections
import contextlib
import math
import sqlite3
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from exactmaild.auth.credentials import credentials_for
from exactmaild.auth.oauth import TokenCache
from exactmaild.auth.tls import TlsContexts
from exactmaild.config.model import Config
from exactmaild.core.counters import Counter, Labelled
from exactmaild.core.limits import window_bounds
from exactmaild.core.log import Log
from exactmaild.core.schedule import is_open, next_check
from exactmaild.receive.receiver import CheckResult, Receiver
from exactmaild.store.facts import SentElsewhere
from exactmaild.store.state import StateStore

if TYPE_CHECKING:
    from exactmaild.receive.watcher import IdleWatcher

# The limit window a check counts the Sent folder in: (start, end).
Window = tuple[float, float]

# How long `stop()` waits for a running check before the process goes on exiting
# (the check's thread is a daemon thread: it dies with the process).
STOP_WAIT = 5.0


class CheckMetrics(Protocol):
    """The counters a check's result moves (`exactmaild.daemon.metrics.Metrics` has them)."""

    @property
    def received(self) -> Counter: ...

    @property
    def receive_checks(self) -> Labelled: ...

    @property
    def idle_connected(self) -> Settable: ...

    @property
    def receive_latency(self) -> Observer: ...


class Settable(Protocol):
    def set(self, value: float) -> None: ...


class Observer(Protocol):
    def observe(self, value: float) -> None: ...


# The sender's `set_external(window_start, units)`: mail sent elsewhere in a window.
SetExternal = Callable[[float, int], None]


class CheckScheduler:
    """Mailbox checks for the running configuration; driven by the daemon's loop."""

    def __init__(
        self,
        cfg: Config,
        state: StateStore,
        *,
        metrics: CheckMetrics,
        log: Log,
        tokens: TokenCache,
        wake: Callable[[], None],
        set_external: SetExternal,
    ) -> None:
        self.cfg = cfg
        self.state = state
        self.metrics = metrics
        self.log = log
        self.tokens = tokens
        self._wake = wake
        self._set_external = set_external
        # The checks' TLS contexts, kept across checks; new with each
        # configuration, so a reload reads the CA stores afresh.
        self._tls = TlsContexts()
        self._thread: threading.Thread | None = None
        # Set by the check's thread once its result is in `_result`.
        self._ready = threading.Event()
        self._result: CheckResult | None = None
        # The limit window the running check counts the Sent folder in.
        self._window: tuple[float, float] | None = None
        self._last_check: float | None = None
        self._due = math.inf
        self._streak = 0  # failed checks in a row
        self._flush = False
        self._note_failed = False
        # incoming.idle: the watcher holds the one connection while it runs;
        # its results and connection changes come through `_reports`.
        self._watcher: IdleWatcher | None = None
        self._idle_refused: str | None = None
        self._reports: collections.deque[tuple[CheckResult | bool, Window | None]] = (
            collections.deque()
        )

    # -- what the loop asks and tells -------------------------------------------

    @property
    def due(self) -> float:
        """Clock time the next check is due (math.inf: never, e.g. `incoming: none`)."""
        return self._due

    def due_text(self) -> str | None:
        """`due` as the state store keeps it for `status` (None: never)."""
        return str(self._due) if math.isfinite(self._due) else None

    def resume(self) -> None:
        """At the daemon's start: what the last run found in the Sent folder counts again."""
        self._note(idle=None)  # a previous run's IDLE connection is gone
        elsewhere = self.state.sent_elsewhere()
        if elsewhere is not None:
            self._set_external(elsewhere.window_start, elsewhere.units)

    def start(self, now: float) -> None:
        """At the daemon's start: the first check (the caller writes `due_text()`
        with its own start facts, in one transaction)."""
        self._due = self._next_due(now)

    def apply(self, cfg: Config, now: float) -> None:
        """A reloaded configuration: its schedule from now on. A check already
        running finishes with the configuration it started with."""
        self.cfg = cfg
        self._tls = TlsContexts()
        self._due = self._next_due(now)
        # The watcher logs in with the old configuration: a new one starts
        # once it has logged out.
        self._idle_refused = None
        if self._watcher is not None:
            self._watcher.stop()
        with contextlib.suppress(Exception):
            self._note(next_check=self.due_text())

    def flush(self) -> None:
        """Check at the next tick, whatever the schedule (`exactmaild flush`)."""
        self._flush = True

    def tick(self, now: float) -> None:
        """Handle a finished check, then start one if it is due."""
        t = self._thread
        if t is not None and (self._ready.is_set() or not t.is_alive()):
            self._thread = None
            self._done(now)
        self._take_reports(now)
        w = self._watcher
        if w is not None and not w.alive:
            self._take_reports(now)
            self._idle_refused = self._idle_refused or w.refused
            w.join(0)
            self._watcher = w = None
            self.metrics.idle_connected.set(0)
            self._note(idle=None)
        if self.cfg.incoming is None:
            return
        idle = self._idle_wanted(now)
        if w is not None and not idle:
            w.stop()  # outside the window: the scheduled checks alone, once it logged out
        elif w is None and idle and self._thread is None:
            self._start_watcher()
            w = self._watcher
        if not (self._flush or now >= self._due):
            return
        if w is not None and not w.stopping:
            self._flush = False
            self._hand_over(w, now)
        elif w is None and self._thread is None:
            self._flush = False
            self._begin(now)
        else:
            # The connection is busy (a check, or the watcher logging out):
            # look again shortly rather than spin on a past due time.
            self._due = max(self._due, now + 0.5)

    def stop(self, timeout: float = STOP_WAIT) -> None:
        """Wait a little for a running check (it stops at its next server reply);
        the watcher ends IDLE and logs out."""
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher.join(min(timeout, 3.0))
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def idle_connected(self) -> bool:
        return self._watcher is not None and self._watcher.connected

    # -- IMAP IDLE ------------------------------------------------------------------

    def _idle_wanted(self, now: float) -> bool:
        cfg = self.cfg
        inc = cfg.incoming
        if inc is None or not inc.idle or self._idle_refused is not None:
            return False
        return is_open(now, ZoneInfo(cfg.timezone), cfg.schedule.days, cfg.schedule.window)

    def _start_watcher(self) -> None:
        # Imported here: only configurations with incoming.idle need it.
        from exactmaild.receive.watcher import IdleWatcher

        def report(result: CheckResult | bool, window: Window | None) -> None:
            self._reports.append((result, window))  # the watcher's thread: tick handles it
            self._wake()

        self._watcher = IdleWatcher(
            self.cfg,
            self.state,
            log=self.log,
            tokens=self.tokens,
            tls=self._tls,
            report=report,
            connected=lambda up: report(up, None),
            ended=self._wake,
        )
        self._watcher.start()

    def _hand_over(self, w: IdleWatcher, now: float) -> None:
        """A scheduled check runs on the watcher's connection."""
        cfg = self.cfg
        self._last_check = now
        self._due = self._next_due(now)
        self._note(next_check=self.due_text())
        window = None
        if cfg.send.count_sent_folder:
            window = window_bounds(now, ZoneInfo(cfg.timezone), cfg.send.limit_window)
        w.check(window)

    def _take_reports(self, now: float) -> None:
        while self._reports:
            item, window = self._reports.popleft()
            if isinstance(item, bool):
                self.metrics.idle_connected.set(1 if item else 0)
                self._note(idle="connected" if item else "reconnecting")
                continue
            self._handle(item, window, now, last_check=now)

    # -- one check ---------------------------------------------------------------

    def _next_due(self, now: float) -> float:
        cfg = self.cfg
        if cfg.incoming is None:
            return math.inf
        return next_check(now, ZoneInfo(cfg.timezone), cfg.schedule, self._last_check)

    def _begin(self, now: float) -> None:
        cfg = self.cfg
        self._last_check = now
        self._due = self._next_due(now)
        # Now, not when the check ends: a long fetch must not show a past next_check.
        self._note(next_check=self.due_text())
        # The window the Sent folder is counted in is the one the check
        # started in, and the count is charged to that same window, also
        # when the check ends after midnight.
        self._window = window_bounds(now, ZoneInfo(cfg.timezone), cfg.send.limit_window)
        # One Event per check: a late word from an earlier thread cannot mark this one ready.
        self._ready = threading.Event()
        self._thread = threading.Thread(
            target=self._check,
            args=(cfg, now, self._window, self._ready),
            name="receive",
            daemon=True,
        )
        self._thread.start()

    def _check(
        self, cfg: Config, now: float, window: tuple[float, float], ready: threading.Event
    ) -> None:
        """The check's thread: one Receiver.check(), then mark the result ready
        and wake the loop to handle it."""
        try:
            credentials = credentials_for(cfg.account, tokens=self.tokens)
            receiver = Receiver(cfg, self.state, credentials, log=self.log, tls=self._tls)
            self._result = receiver.check(now, window=window)
        except Exception as exc:  # never let a check kill the loop
            self.log.exception("receive_crashed")
            self._result = CheckResult(delivered=0, error=str(exc) or type(exc).__name__)
        # Ready first, then the wake-up: the loop it wakes finds the result
        # even though this thread has not ended yet.
        ready.set()
        self._wake()

    def _done(self, now: float) -> None:
        result, self._result = self._result, None
        if result is None:  # the thread ended without a word (a BaseException)
            result = CheckResult(delivered=0, error="the check ended without a result")
        self._handle(result, self._window, now, last_check=self._last_check)
        self._window = None
        self._note(next_check=self.due_text())

    def _handle(
        self, result: CheckResult, window: Window | None, now: float, *, last_check: float | None
    ) -> None:
        """Count, log and record one check's result (a scheduled check's or the watcher's)."""
        for seconds in result.latencies:
            self.metrics.receive_latency.observe(seconds)
        # A check can deliver some messages and then fail: count what arrived.
        self.metrics.received.inc(result.delivered)
        if result.error:
            self.metrics.receive_checks.labels("error").inc()
            self._streak += 1
            if self._streak == 1:
                self.log.error("receive_failed", error=result.error)
            self._note(receive_error=result.error, receive_error_at=str(now))
        else:
            self.metrics.receive_checks.labels("ok").inc()
            if self._streak:
                self.log.info("receive_recovered", failed_checks=self._streak)
            self._streak = 0
            self._note(last_check=str(last_check), receive_error=None)
            if result.sent_elsewhere is not None and window is not None:
                start = window[0]
                self._set_external(start, result.sent_elsewhere)
                # Kept in the state so a restart (and `status`) still counts it.
                self._write(
                    self.state.set_sent_elsewhere, SentElsewhere(start, result.sent_elsewhere)
                )
            if result.delivered:
                self.log.info("received", delivered=result.delivered)

    def _note(self, **facts: str | None) -> None:
        """Record facts for `status`."""
        self._write(self.state.put, **facts)

    def _write(self, write: Callable[..., None], *args: Any, **facts: Any) -> None:
        """A state store that cannot take a fact (disk full) must not stop the
        loop: the log, the metric and STATUS= still tell."""
        try:
            write(*args, **facts)
        except (OSError, sqlite3.Error) as exc:
            if not self._note_failed:
                self.log.error("state_write_failed", error=str(exc), facts=sorted(facts))
            self._note_failed = True
        else:
            self._note_failed = False
