"""The IDLE watcher: one IMAP connection kept open in IDLE, fetching new mail as it arrives.

With `incoming.idle: true`, inside the schedule's window, the check
scheduler (`exactmaild.receive.scheduler`) runs one `IdleWatcher`. Its
thread logs in, checks the folder once (mail that arrived while no one
watched), then waits in IDLE (`exactmaild.receive.mailbox.idle`) and, each
time the server announces new mail, ends IDLE and runs an ordinary check on
the same connection (`Receiver.check_on`): the same UIDVALIDITY/UID
position, each message delivered into the Maildir before its position is
recorded. So exactmaild never holds two connections to the mailbox: while
the watcher runs, the scheduled checks (`every`, `at`, `flush`) are handed
to it (`check()`) and run on its connection too, the sent folder counted
with them.

IDLE is renewed (DONE, then IDLE again) every `renew_after` seconds, well
inside RFC 2177's 29 minutes. A dropped connection (the server's timeout, a
restart, the network) is reconnected after a back-off (1 s, then 5 s, 30 s,
60 s, 300 s), reset by the next good check; a scheduled check during the
back-off tries at once. A server that does not offer IDLE, or refuses it,
ends the watcher until the next reload: the schedule's checks go on.

Every check's result, and each change of the connection, goes to callbacks
that the scheduler hands in (it counts, logs and records them).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import threading
import time
from collections.abc import Callable

from exactmaild.auth.credentials import credentials_for
from exactmaild.auth.oauth import TokenCache
from exactmaild.auth.tls import TlsContexts
from exactmaild.config.model import Config
from exactmaild.core.errors import ExactmailError
from exactmaild.core.log import Log
from exactmaild.receive.mailbox import Mailbox
from exactmaild.receive.mailbox.idle import RENEW_AFTER, Ended, IdleRefused, idle, supports_idle
from exactmaild.receive.mailbox.imap import IMAPMailbox
from exactmaild.receive.receiver import CheckResult, Receiver
from exactmaild.store.state import StateStore

# Seconds before each reconnection in a row; the last repeats.
BACKOFF = (1.0, 5.0, 30.0, 60.0, 300.0)

Window = tuple[float, float]
# (the check's result, the limit window a scheduled check counted the sent folder in)
Report = Callable[[CheckResult, Window | None], None]


class IdleWatcher:
    """One thread, one IMAP connection in IDLE; see the module docstring."""

    def __init__(
        self,
        cfg: Config,
        state: StateStore,
        *,
        log: Log,
        tokens: TokenCache,
        tls: TlsContexts,
        report: Report,
        connected: Callable[[bool], None],
        ended: Callable[[], None] = lambda: None,
        renew_after: float = RENEW_AFTER,
        backoff: tuple[float, ...] = BACKOFF,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.state = state
        self.log = log
        self.tokens = tokens
        self.tls = tls
        self._report = report
        self._connected_cb = connected
        self._ended = ended
        self.renew_after = renew_after
        self.backoff = backoff
        self.clock = clock
        self.connected = False
        # Set when the server has no IDLE: the scheduler does not start another.
        self.refused: str | None = None
        self._lock = threading.Lock()
        self._stopping = False
        self._wanted = False  # a scheduled check is waiting
        self._window: Window | None = None
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name="idle", daemon=True)

    # -- what the scheduler calls ------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def check(self, window: Window | None) -> None:
        """Run a scheduled check on the watcher's connection as soon as it can."""
        with self._lock:
            self._wanted = True
            if window is not None:
                self._window = window
        self._wake()

    def stop(self) -> None:
        """End IDLE, log out and end the thread (does not wait: see `join`)."""
        self._stopping = True
        self._wake()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        if not self._thread.is_alive():
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)

    # -- the thread ----------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _drain(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self._wake_r, 4096):
                pass

    def _take(self) -> tuple[bool, Window | None]:
        with self._lock:
            wanted, window = self._wanted, self._window
            self._wanted, self._window = False, None
        return wanted, window

    def _run(self) -> None:
        try:
            self._connections()
        finally:
            self._ended()  # the scheduler may start checks of its own again

    def _connections(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                if self._session():
                    failures = 0
            except Exception:  # a bug must not end IDLE for good: reconnect
                self.log.exception("idle_crashed")
            if self._stopping or self.refused is not None:
                break
            delay = self.backoff[min(failures, len(self.backoff) - 1)]
            failures += 1
            self.log.info("idle_reconnect", in_seconds=delay, attempt=failures)
            self._sleep(delay)

    def _session(self) -> bool:
        """One connection from login to drop or stop; True if a check on it went well."""
        cfg = self.cfg
        receiver = Receiver(
            cfg,
            self.state,
            credentials_for(cfg.account, tokens=self.tokens),
            log=self.log,
            tls=self.tls,
            clock=self.clock,
        )
        box = receiver.mailbox()
        good = False
        try:
            try:
                box.connect()
            except ExactmailError as exc:
                self._report(CheckResult(delivered=0, error=str(exc)), self._take()[1])
                return False
            assert isinstance(box, IMAPMailbox)  # config refuses idle with POP3
            if not supports_idle(box):
                raise IdleRefused(
                    f"{cfg.incoming.host if cfg.incoming else 'the server'} does not offer "
                    "IDLE (RFC 2177): set incoming.idle: false; the scheduled checks still run"
                )
            self._set_connected(True)
            self.log.info("idle_connected")
            # Mail that arrived while nobody watched, and any scheduled check waiting.
            if not self._check(receiver, box, self._take()[1]):
                return False
            good = True
            while not self._stopping:
                ended = idle(box, self._wake_r, self.renew_after)
                self._drain()
                if self._stopping:
                    break
                wanted, window = self._take()
                if ended is Ended.MAIL or wanted:
                    if not self._check(receiver, box, window):
                        return good
                elif ended is Ended.RENEW:
                    self.log.debug("idle_renewed")
                # Woken with nothing to do (a request served already): IDLE again.
            return good
        except IdleRefused as exc:
            self.refused = str(exc)
            self.log.error("idle_refused", error=str(exc))
            self._report(CheckResult(delivered=0, error=str(exc)), None)
            return False
        except ExactmailError as exc:
            self.log.warning("idle_dropped", error=str(exc))
            return good
        finally:
            box.close()
            if self.connected:
                self._set_connected(False)

    def _check(self, receiver: Receiver, box: Mailbox, window: Window | None) -> bool:
        """One check on the open connection; False if it failed (reconnect)."""
        result = receiver.check_on(box, self.clock(), window=window)
        self._report(result, window)
        if result.error is not None:
            return False
        if window is not None and self.cfg.send.count_sent_folder:
            box.open_folder()  # the sent folder was selected: IDLE on the inbox again
        return True

    def _set_connected(self, up: bool) -> None:
        self.connected = up
        self._connected_cb(up)

    def _sleep(self, seconds: float) -> None:
        """The back-off: until `seconds` pass, a stop, or a scheduled check."""
        with selectors.DefaultSelector() as sel:
            sel.register(self._wake_r, selectors.EVENT_READ)
            deadline = time.monotonic() + seconds
            while not self._stopping:
                with self._lock:
                    if self._wanted:
                        return
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                sel.select(left)
                self._drain()
