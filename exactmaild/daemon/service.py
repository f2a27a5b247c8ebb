"""The daemon's main loop: the only module that touches signals.

Like gunicorn's arbiter, signal handlers only record the signal and wake the
loop; the loop acts. The loop owns:

* the sender thread (`exactmaild.send.sender.Sender`) that drains the spool;
* the mailbox checks' scheduler (`exactmaild.receive.scheduler.CheckScheduler`),
  which the loop tells the time and asks when the next check is due;
* the state directory's lock and the control socket (`exactmaild flush`,
  `queue send-now`, and the re-read after a batch `queue` operation),
  both from `exactmaild.daemon.control`; the metrics endpoint, the systemd
  notify protocol and the watchdog;
* the OAuth2 `TokenCache`, one for the process, shared by the sender and the
  mailbox checks so a refresh token one of them rotated is the one the other
  uses next;
* reloads: the new configuration is built and validated whole
  (`exactmaild.daemon.reload`), then swapped in, or refused whole
  (supervisor's rule: never half-apply).
"""

from __future__ import annotations

import contextlib
import math
import os
import selectors
import signal
import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace
from types import FrameType
from zoneinfo import ZoneInfo

from exactmaild.auth.credentials import credentials_for
from exactmaild.auth.oauth import TokenCache
from exactmaild.config.model import Config
from exactmaild.core.clock import Clock, SystemClock
from exactmaild.core.errors import EX_OK, EX_SOFTWARE, TemporaryFailure
from exactmaild.core.log import Log
from exactmaild.daemon import logs
from exactmaild.daemon.control import RESCAN, SEND_NOW, ControlSocket, StateLock
from exactmaild.daemon.metrics import Metrics
from exactmaild.daemon.preflight import refuse_to_start
from exactmaild.daemon.reload import Refused, prepare, record_running
from exactmaild.daemon.statusline import status_line
from exactmaild.daemon.systemd import Notifier
from exactmaild.outbox.levels import Snapshot
from exactmaild.outbox.spool import Spool
from exactmaild.receive.scheduler import CheckScheduler
from exactmaild.send.sender import Sender
from exactmaild.send.smtp import SmtpConnection
from exactmaild.send.transport import Transport
from exactmaild.store.state import StateStore

# Seconds the SMTP adapter waits for the server at each step.
SMTP_TIMEOUT = 60.0


class Service:
    """One daemon: `start()` claims the account and starts the parts, `run()` is the loop."""

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
        # What the command line changed in the loaded config (run --daemon:
        # the log file); applied again to every reloaded config.
        self._adjust_config = adjust_config
        self.clock: Clock = clock or SystemClock()
        self.install_signals = install_signals
        self.log: Log = logs.get()
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
        self._status_line = ""
        self._stop_metrics: Callable[[], None] | None = None
        self._lock = StateLock(cfg.state_dir)
        self._control: ControlSocket | None = None
        self.metrics = Metrics(self.snapshot, tokens=self.tokens)
        self.state: StateStore | None = None
        self.spool: Spool | None = None
        self.sender: Sender | None = None
        self.checks: CheckScheduler | None = None

    # -- start and stop ------------------------------------------------------------

    def start(self) -> None:
        cfg = self.cfg
        if self._transport_factory is None:
            # A secret file that other users can read, or that is missing, or
            # a directory this user cannot write, is refused now, at start
            # (exit 78), not at the first send; check-config runs the same list.
            refuse_to_start(cfg)
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
        transport_factory = self._transport_factory or self._smtp_transport
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
        self.checks = CheckScheduler(
            cfg,
            self.state,
            metrics=self.metrics,
            log=self.log,
            tokens=self.tokens,
            wake=self.wake,
            set_external=self.sender.set_external,
        )
        self.checks.resume()
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
        self.checks.start(now)
        # next_check too: what `status` shows must be this run's, not the last run's.
        self.state.put(pid=str(os.getpid()), started=str(now), next_check=self.checks.due_text())
        record_running(cfg, now, log=self.log)
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
        return SmtpConnection(
            cfg.outgoing,
            credentials_for(cfg.account, tokens=self.tokens),
            timeout=SMTP_TIMEOUT,
            max_recipients=cfg.outgoing.max_recipients,
            logins=self.metrics.smtp_logins,
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
        assert self.sender is not None and self.checks is not None
        sel = selectors.DefaultSelector()
        sel.register(self._wake_r, selectors.EVENT_READ)
        if self._control is not None:
            sel.register(self._control, selectors.EVENT_READ)
        watchdog = self.notifier.watchdog_interval()
        next_ping = time.monotonic()
        next_status = 0.0
        status = EX_OK
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
                    status = EX_SOFTWARE
                    break
                self._handle_control()
                now = self.clock.time()
                self.checks.tick(now)
                mono = time.monotonic()
                if watchdog is not None and mono >= next_ping:
                    if self.sender.thread is None or self.sender.thread.is_alive():
                        self.notifier.watchdog()
                    next_ping = mono + watchdog
                if mono >= next_status:
                    self._publish_status()
                    next_status = mono + 10.0
                timeout = min(self.checks.due - self.clock.time(), 10.0)
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
        if self.checks is not None:
            self.checks.stop()
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
            word, _, arg = command.partition(" ")
            if command == "flush":
                self.flush()
            elif word in (SEND_NOW, RESCAN) and self.sender is not None:
                # The queue's index is the sender thread's: it applies these
                # the next time it looks for a message (at once: woken here).
                if word == SEND_NOW:
                    self.sender.outbox.requests.send_now(arg.strip())
                else:
                    self.sender.outbox.requests.rescan()
                self.sender.wake()
            else:
                self.log.warning("control_unknown", command=command[:40])

    def flush(self) -> None:
        """Send/Receive now: a mailbox check at once, the queue without delay (cap holds)."""
        self.log.info("flush")
        assert self.sender is not None and self.checks is not None
        self.sender.flush()
        self.checks.flush()
        self.wake()

    def reload(self) -> None:
        """Build and validate the whole new configuration, then swap it in or keep the old."""
        self.notifier.reloading()
        try:
            new = prepare(self.cfg, log=self.log, adjust=self._adjust_config)
        except Refused as exc:
            self._refuse(exc.problems)
            return
        old = self.cfg
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
        record_running(new, self.clock.time(), log=self.log)
        if self.checks is not None:
            self.checks.apply(new, self.clock.time())
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
            s = replace(s, last_receive_check_timestamp=float(last_ok))
        return s

    def status_line(self) -> str:
        return status_line(
            self.snapshot(),
            pause_reason=self.sender.pause_reason if self.sender else "",
            next_check=self.checks.due if self.checks is not None else math.inf,
            tz=ZoneInfo(self.cfg.timezone),
            now=self.clock.time(),
        )

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
