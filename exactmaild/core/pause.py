"""The account pause: the whole queue waits after an account-level refusal.

A refused login, a quota or a rate-limit reply is never the message's fault:
no message is failed for it, and instead of trying the next message at once
(and the next, each refused the same way) the queue pauses, one step of
`send.account_pause` per refusal in a row, the last step repeating. The
provider's own quota is the exception: it frees when the provider's limit
window does (`quota_frees_at()`), so the pause lasts until then. A send
that succeeds ends the streak; `flush` lifts the pause. `ReplyStreak` tells
the same temporary reply to message after message: the server, not the
messages, is in trouble. Pure: every call takes `now`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exactmaild.core.limits import Ledger
from exactmaild.core.retry import retry_interval


@dataclass
class AccountPause:
    until: float | None = None
    reason: str = ""
    streak: int = 0  # refusals in a row
    kind: str = ""  # the AccountFailure's kind: "provider_quota" is a blocker of its own

    def active(self, now: float) -> bool:
        return self.until is not None and now < self.until

    def refused(
        self, reason: str, now: float, steps: tuple[float, ...], *, kind: str = "refused"
    ) -> float:
        """One more refusal: pause (longer), and return how long for."""
        wait = retry_interval(self.streak + 1, steps)
        return self.until_time(reason, now, now + wait, kind=kind)

    def until_time(self, reason: str, now: float, until: float, *, kind: str) -> float:
        """One more refusal: pause until `until`, and return how long for."""
        self.streak += 1
        self.reason, self.kind, self.until = reason, kind, until
        return until - now

    def lift(self) -> None:
        """`flush`: try now, keeping the streak (a new refusal pauses longer)."""
        self.until = None

    def resumed(self) -> int:
        """A send went through: the streak ends. Returns how long it was."""
        streak, self.streak, self.until = self.streak, 0, None
        return streak


def quota_frees_at(ledger: Ledger, now: float, at_least: float) -> float:
    """When the provider's own quota frees, by the ledger's limit window:
    calendar_day at the next reset, rolling_24h when the oldest counted send
    ages out. Never sooner than `at_least` from now: a quota used by mail the
    ledger never saw (webmail, phones) is not freed by our oldest send, and
    must not turn into a retry every few seconds."""
    return max(ledger.reset_at(now), now + at_least)


@dataclass
class ReplyStreak:
    """The same temporary reply ("451 4.3.0") to different messages in a row."""

    reply: str | None = None
    messages: set[str] = field(default_factory=set)

    def note(self, reply: str, message: str) -> int:
        """One more message got `reply`; returns how many different ones in a row."""
        if reply != self.reply:
            self.reply, self.messages = reply, set()
        self.messages.add(message)
        return len(self.messages)

    def clear(self) -> None:
        """A send went through, or another answer came: the streak is over."""
        self.reply, self.messages = None, set()
