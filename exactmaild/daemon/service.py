"""The daemon's main loop: the only module that touches signals.

Like gunicorn's arbiter, signal handlers only record the signal and wake the
loop; the loop acts. The loop owns:

* the sender thread (exactmaild.send.sender) that drains the spool;
* mailbox checks, each in a short-lived thread so a hung IMAP server never
  stops sending, and never two at once;
* the state directory's lock and the control socket (`exactmaild flush`),
  both from `exactmaild.daemon.control`; the metrics endpoint, the systemd
  notify protocol and the watchdog;
* the OAuth2 `TokenCache`, one for the process, shared by the sender and the
  mailbox checks so a refresh token one of them rotated is the one the other
  uses next;
* reloads: the new configuration is built and validated whole, then swapped
  in, or refused whole (supervisor's rule: never half-apply).
"""

from __future__ import annotations

import contextlib
import math
import os
import selectors
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any
from zoneinfo import ZoneInfo

from exactmaild.auth.credentials import check_at_start, credentials_for
from exactmaild.auth.oauth import TokenCache
from exactmaild.auth.tls import TlsContexts
from exactmaild.config import load as configload
from exactmaild.config.model import Config
from exactmaild.core.errors import ConfigError, TemporaryFailure
from exactmaild.core.limits import window_bounds
from exactmaild.core.schedule import describe_next, next_check
from exactmaild.daemon import logs
from exactmaild.daemon.control import ControlSocket, StateLock
from exactmaild.daemon.metrics import Metrics
from exactmaild.daemon.systemd import Notifier
from exactmaild.outbox.levels import Snapshot
from exactmaild.outbox.spool import Spool
from exactmaild.send.sender import Clock, Sender, SystemClock, Transport
from exactmaild.send.smtp import SmtpSender
from exactmaild.store.state import StateStore

# Seconds the SMTP adapter waits for the server at each step.
SMTP_TIMEOUT = 60.0
# Settings that live for the whole process: a reload that changes them says
# a restart is needed and keeps the running value.
RESTART_ONLY = ("spool.dir", "state_dir", "metrics")


