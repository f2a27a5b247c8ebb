"""The account pause as the sending thread keeps it, and its stored copy.

What a verdict does to the whole queue (what it does to its own message is
`send.outcomes`'s):

- an account problem (an `AccountFailure`, by the reply table in
  `send.replies`) pauses sending: until the provider's limit window frees
  for "provider_quota", one step of send.account_pause per refusal in a row
  otherwise;
- the same temporary reply ("451 4.3.0") to SAME_REPLY_LIMIT different
  messages in a row says the server is in trouble: the account pauses too,
  so that the rest of the queue is not tried one by one;
- a send that goes through, `flush`, a reload of the server or account, or
  a restart ends the pause.

The stored copy (`pause_reason`, `pause_until`, `pause_kind` in the state)
is what `exactmaild status` reads: written when the pause starts, removed
when it ends, so that status never says PAUSED after a resume.
"""

from __future__ import annotations

import contextlib
import sqlite3

from exactmaild.core.counters import Labelled
from exactmaild.core.errors import AccountFailure, TemporaryFailure, UnknownOutcome
from exactmaild.core.limits import Ledger
from exactmaild.core.log import Log
from exactmaild.core.pause import AccountPause, ReplyStreak, quota_frees_at
from exactmaild.core.retry import retry_interval
from exactmaild.store.state import StateStore

# Different messages answered with the same temporary reply, in a row, that
# pause the account.
SAME_REPLY_LIMIT = 3


class Pausing:
    def __init__(self, state: StateStore, log: Log, failures: Labelled) -> None:
        self.pause = AccountPause()
        self._state = state
        self._log = log
        self._failures = failures
        self._streak = ReplyStreak()
        self._stored = True  # a previous run may have left one: cleared at start

    @property
    def quota(self) -> bool:
        """The pause is for the provider's own quota (the "provider_quota" blocker)."""
        return self.pause.kind == "provider_quota"

    def refused(
        self, failure: AccountFailure, now: float, steps: tuple[float, ...], ledger: Ledger
    ) -> None:
        """An account problem: pause, for as long as its kind says."""
        reason, kind = str(failure), failure.kind
        first = not self.pause.streak or reason != self.pause.reason
        self._streak.clear()
        if kind == "provider_quota":
            at_least = retry_interval(1, steps)
            wait = self.pause.until_time(
                reason, now, quota_frees_at(ledger, now, at_least), kind=kind
            )
        else:
            wait = self.pause.refused(reason, now, steps, kind=kind)
        self._failures.labels("account").inc()
        if first:
            self._log.error("sending_paused", reason=reason, kind=kind, retry_in=wait)
        self._store()

    def temporary(
        self, failure: TemporaryFailure, message: str, now: float, steps: tuple[float, ...]
    ) -> bool:
        """A message was deferred for `failure`; True if that paused the account
        (the same reply to SAME_REPLY_LIMIT different messages in a row)."""
        if failure.reply is None or isinstance(failure, UnknownOutcome):
            self._streak.clear()
            return False
        n = self._streak.note(failure.reply, message)
        if n < SAME_REPLY_LIMIT:
            return False
        reason = (
            f"the server answered {failure.reply} to {n} different messages in a row: "
            f"it is in trouble, not the messages; pausing instead of trying the rest "
            f"one by one (last: {failure})"
        )
        wait = self.pause.refused(reason, now, steps, kind="server_trouble")
        self._log.error("sending_paused", reason=reason, kind="server_trouble", retry_in=wait)
        self._store()
        return True

    def other(self) -> None:
        """A verdict that is not a temporary reply (a permanent refusal): no streak."""
        self._streak.clear()

    def succeeded(self) -> None:
        """A send went through: the streaks end, and any stored pause with them."""
        self._streak.clear()
        if streak := self.pause.resumed():
            self._log.info("sending_resumed", paused_for=streak)
        self.forget_stored()

    def lift(self) -> None:
        """`flush` or a reload: try now (a new refusal still pauses longer)."""
        self.pause.lift()
        self.forget_stored()

    def forget_stored(self) -> None:
        """No pause now: remove the stored one, so `status` does not show it."""
        if not self._stored:
            return
        with contextlib.suppress(OSError, sqlite3.Error):
            self._state.put(pause_reason=None, pause_until=None, pause_kind=None)
            self._stored = False

    def _store(self) -> None:
        p = self.pause
        with contextlib.suppress(OSError, sqlite3.Error):
            self._state.put(pause_reason=p.reason, pause_until=str(p.until), pause_kind=p.kind)
        self._stored = True
