"""The receive check: mailbox -> attachments policy -> Maildir, and `test-connection`'s steps.

Owns one mailbox check from end to end: connect with the configured
adapter, hand every new message through the attachments policy
(`exactmaild.receive.attachments`) into the Maildir at `receive.maildir`
(`exactmaild.store.maildir`), let the adapter record the position after each delivery,
and (IMAP with `send.count_sent_folder`) count the mail sent elsewhere in
the current limit window. A check never raises for a server, network or
disk problem: it returns a `CheckResult` with `error` set, and the check
scheduler (`exactmaild.receive.scheduler`) counts it, logs it once per
failure streak, and the daemon keeps sending.

Also `test_connection` (the incoming half of `exactmaild test-connection`)
and `reset_position` (`exactmaild reset-mailbox-counter`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from exactmaild.auth.credentials import Credentials
from exactmaild.auth.tls import TlsContexts
from exactmaild.config.model import Config
from exactmaild.core.errors import ExactmailError, TemporaryFailure
from exactmaild.core.log import Log, get_log
from exactmaild.receive.mailbox import (
    DEFAULT_TIMEOUT,
    Mailbox,
    detail_of,
    open_mailbox,
    step_of,
)
from exactmaild.receive.mailbox.imap import IMAPMailbox
from exactmaild.store import maildir
from exactmaild.store.state import StateStore


@dataclass(frozen=True)
class CheckResult:
    """What one check did: messages delivered (also when it then failed), and why it failed."""

    delivered: int
    sent_elsewhere: int | None = None  # IMAP + send.count_sent_folder + a window only
    error: str | None = None
    # Seconds from the server's INTERNALDATE to delivery, one per message (IMAP):
    # a measurement, not part of what the check did (equal results compare equal).
    latencies: tuple[float, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Step:
    """One step of test-connection: DNS, connect, TLS, login or folder."""

    name: str
    ok: bool
    detail: str


class DeliveryFailure(TemporaryFailure):
    """The message could not be written locally (Maildir or attachments_dir)."""

    step = "deliver"


class Receiver:
    """Runs mailbox checks for one configuration; one check at a time per instance."""

    def __init__(
        self,
        cfg: Config,
        state: StateStore,
        credentials: Credentials,
        *,
        log: Log | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        tls: TlsContexts | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.clock = clock  # wall clock, for the receive latency
        # The daemon passes one per configuration, kept across checks.
        self.tls = tls if tls is not None else TlsContexts()
        self.state = state
        self.credentials = credentials
        self.log = log if log is not None else get_log("exactmaild.receive")
        self.timeout = timeout
        self.last_fetches = 0  # messages fetched in full by the last check (for tests/metrics)

    def check(self, now: float, *, window: tuple[float, float] | None = None) -> CheckResult:
        """One mailbox check. `window`: the current limit window, for count_sent_folder."""
        inc, rcv = self.cfg.incoming, self.cfg.receive
        if inc is None or rcv is None:
            return CheckResult(delivered=0)
        box = self.mailbox()
        try:
            return self.check_on(box, now, window=window, connect=True)
        finally:
            box.close()

    def mailbox(self) -> Mailbox:
        """A new, unconnected adapter for `incoming` (the IDLE watcher keeps one open)."""
        inc = self.cfg.incoming
        assert inc is not None
        return open_mailbox(
            inc, self.credentials, self.state, timeout=self.timeout, log=self.log, tls=self.tls
        )

    def check_on(
        self,
        box: Mailbox,
        now: float,
        *,
        window: tuple[float, float] | None = None,
        connect: bool = False,
    ) -> CheckResult:
        """One check on `box` (connected first if `connect`), which stays open.

        The folder is opened afresh each time: its UIDVALIDITY and UIDNEXT are
        read anew, so a connection kept open (IDLE) sees a rebuilt folder too.
        """
        delivered = 0
        latencies: list[float] = []
        sent_elsewhere: int | None = None
        error: str | None = None
        fetched = box.fetches

        def deliver(data: bytes) -> None:
            nonlocal delivered
            path = self._deliver(data)
            delivered += 1
            if box.arrived is not None:
                # Clocks differ a little and INTERNALDATE has whole seconds: never below 0.
                latencies.append(max(0.0, self.clock() - box.arrived))
            self.log.debug("receive_delivered", key=box.key, path=str(path), size=len(data))

        try:
            if connect:
                box.connect()
            box.open_folder()
            box.fetch_new(deliver, now)
            folder = self.cfg.send.count_sent_folder
            if folder and window is not None and isinstance(box, IMAPMailbox):
                exclude = self.state.sent_message_ids(window[0])
                sent_elsewhere = box.count_sent(folder, window[0], window[1], exclude)
        except ExactmailError as exc:
            error = str(exc)
        except Exception as exc:  # a bug or a server reply nobody foresaw: still not fatal
            self.log.exception("receive_unexpected_error", key=box.key)
            error = f"unexpected error during the check: {type(exc).__name__}: {exc}"
        self.last_fetches = box.fetches - fetched
        self.log.debug(
            "receive_check",
            key=box.key,
            delivered=delivered,
            fetched=self.last_fetches,
            sent_elsewhere=sent_elsewhere,
            error=error,
        )
        return CheckResult(
            delivered=delivered,
            sent_elsewhere=sent_elsewhere,
            error=error,
            latencies=tuple(latencies),
        )

    def _attachments(self, data: bytes) -> bytes:
        """`receive.attachments` strip or extract applied to one message."""
        from exactmaild.receive import attachments

        rcv = self.cfg.receive
        assert rcv is not None
        try:
            result = attachments.process(data, rcv)
        except OSError as exc:
            raise DeliveryFailure(
                f"deliver: cannot save an attachment into {rcv.attachments_dir} ({exc}): "
                "check free space and permissions; the message stays on the server"
            ) from exc
        except Exception:
            # A message the parser chokes on is still mail: deliver it untouched.
            self.log.warning(
                "receive_attachments_skipped",
                reason="the message could not be parsed; delivered unchanged",
                exc_info=True,
            )
            result = attachments.Result(data)
        for path in result.extracted:
            self.log.info("receive_attachment_extracted", path=str(path))
        return result.data

    def _deliver(self, data: bytes) -> Path:
        rcv = self.cfg.receive
        assert rcv is not None
        # keep: byte for byte, and the attachments code (its parser, mimetypes)
        # is imported only by the configurations that strip or extract.
        out = data if rcv.attachments == "keep" else self._attachments(data)
        try:
            return maildir.deliver(rcv.maildir, out, group=rcv.group)
        except OSError as exc:
            raise DeliveryFailure(
                f"deliver: cannot write into receive.maildir {rcv.maildir} ({exc}): "
                "check free space and permissions; the message stays on the server"
            ) from exc


def test_connection(cfg: Config, credentials: Credentials, *, timeout: float = 30.0) -> list[Step]:
    """Log in to the incoming server and open the folder, fetching nothing.

    Returns every step taken; the last one has ok=False when a step failed.
    `incoming: none` gives an empty list.
    """
    inc = cfg.incoming
    if inc is None:
        return []
    steps: list[Step] = []

    def passed(name: str, detail: str) -> None:
        steps.append(Step(name, True, detail))

    box = open_mailbox(inc, credentials, None, timeout=timeout)
    try:
        box.connect(passed)
        passed("folder", box.open_folder())
        sent = cfg.send.count_sent_folder
        if sent and isinstance(box, IMAPMailbox):
            info = box.select(sent)
            passed("folder", f"{sent}: {info.exists} messages (send.count_sent_folder)")
    except ExactmailError as exc:
        steps.append(Step(step_of(exc) if hasattr(exc, "step") else "login", False, detail_of(exc)))
    except Exception as exc:  # still a clear answer, never a traceback
        steps.append(Step("connect", False, f"unexpected error: {type(exc).__name__}: {exc}"))
    finally:
        box.close()
    return steps


# The name is the command's; tell pytest it is not a test when a test imports it.
test_connection.__test__ = False  # type: ignore[attr-defined]


def reset_position(state: StateStore) -> None:
    """Forget the receive position: the next check fetches every message still on the server."""
    state.reset_receive()
