"""What a waiting message will count against the limit, for the forecast.

`send.limit_counts: messages` counts 1 a message and needs nothing read;
`recipients` counts the recipients still to be sent to, which takes the
message's headers: `Weights` reads each message once and remembers the
figure (a queued file never changes), forgetting names that left the queue.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Collection

from exactmaild.config.model import Config
from exactmaild.core.states import State
from exactmaild.outbox import Spool
from exactmaild.send import message as msgmod
from exactmaild.store.state import StateStore


def units_of(raw: bytes, counts: str, done: Collection[str] = ()) -> int:
    """The units a message counts: 1, or its recipients not yet sent to (at least 1)."""
    if counts == "messages":
        return 1
    head = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0] + b"\n\n"
    return max(1, len([r for r in msgmod.recipients(msgmod.parse(head)) if r not in done]))


class Weights:
    """Units by queue id, each message read at most once."""

    def __init__(self, spool: Spool, state: StateStore) -> None:
        self.spool = spool
        self.state = state
        self._known: dict[str, int] = {}

    def of(self, name: str, src: State, cfg: Config) -> int:
        counts = cfg.send.limit_counts
        if counts == "messages":
            return 1
        if name not in self._known:
            units = 1  # unreadable now: the sender meets it, and fails it if it must
            with contextlib.suppress(OSError, ValueError, sqlite3.Error):
                info = self.state.message(name)
                raw = self.spool.read(src, name, cfg.spool.max_message_size)
                units = units_of(raw, counts, info.done_rcpts if info else ())
            self._known[name] = units
        return self._known[name]

    def keep_only(self, names: Collection[str]) -> None:
        """Forget the figures of messages that left the queue."""
        if len(self._known) > len(names):
            self._known = {n: u for n, u in self._known.items() if n in names}
