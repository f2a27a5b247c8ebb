"""What holds sending back and when the queue goes: the sender's view of the forecast.

The sending thread reports, at each step, what the next message waits for;
`Blocking` asks the pure core (`core.forecast.blocked`, `transition`) what
that means and logs the window closing and opening and the cap reached and
reset while mail waits: one line per change, never one per wake-up.
`with_forecast()` adds the forecast's answers to the levels the metrics,
STATUS= and `status` read.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

from exactmaild.config.model import Config
from exactmaild.core.forecast import Blocker, Pacing, Waiting, blocked, forecast, transition
from exactmaild.core.limits import Ledger
from exactmaild.core.log import Log
from exactmaild.outbox import Snapshot


def pacing_of(cfg: Config, ledger: Ledger) -> Pacing:
    """The pacing settings of `cfg`, in the ledger's timezone."""
    send, sched = cfg.send, cfg.schedule
    return Pacing(send.delay, send.immediately, ledger.tz, sched.days, sched.window)


def with_forecast(
    levels: Snapshot,
    now: float,
    ledger: Ledger,
    queue: Sequence[Waiting],
    pacing: Pacing,
    last_send: float | None,
    paused_until: float | None,
) -> Snapshot:
    """`levels` with the forecast of `queue` from `now` added."""
    f = forecast(now, ledger, queue, pacing, last_send=last_send, paused_until=paused_until,
                 storage_ok=levels.storage_ok)  # fmt: skip
    return dataclasses.replace(
        levels,
        blocked_by=f.blocked_by,
        resumes_at=f.resumes_at,
        next_send_at=f.next_send_at,
        queue_done_at=f.queue_done_at,
    )


class Blocking:
    def __init__(self, log: Log) -> None:
        self.log = log
        self.state: tuple[Blocker | None, float | None] = (None, None)

    def clear(self) -> None:
        """Nothing waits, so nothing is held back (and nothing to log)."""
        self.state = (None, None)

    def note(
        self, now: float, units: int | None, pacing: Pacing, ledger: Ledger, queued: int
    ) -> None:
        """`units`: the next message's, if it must wait; None if it goes now."""
        after = blocked(now, ledger=ledger, units=units, pacing=pacing)
        event = transition(self.state, after)
        self.state = after
        if event is not None:
            until = after[1]
            self.log.info(
                event,
                queued=queued,
                until=None
                if until is None
                else dt.datetime.fromtimestamp(until, pacing.tz).isoformat(),
            )
