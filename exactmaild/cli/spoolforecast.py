"""The forecast of the spool as it stands on disk, for `status` and `queue list`.

Read from the spool directories and the durable state alone (never from the
daemon's memory): each waiting message weighed and in its lane as the sender
has it, mail for later at its Deferred-Delivery time, run through the same
`core.forecast` that paces real sends.
"""

from __future__ import annotations

import contextlib

from exactmaild.config.model import Config
from exactmaild.core.forecast import Forecast, Waiting, forecast
from exactmaild.core.limits import Ledger
from exactmaild.outbox.spool import Spool
from exactmaild.store.messages import MessageInfo


def waiting_on_disk(cfg: Config, infos: dict[str, MessageInfo], now: float) -> list[Waiting]:
    """The spool's waiting messages as the sender has them: new/ oldest
    first, deferred/ by next try, later/ by the time in each message's
    Deferred-Delivery header, each weighed and in its lane."""
    from exactmaild.outbox.later import head_of
    from exactmaild.send.weights import units_of

    queue: list[Waiting] = []
    if not cfg.spool.dir.is_dir():
        return queue
    spool = Spool(cfg.spool.dir, create=False)
    counts = cfg.send.limit_counts

    def units(state: str, name: str) -> int:
        if counts == "messages":
            return 1
        info = infos.get(name)
        with contextlib.suppress(OSError, ValueError):
            raw = spool.read(state, name, cfg.spool.max_message_size)
            return units_of(raw, counts, info.done_rcpts if info else ())
        return 1

    new = spool.queued_oldest_first()
    queue = [Waiting(n, units("new", n), lane=spool.lane(n, "new")) for n in new]
    with contextlib.suppress(FileNotFoundError):
        for n in spool.names("deferred"):
            info = infos.get(n)
            retry = info.next_try if info and info.next_try else now
            lane = spool.lane(n, "deferred")
            queue.append(Waiting(n, units("deferred", n), retry_at=retry, lane=lane))
    with contextlib.suppress(FileNotFoundError):  # a spool from before mail for later
        for n in spool.names("later"):
            at, lane = head_of(spool, "later", n)
            at = now if at is None else at
            queue.append(Waiting(n, units("later", n), scheduled_at=at, lane=lane))
    return queue


def forecast_from_disk(
    cfg: Config,
    now: float,
    ledger: Ledger,
    infos: dict[str, MessageInfo],
    *,
    last_send: float | None,
    paused_until: float | None = None,
    storage_ok: bool = True,
    flush: bool = False,
    quota: bool = False,
    queue: list[Waiting] | None = None,
) -> Forecast:
    """The forecast of the spool's queue as it stands (`queue`: what
    `waiting_on_disk()` read already, else read here). `quota`: the pause
    is for the provider's own quota."""
    from exactmaild.send.blocking import pacing_of

    if queue is None:
        queue = waiting_on_disk(cfg, infos, now)
    pacing = pacing_of(cfg, ledger)  # the sender's own settings, lanes included
    return forecast(
        now,
        ledger,
        queue,
        pacing,
        last_send=last_send,
        paused_until=paused_until,
        storage_ok=storage_ok,
        flush=flush,
        quota=quota,
    )
