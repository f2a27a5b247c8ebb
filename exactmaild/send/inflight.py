"""One message in flight: its Claim and its begun transaction, up to the verdict.

The order the Outbox's promises rest on, for one message:

1. claimed, and MAIL/RCPT/DATA sent (`InFlight.begin()`): the server cannot
   take anything yet, so every failure is a known one;
2. reserved (`reserve()`): one synced commit counts this send and records
   the previous accepted one, while the server answers step 1;
3. the body and its final dot (`deliver()`), the next message's MAIL/RCPT/DATA
   in the same write where the server pipelines and the next may go at once;
4. the verdict, for `send.outcomes` to settle; a recipient list the
   transaction had no room for goes on in the next ones (`send.split`),
   under the same reservation.

A transaction begun with the previous final dot but never reserved is given
back (`give_back()`) when it cannot go on: that connection went with the
previous message, or the queue pauses. Nothing of it could be taken, so it
goes back to the queue unsent and uncounted, never an unknown outcome.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from exactmaild.core.errors import AccountFailure, PermanentFailure, TemporaryFailure
from exactmaild.core.log import Log
from exactmaild.outbox import Claim, Outbox, is_storage_problem
from exactmaild.send.jobs import Job
from exactmaild.send.split import finish
from exactmaild.send.transport import SendResult, Transaction

# What a send ends in: the server's acceptance, or an error of the tree.
Verdict = SendResult | AccountFailure | TemporaryFailure | PermanentFailure
Begin = Callable[[str, tuple[str, ...], bytes], Transaction]


@dataclass
class InFlight:
    job: Job
    claim: Claim
    log: Log
    now: float  # when it was decided: the reservation's time
    tx: Transaction | None = None
    early: AccountFailure | TemporaryFailure | PermanentFailure | None = None

    @classmethod
    def begin(cls, job: Job, claim: Claim, log: Log, now: float, begin: Begin) -> InFlight:
        """Send MAIL/RCPT/DATA; a failure is kept and raised after the
        reservation, as the attempt's outcome."""
        p = job.prepared
        try:
            return cls(job, claim, log, now, begin(p.sender, p.recipients, p.data))
        except (AccountFailure, TemporaryFailure, PermanentFailure) as exc:
            return cls(job, claim, log, now, early=exc)

    @classmethod
    def follow(
        cls, outbox: Outbox, job: Job, log: Log, now: float, tx: Transaction
    ) -> InFlight | None:
        """Claim `job` and begin it in the same write as `tx`'s final dot. None
        if it was cancelled meanwhile, or if the write failed: then `tx`'s
        outcome is unknown and this message goes back unsent."""
        try:
            claim = outbox.claim(job.queued, log)
        except OSError as exc:
            if not is_storage_problem(exc):
                raise
            return None
        if claim is None:
            return None
        f = cls.begin(job, claim, log, now, tx.follow)
        if f.early is not None:
            f.give_back()
            return None
        return f

    def reserve(self) -> None:
        """Count the send, durably, before anything the server could take goes out."""
        try:
            self.claim.reserve(self.job.prepared.message_id, self.job.units, self.now)
        except BaseException:
            if self.tx is not None:
                self.tx.abandon()  # nothing the server could take went out
            raise
        self.log.debug("sending", recipients=len(self.job.prepared.recipients))

    def deliver(
        self,
        on_dot: Callable[[], None],
        follow: Callable[[Transaction], InFlight | None],
        meanwhile: Callable[[], None],
    ) -> tuple[Verdict, InFlight | None]:
        """The body and its final dot, then the verdict. `on_dot` runs once the
        dot is due to go (or the send failed before it), `follow` may begin
        the next message in the same write, `meanwhile` runs while the server
        reads. Returns the verdict and what `follow` began."""
        nxt: InFlight | None = None
        try:
            try:
                if self.early is not None:
                    raise self.early
                assert self.tx is not None
                self.tx.end()  # the reservation is durable: the body and its dot may go
            finally:
                on_dot()
            nxt = follow(self.tx)
            meanwhile()
            return finish(self.tx, self.tx.reply(), self.claim.progress), nxt
        except (AccountFailure, TemporaryFailure, PermanentFailure) as exc:
            return exc, nxt

    def give_back(self) -> None:
        """Begun with the previous final dot, never reserved, and unable to go
        on: back to the queue, unsent and uncounted."""
        if self.tx is not None:
            self.tx.abandon()
        try:
            self.claim.give_back()
        except (OSError, sqlite3.Error) as exc:
            # The Outbox keeps the settlement and applies it once storage is back.
            if not is_storage_problem(exc):
                raise
        self.log.debug("given_back_unsent")
