"""What a send's outcome does to its message: one Claim step each.

Mailman's runner has `_dispose()`; this is exactmaild's. The sender decides
when to send and drives the transport; what the server (or the lost
connection) answered is settled here:

- accepted for everyone: `Claim.sent()`; for some, with others refused for
  good: `sent_to_some()` and a notice; with others deferred: `partly()`;
- a temporary failure or an unknown outcome: `defer()` on
  send.retry_intervals, `hold()` (on_unknown_outcome: hold), or `fail()`
  once send.give_up_after has passed since the first try;
- a permanent failure: `fail()`, and a notice into the practice's inbox.

Account problems are not settled here: the sender pauses the whole queue
and gives the message back (`Claim.give_back()`).
"""

from __future__ import annotations

from typing import Protocol

from exactmaild.config.model import Config
from exactmaild.core.clock import Clock
from exactmaild.core.counters import Counter, Labelled
from exactmaild.core.errors import PermanentFailure, TemporaryFailure, UnknownOutcome
from exactmaild.core.log import Log
from exactmaild.core.pacing import format_seconds
from exactmaild.core.retry import given_up, retry_interval
from exactmaild.outbox import Claim, Outbox
from exactmaild.outbox.claim import AttemptStatus
from exactmaild.send import bounces
from exactmaild.send.prepared import Prepared
from exactmaild.send.transport import SendResult


class SendMetrics(Protocol):
    """The counters sending moves (daemon.metrics.Metrics has them)."""

    @property
    def sent(self) -> Counter: ...
    @property
    def send_failures(self) -> Labelled: ...


class Outcomes:
    """Settles claims by outcome, and counts the failures."""

    def __init__(self, outbox: Outbox, metrics: SendMetrics, clock: Clock) -> None:
        self._outbox = outbox
        self._metrics = metrics
        self._clock = clock

    def _failed(self, kind: str) -> None:
        self._metrics.send_failures.labels(kind).inc()

    def settle(
        self,
        cfg: Config,
        claim: Claim,
        verdict: SendResult | TemporaryFailure | PermanentFailure,
        p: Prepared,
        now: float,
        log: Log,
    ) -> None:
        """The server's verdict (an account problem aside: the sender pauses)."""
        if isinstance(verdict, TemporaryFailure):  # UnknownOutcome too
            self.temporary(cfg, claim, verdict, now, log)
        elif isinstance(verdict, PermanentFailure):
            self.permanent(cfg, claim, verdict, p, log)
        else:
            self.accepted(cfg, claim, p, verdict, now, log)

    def accepted(
        self, cfg: Config, claim: Claim, p: Prepared, result: SendResult, now: float, log: Log
    ) -> None:
        refused, deferred, accepted = result.refused, result.deferred, result.accepted
        self._metrics.sent.inc()
        # What each recipient got, for the history (recipients never go in metrics).
        claim.note_result(result.reply, accepted, refused, deferred, self._clock.time())
        if not refused and not deferred:
            claim.sent(result.reply, len(accepted), self._clock.time())
            return
        if refused:
            reason = "sent to {} recipient(s); refused for good: {}".format(
                len(accepted), "; ".join(f"{r}: {c} {t}" for r, (c, t) in refused.items())
            )
            log.warning(
                "recipients_refused", refused=sorted(refused), accepted=len(accepted), reason=reason
            )
            self._failed("permanent")
            failures = bounces.failures_of(refused)
            bounces.deliver_notice(cfg, p.data, failures, accepted, log, self._clock.time())
        if not deferred:
            claim.sent_to_some(result.reply, len(accepted))
            return
        # Some recipients were told "try later": they get it on a retry; the
        # ones that already have it (or refused it for good) never get it again.
        first, (code, text) = next(iter(deferred.items()))
        self._failed("transient")
        done = tuple(accepted) + tuple(refused)
        error = f"recipient {first} deferred: {code} {text}"
        self._retry(cfg, claim, "sent", error, now, log, done=done, reply=result.reply)
        log.info("sent_partially", accepted=len(accepted), deferred=len(deferred))

    def temporary(self, cfg: Config, claim: Claim, exc: Exception, now: float, log: Log) -> None:
        """A 4xx, a lost connection before the dot, or (after it) an unknown outcome."""
        error = str(exc)
        self._failed("transient")
        if not isinstance(exc, UnknownOutcome):
            self._retry(cfg, claim, "released", error, now, log)
        elif cfg.send.on_unknown_outcome == "hold":
            claim.hold(error)
            log.warning("held", reason=error)
        else:
            self._retry(cfg, claim, "unknown", error, now, log)

    def permanent(
        self, cfg: Config, claim: Claim, exc: PermanentFailure, p: Prepared, log: Log
    ) -> None:
        error = str(exc)
        self._failed("permanent")
        claim.note_failure("refused", error)
        claim.fail("released", error)
        log.error("message_failed", reason=error)
        failures = bounces.failures_for(p.recipients, exc)
        bounces.notify_failed(cfg, self._outbox, claim, failures, log, self._clock.time())

    def _retry(
        self,
        cfg: Config,
        claim: Claim,
        status: AttemptStatus,
        error: str,
        now: float,
        log: Log,
        *,
        done: tuple[str, ...] | None = None,
        reply: str = "",
    ) -> None:
        """Defer a claimed message on send.retry_intervals, or give it up."""
        send = cfg.send
        tries = claim.tries + 1
        first = claim.first_try or now
        if given_up(first, now, send.give_up_after):
            reason = (
                f"gave up after {format_seconds(now - first)} and {tries} attempts "
                f"(send.give_up_after is {format_seconds(send.give_up_after)}); "
                f"last error: {error}"
            )
            if done is None:
                claim.note_failure("deferred", error)
                claim.fail(status, reason)
            else:
                claim.partly(reply, done, reason, None)
            log.error("message_failed", reason=reason)
            old = claim.info.done_rcpts if claim.info else ()
            have = old + tuple(r for r in (done or ()) if r not in old)
            bounces.notify_failed(
                cfg, self._outbox, claim, None, log, self._clock.time(), error=error, done=have
            )
            return
        interval = retry_interval(tries, send.retry_intervals)
        if done is None:
            claim.defer(status, error, now + interval)
        else:
            claim.partly(reply, done, error, now + interval)
        log.warning("deferred", error=error, tries=tries, retry_in=interval)
