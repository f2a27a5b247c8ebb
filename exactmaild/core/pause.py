"""The account pause: the whole queue waits after an account-level refusal.

A refused login, a quota or a rate-limit reply is never the message's fault:
no message is failed for it, and instead of trying the next message at once
(and the next, each refused the same way) the queue pauses, one step of
`send.account_pause` per refusal in a row, the last step repeating. A send
that succeeds ends the streak; `flush` lifts the pause. Pure: every call
takes `now`.
"""

from __future__ import annotations

from dataclasses import dataclass

from exactmaild.core.retry import retry_interval


@dataclass
class AccountPause:
    until: float | None = None
    reason: str = ""
    streak: int = 0  # refusals in a row

    def active(self, now: float) -> bool:
        return self.until is not None and now < self.until

    def refused(self, reason: str, now: float, steps: tuple[float, ...]) -> float:
        """One more refusal: pause (longer), and return how long for."""
        self.streak += 1
        wait = retry_interval(self.streak, steps)
        self.reason = reason
        self.until = now + wait
        return wait

    def lift(self) -> None:
        """`flush`: try now, keeping the streak (a new refusal pauses longer)."""
        self.until = None

    def resumed(self) -> int:
        """A send went through: the streak ends. Returns how long it was."""
        streak, self.streak, self.until = self.streak, 0, None
        return streak