class Service:
    def __init__(
        self,
        cfg: Config,
        *,
        clock: Clock | None = None,
        install_signals: bool = True,
        transport_factory: Callable[[Config], Transport] | None = None,
        notifier: Notifier | None = None,
        adjust_config: Callable[[Config], Config] | None = None,
    ) -> None:
        self.cfg = cfg
        # The mailbox checks' TLS contexts, kept across checks; new with each
        # configuration, so a reload reads the CA stores afresh.
        self._tls = TlsContexts()
        # What the command line changed in the loaded config (run --daemon:
        # the log file); applied again to every reloaded config.
        self._adjust_config = adjust_config
        self.clock: Clock = clock or SystemClock()
        self.install_signals = install_signals
        self.log = logs.get()
        self.notifier = notifier or Notifier(
            log=lambda line: self.log.warning("notify", error=line)
        )
        # A test's transport, or None: SMTP with the daemon's token cache.
        self._transport_factory = transport_factory
        # The process's OAuth2 tokens and refused logins: the sender's
        # connections and the mailbox checks log in with it; metrics read it.
        self.tokens = TokenCache()
        self._signals: list[int] = []
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._receive_thread: threading.Thread | None = None
        self._receive_result: Any = None
        # The limit window the running check counts the Sent folder in.
        self._receive_window: tuple[float, float] | None = None
        self._last_check: float | None = None
        self._next_check: float = math.inf
        self._receive_streak = 0
        self._flush_receive = False
        self._status_line = ""
        self._note_failed = False
        self._stop_metrics: Callable[[], None] | None = None
        self._lock = StateLock(cfg.state_dir)
        self._control: ControlSocket | None = None
        self.metrics = Metrics(self.snapshot, tokens=self.tokens)
        self.state: StateStore | None = None
        self.spool: Spool | None = None
        self.sender: Sender | None = None

    # -- start and stop ------------------------------------------------------------

    def start(self) -> None:
        cfg = self.cfg
        cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        self._lock.acquire()
        if self.install_signals:
            # Before anything can be seen from outside (the metrics port): a
            # SIGHUP's default action is to end the process, and a logrotate
            # or reload that comes early must not.
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
                signal.signal(sig, self._on_signal)
        self.state = StateStore(cfg.state_dir)
        self.spool = Spool(cfg.spool.dir)
        transport_factory = self._transport_factory
        if transport_factory is None:
            # A secret file that other users can read, or that is missing, is
            # refused now, at start (exit 78), not at the first send.
            check_at_start(cfg.account)
            transport_factory = self._smtp_transport
        self.sender = Sender(
            cfg,
            self.state,
            self.spool,
            self.metrics,
            self.log,
            clock=self.clock,
            transport_factory=transport_factory,
        )
        self.sender.on_crash = self.wake
        self.sender.recover()
        elsewhere = self.state.get("sent_elsewhere")
        if elsewhere:
            start_s, _, units = elsewhere.partition(":")
            self.sender.set_external(float(start_s), int(units))
        self._control = ControlSocket(cfg)
        if cfg.metrics.enabled:
            assert cfg.metrics.host is not None
            try:
                self._stop_metrics = self.metrics.serve(cfg.metrics.host, cfg.metrics.port)
            except OSError as exc:
                # Temporary (exit 75): systemd retries, e.g. while an old instance
                # still holds the port.
                raise TemporaryFailure(
                    f"cannot serve metrics on {cfg.metrics.host}:{cfg.metrics.port}: "
                    f"{exc.strerror or exc} (another exactmaild instance? give each its own "
                    "metrics.listen port, or set it to off)"
                ) from None
        now = self.clock.time()
        self._next_check = self._due_check(now)
        # next_check too: what `status` shows must be this run's, not the last run's.
        self.state.put(pid=str(os.getpid()), started=str(now), next_check=self._next_check_text())
        self.sender.start()
        self.log.info(
            "started",
            config=str(cfg.source),
            spool=str(cfg.spool.dir),
            metrics=f"{cfg.metrics.host}:{cfg.metrics.port}" if cfg.metrics.enabled else "off",
            delay=cfg.send.delay,
            immediately=cfg.send.immediately,
            daily_limit=cfg.send.daily_limit,
            reserve=cfg.send.reserve,
        )
        self.notifier.ready(self.status_line())

    def _smtp_transport(self, cfg: Config) -> Transport:
        """The sender's SMTP connection, logging in with the daemon's token cache."""
        return SmtpSender(
            cfg.outgoing, credentials_for(cfg.account, tokens=self.tokens), timeout=SMTP_TIMEOUT
        )

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only record and wake: the loop does the work, outside the handler.
        self._signals.append(signum)
        self.wake()

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def request_stop(self) -> None:
        self._stopping = True
        self.wake()

    def run(self) -> int:
        """The main loop; returns the exit status."""
        assert self.sender is not None
        sel = selectors.DefaultSelector()
        sel.register(self._wake_r, selectors.EVENT_READ)
        if self._control is not None:
            sel.register(self._control, selectors.EVENT_READ)
        watchdog = self.notifier.watchdog_interval()
        next_ping = time.monotonic()
        next_status = 0.0
        status = 0
        try:
            while not self._stopping:
                self._handle_signals()
                if self._stopping:
                    break
                thread = self.sender.thread
                if self.sender.crashed or (thread is not None and not thread.is_alive()):
                    # Never stop quietly: a sender that died is a bug; exit
                    # non-zero so the service manager restarts us (recovery then
                    # settles whatever was in flight).
                    self.log.critical("sender_died", action="exiting for a restart")
                    status = 70  # EX_SOFTWARE
                    break
                self._handle_control()
                now = self.clock.time()
                self._receive_tick(now)
                mono = time.monotonic()
                if watchdog is not None and mono >= next_ping:
                    if self.sender.thread is None or self.sender.thread.is_alive():
                        self.notifier.watchdog()
                    next_ping = mono + watchdog
                if mono >= next_status:
                    self._publish_status()
                    next_status = mono + 10.0
                timeout = min(self._next_check - self.clock.time(), 10.0)
                if watchdog is not None:
                    timeout = min(timeout, next_ping - time.monotonic())
                for key, _ in sel.select(max(0.0, timeout)):
                    if key.fd == self._wake_r:
                        with contextlib.suppress(BlockingIOError):
                            os.read(self._wake_r, 4096)
        finally:
            self.shutdown()
        return status

    def shutdown(self) -> None:
        self.notifier.stopping()
        self.log.info("stopping")
        if self.sender is not None:
            self.sender.stop()
        if self._receive_thread is not None:
            self._receive_thread.join(5.0)
        if self._stop_metrics is not None:
            self._stop_metrics()
            self._stop_metrics = None
        if self._control is not None:
            self._control.close()
            self._control = None
        if self.state is not None:
            with contextlib.suppress(Exception):
                self.state.put(pid=None)
            self.state.close()
            self.state = None
        self._lock.release()
        self.log.info("stopped")

    # -- signals and commands -----------------------------------------------------------

    def _handle_signals(self) -> None:
        while self._signals:
            sig = self._signals.pop(0)
            if sig in (signal.SIGTERM, signal.SIGINT):
                self.log.info("signal", signal=signal.Signals(sig).name, action="stop")
                self._stopping = True
            elif sig == signal.SIGHUP:
                self.reload()
            elif sig == signal.SIGUSR1:
                self.flush()

    def _handle_control(self) -> None:
        if self._control is None:
            return
        for command in self._control.commands():
            if command == "flush":
                self.flush()
            else:
                self.log.warning("control_unknown", command=command[:40])

    def flush(self) -> None:
        """Send/Receive now: a mailbox check at once, the queue without delay (cap holds)."""
        self.log.info("flush")
        assert self.sender is not None
        self.sender.flush()
        self._flush_receive = True
        self.wake()

    def reload(self) -> None:
        """Build and validate the whole new configuration, then swap it in or keep the old."""
        self.notifier.reloading()
        try:
            new = configload.load(self.cfg.source)
        except ConfigError as exc:
            self._refuse([str(p) for p in exc.problems])
            return
        # configload only warns about files that may appear later; what the
        # sender reads while swapping in must be readable now, or the swap
        # would stop half-way (and the exception end the daemon).
        if new.send.signature is not None:
            try:
                Path(new.send.signature).read_text("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                self._refuse([f"send.signature: cannot read {new.send.signature}: {exc}"])
                return
        for warning in new.warnings:
            self.log.warning("config_warning", warning=warning)
        if self._adjust_config is not None:
            new = self._adjust_config(new)
        old = self.cfg
        keep: dict[str, Any] = {}
        if new.spool.dir != old.spool.dir:
            keep["spool"] = old.spool
        if new.state_dir != old.state_dir:
            keep["state_dir"] = old.state_dir
        if new.metrics != old.metrics:
            keep["metrics"] = old.metrics
        if keep:
            from dataclasses import replace

            new = replace(new, **keep)
            self.log.warning(
                "reload_needs_restart",
                settings=sorted(keep),
                action="these keep their running values until `systemctl restart exactmaild`",
            )
        try:
            logs.configure(new.log)
        except Exception as exc:  # e.g. log.file not writable: keep logging as before
            self.log.error("log_reconfigure_failed", error=str(exc))
        assert self.sender is not None
        try:
            self.sender.apply(new)
        except Exception as exc:  # e.g. the signature vanished since the check
            self.log.exception("reload_apply_failed")
            with contextlib.suppress(Exception):
                self.sender.apply(old)
            with contextlib.suppress(Exception):
                logs.configure(old.log)
            self._refuse([f"applying the new configuration failed: {exc}"])
            return
        self.cfg = new
        self._tls = TlsContexts()
        self._next_check = self._due_check(self.clock.time())
        if self.state is not None:
            with contextlib.suppress(Exception):
                self._note(next_check=self._next_check_text())
        self.metrics.reloads.labels("success").inc()
        self.metrics.last_reload_ok.set(1)
        self.log.info(
            "reloaded",
            daily_limit=new.send.daily_limit,
            reserve=new.send.reserve,
            delay=new.send.delay,
            immediately=new.send.immediately,
        )
        self.notifier.ready(self.status_line())

    def _refuse(self, problems: list[str]) -> None:
        """Keep the running configuration whole; say why (log, metrics); READY=1 all the same."""
        for problem in problems:
            self.log.error("reload_refused", problem=problem)
        self.log.error("reload_failed", kept="the running configuration, unchanged")
        self.metrics.reloads.labels("failure").inc()
        self.metrics.last_reload_ok.set(0)
        # Always READY=1 after RELOADING=1, or systemd leaves the unit "reloading".
        self.notifier.ready(self.status_line())

    # -- mailbox checks ------------------------------------------------------------

    def _next_check_text(self) -> str | None:
        return str(self._next_check) if math.isfinite(self._next_check) else None

    def _due_check(self, now: float) -> float:
        cfg = self.cfg
        if cfg.incoming is None:
            return math.inf
        return next_check(now, ZoneInfo(cfg.timezone), cfg.schedule, self._last_check)

    def _receive_tick(self, now: float) -> None:
        t = self._receive_thread
        if t is not None and not t.is_alive():
            self._receive_thread = None
            self._receive_done(now)
        if self.cfg.incoming is None or self._receive_thread is not None:
            return  # a check still running is never started twice
        if self._flush_receive or now >= self._next_check:
            self._flush_receive = False
            self._last_check = now
            self._next_check = self._due_check(now)
            assert self.state is not None
            # Now, not when the check ends: a long fetch must not show a past next_check.
            self._note(next_check=self._next_check_text())
            cfg = self.cfg
            # The window the Sent folder is counted in is the one the check
            # started in, and the count is charged to that same window, also
            # when the check ends after midnight.
            self._receive_window = window_bounds(now, ZoneInfo(cfg.timezone), cfg.send.limit_window)
            self._receive_thread = threading.Thread(
                target=self._receive,
                args=(cfg, now, self._receive_window),
                name="receive",
                daemon=True,
            )
            self._receive_thread.start()

    def _receive(self, cfg: Config, now: float, window: tuple[float, float]) -> None:
        from exactmaild.receive.receiver import Receiver

        assert self.state is not None
        try:
            receiver = Receiver(
                cfg,
                self.state,
                credentials_for(cfg.account, tokens=self.tokens),
                log=self.log,
                tls=self._tls,
            )
            self._receive_result = receiver.check(now, window=window)
        except Exception as exc:  # never let a check kill the loop
            self.log.exception("receive_crashed")
            self._receive_result = exc
        self.wake()

    def _receive_done(self, now: float) -> None:
        result, self._receive_result = self._receive_result, None
        error = str(result) if isinstance(result, Exception) else getattr(result, "error", None)
        assert self.state is not None and self.sender is not None
        # A check can deliver some messages and then fail: count what arrived.
        delivered = int(getattr(result, "delivered", 0) or 0)
        self.metrics.received.inc(delivered)
        if error:
            self.metrics.receive_checks.labels("error").inc()
            self._receive_streak += 1
            if self._receive_streak == 1:
                self.log.error("receive_failed", error=error)
            self._note(receive_error=error, receive_error_at=str(now))
        else:
            self.metrics.receive_checks.labels("ok").inc()
            if self._receive_streak:
                self.log.info("receive_recovered", failed_checks=self._receive_streak)
            self._receive_streak = 0
            self._note(last_check=str(self._last_check), receive_error=None)
            elsewhere = getattr(result, "sent_elsewhere", None)
            window = self._receive_window
            if elsewhere is not None and window is not None:
                start = window[0]
                self.sender.set_external(start, int(elsewhere))
                # Kept in the state so a restart (and `status`) still counts it.
                self._note(sent_elsewhere=f"{start}:{int(elsewhere)}")
            if delivered:
                self.log.info("received", delivered=delivered)
        self._receive_window = None
        self._note(next_check=self._next_check_text())

    def _note(self, **facts: str | None) -> None:
        """Record facts for `status`; a state store that cannot take them (disk
        full) must not stop the loop: the log, the metric and STATUS= still tell."""
        assert self.state is not None
        try:
            self.state.put(**facts)
        except (OSError, sqlite3.Error) as exc:
            if not self._note_failed:
                self.log.error("state_write_failed", error=str(exc), facts=sorted(facts))
            self._note_failed = True
        else:
            self._note_failed = False

    # -- status -------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        if self.sender is None:
            return Snapshot(0, 0, self.cfg.send.daily_limit, self.cfg.send.allowance, 0.0)
        s = self.sender.snapshot()
        last_ok = None
        if self.state is not None:
            with contextlib.suppress(OSError, sqlite3.Error):
                last_ok = self.state.get("last_check")
        if last_ok is not None:
            from dataclasses import replace

            s = replace(s, last_receive_check_timestamp=float(last_ok))
        return s

    def status_line(self) -> str:
        s = self.snapshot()
        parts = [
            f"sent {s.sent_in_window}/{s.daily_limit} in window",
            f"{s.remaining} left",
            f"{s.queue.get('queued', 0)} queued",
        ]
        if s.queue.get("deferred"):
            parts.append(f"{s.queue['deferred']} deferred")
        if s.paused:
            parts.append("PAUSED: " + (self.sender.pause_reason if self.sender else ""))
        if not s.storage_ok:
            parts.append("STORAGE PROBLEM")
        if math.isfinite(self._next_check):
            tz = ZoneInfo(self.cfg.timezone)
            parts.append("next check " + describe_next(self._next_check, tz, now=self.clock.time()))
        return ", ".join(parts)

    def _publish_status(self) -> None:
        line = self.status_line()
        if line != self._status_line:
            self._status_line = line
            self.notifier.status(line)
            if self.state is not None and self.sender is not None:
                # The pause and its reason are the sender's to write (with
                # pause_until, in one commit): written from here too, they could
                # race it and land stale.
                with contextlib.suppress(Exception):
                    self.state.put(storage_error=self.sender.storage_error)
