"""One send in flight, from its claim to its settlement: a small state machine.

::

    claimed --reserve()--> reserved --sent()---------> accepted --(recorded)--> done
       |                      |------defer()/hold()/fail()/partly()/give_back()--> settled
       |--done_already()/give_back()---------------------------------------------> settled

- **claimed**: the file was renamed into `active/` (`Outbox.claim()`); it can
  no longer be cancelled.
- **reserved**: the send is counted against the limit, durably, before the
  server may take the message (`reserve()`).
- **accepted**: the server took it for every recipient. Its record waits for
  the next reservation's commit, or is written on its own before the sender
  waits (`Outbox.settle()`): this is how one synced commit per message both
  records a send and reserves the next. The Outbox holds it meanwhile.
- **settled**: the outcome is written and the file has moved on.

A step called out of order raises `OutOfOrder` (a bug, never a user's
problem). Each settling step is a `Settlement`: a typed record of what to
write to the state store and where the file goes, applied in one place. If
storage refuses it (a full disk), the Outbox keeps the Claim with its
Settlement and applies it again once storage is back; the message waits in
`active/` meanwhile, never lost and never sent twice.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal, Protocol

from exactmaild.core.log import Log
from exactmaild.core.states import DEFERRED, FAILED, HOLD, State
from exactmaild.outbox.stamp import Born
from exactmaild.store.history import Delivery, RcptStatus
from exactmaild.store.state import MessageInfo


class OutOfOrder(RuntimeError):
    """A Claim step was called in a phase that does not allow it: a bug."""


class Phase(enum.Enum):
    CLAIMED = "claimed"
    RESERVED = "reserved"
    ACCEPTED = "accepted"
    SETTLED = "settled"


# How an attempt's row is settled: "sent" (the server took it), "unknown"
# (maybe: stays counted), "released" (definitely not: the allowance comes back).
AttemptStatus = Literal["sent", "unknown", "released"]


@dataclass
class Settlement:
    """What finishes a claimed message: its attempt's row, and where the file goes.

    `to` is the state the file moves to; None removes it (sent, or sent
    already). `back` sends it back unblamed to where it came from. The
    `*_written` flags record progress, so that applying it again after a
    storage failure never gives the allowance back twice.
    """

    to: State | None
    attempt: AttemptStatus | None = None  # None: nothing was reserved
    detail: str = ""  # the attempt's detail: the server's reply, or the error
    error: str = ""  # deferred/: the message's last error; failed/: the reason
    retry_at: float = 0.0  # deferred/: the next try
    done_rcpts: tuple[str, ...] = ()  # recipients that have it already
    back: bool = False
    at: float | None = None  # when it was decided (the record's time)
    attempt_written: bool = False
    rcpts_written: bool = False
    record_written: bool = False


class Owner(Protocol):
    """What a Claim asks of the Outbox that made it."""

    def _reserve(self, claim: Claim, message_id: str, units: int, now: float) -> int: ...
    def _accepted(self, claim: Claim) -> None: ...
    def _about(self, claim: Claim, raw: bytes) -> None: ...
    def _apply(self, claim: Claim, s: Settlement) -> None: ...


@dataclass(frozen=True)
class Queued:
    """A message waiting in `new/` or `deferred/`, read and ready to prepare."""

    name: str
    src: State
    raw: bytes
    info: MessageInfo | None  # its retry state, if it has any
    born: Born | None = None  # its file's identity: its Message-ID and Date (outbox/stamp.py)


class Claim:
    """One message claimed for sending: what the sender does to it, step by step."""

    def __init__(self, outbox: Owner, queued: Queued, log: Log) -> None:
        self._outbox = outbox
        self.name = queued.name
        self.src = queued.src
        self.info = queued.info
        self.log = log
        self.phase = Phase.CLAIMED
        self.attempt = 0
        self.units = 0
        self.reserved_at = 0.0
        self.accepted_at = 0.0
        self.reply = ""
        self.recipients = 0  # how many accepted it (for the log)
        # For the history record (outbox.record): the header section, who
        # submitted it and when, what each recipient got in this attempt,
        # and what the recipients not named there got (a whole-message failure).
        self.head = b""
        self.user = ""
        self.queued_at: float | None = None
        self.message_id = ""
        self.deliveries: tuple[Delivery, ...] = ()
        self.rest: tuple[RcptStatus, str] | None = None
        outbox._about(self, queued.raw)

    def __repr__(self) -> str:
        return f"<Claim {self.name} {self.phase.value}>"

    @property
    def tries(self) -> int:
        """Temporary failures before this attempt."""
        return self.info.tries if self.info else 0

    @property
    def first_try(self) -> float | None:
        return self.info.first_try if self.info else None

    def record(self) -> Settlement:
        """The record of the accepted send, as the next reservation writes it."""
        return Settlement(None, "sent", self.reply, at=self.accepted_at)

    def _expect(self, *phases: Phase) -> None:
        if self.phase not in phases:
            raise OutOfOrder(f"{self!r}: expected {' or '.join(p.value for p in phases)}")

    # -- what the server said, for the history --------------------------------------

    def note_result(
        self,
        reply: str,
        accepted: tuple[str, ...],
        refused: dict[str, tuple[int, str]],
        deferred: dict[str, tuple[int, str]],
        at: float,
    ) -> None:
        """What each recipient got in this attempt (before the step that settles it)."""
        out = [Delivery(r, "accepted", reply, at) for r in accepted]
        out += [Delivery(r, "refused", f"{c} {t}", at) for r, (c, t) in refused.items()]
        out += [Delivery(r, "deferred", f"{c} {t}", at) for r, (c, t) in deferred.items()]
        self.deliveries = tuple(out)

    def note_failure(self, status: RcptStatus, reply: str) -> None:
        """The whole message failed: every recipient not named so far got `status`."""
        self.rest = (status, reply)

    # -- the steps ---------------------------------------------------------------

    def reserve(self, message_id: str, units: int, now: float) -> None:
        """Count the send against the limit, durably, in one synced commit that
        also records the previous accepted send. Raises on a storage failure,
        after giving this message back to the queue (or keeping that for later)."""
        self._expect(Phase.CLAIMED)
        self.message_id = message_id
        self.attempt = self._outbox._reserve(self, message_id, units, now)
        self.units, self.reserved_at = units, now
        self.phase = Phase.RESERVED

    def sent(self, reply: str, recipients: int, now: float) -> None:
        """The server took it for every recipient: the record waits for the next
        commit (Outbox.settle() writes it if none comes)."""
        self._expect(Phase.RESERVED)
        self.reply, self.recipients, self.accepted_at = reply, recipients, now
        self.phase = Phase.ACCEPTED
        self._outbox._accepted(self)

    def partly(self, reply: str, done: tuple[str, ...], error: str, retry_at: float | None) -> None:
        """Sent to some recipients, deferred for the rest: they are tried again
        at `retry_at` (None: given up, to failed/ with `error` as the reason).
        The ones that have it, or refused it for good, never get it again."""
        self._expect(Phase.RESERVED)
        to: State = FAILED if retry_at is None else DEFERRED
        self._settle(Settlement(to, "sent", reply, error, retry_at or 0.0, done))

    def sent_to_some(self, reply: str, recipients: int) -> None:
        """Sent; some recipients refused it for good (a notice tells of them)."""
        self._expect(Phase.RESERVED)
        self.recipients = recipients
        self._settle(Settlement(None, "sent", reply))

    def defer(self, status: AttemptStatus, error: str, retry_at: float) -> None:
        """A temporary failure (or an unknown outcome, with on_unknown_outcome:
        retry): try again at `retry_at`."""
        self._expect(Phase.RESERVED)
        self._settle(Settlement(DEFERRED, status, error, error, retry_at))

    def hold(self, error: str) -> None:
        """An unknown outcome, parked for a person (on_unknown_outcome: hold)."""
        self._expect(Phase.RESERVED)
        self._settle(Settlement(HOLD, "unknown", error))

    def fail(self, status: AttemptStatus, reason: str) -> None:
        """Failed for good: to failed/ with its reason (status: of the attempt
        made, if one was)."""
        self._expect(Phase.CLAIMED, Phase.RESERVED)
        attempt = status if self.phase is Phase.RESERVED else None
        self._settle(Settlement(FAILED, attempt, reason, reason))

    def give_back(self, error: str = "") -> None:
        """Not the message's fault (an account problem): back where it came
        from, unblamed, with its allowance given back."""
        self._expect(Phase.CLAIMED, Phase.RESERVED)
        attempt: AttemptStatus | None = "released" if self.phase is Phase.RESERVED else None
        self._settle(Settlement(self.src, attempt, error, back=True))

    def done_already(self) -> None:
        """Every recipient has it already (a partial send, then a crash)."""
        self._expect(Phase.CLAIMED)
        self._settle(Settlement(None))
        self.log.info("sent_already")

    def _settle(self, s: Settlement) -> None:
        self.phase = Phase.SETTLED
        self._outbox._apply(self, s)


__all__ = ["AttemptStatus", "Claim", "OutOfOrder", "Phase", "Queued", "Settlement"]
