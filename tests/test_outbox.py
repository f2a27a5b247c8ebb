"""The Outbox and its Claims: a message's life in one owner.

Real spool directories and a real state store on disk; the clock is the
only thing injected."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from exactmaild.config.model import Send
from exactmaild.core.limits import DAY
from exactmaild.outbox import Claim, Outbox, OutOfOrder, Phase, Spool
from exactmaild.outbox.pruning import ATTEMPTS_KEPT
from exactmaild.store.state import StateStore
from tests.helpers import message


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


class Log:
    """Keeps what was logged, as structlog's bound loggers are called."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def bind(self, **kw: Any) -> Log:
        return self

    def _log(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))

    debug = info = warning = error = exception = _log


T0 = 1_800_000_000.0  # 2027-01-15, a Friday


def _outbox(tmp_path: Path, clock: Clock, **send: Any) -> tuple[Outbox, Spool, StateStore]:
    spool = Spool(tmp_path / "spool")
    store = StateStore(tmp_path / "state")
    box = Outbox(
        spool,
        store,
        send=Send(**send),
        timezone="Europe/London",
        log=Log(),
        clock=clock,
    )
    box.recover()
    return box, spool, store


def _claim(box: Outbox, spool: Spool, n: int, now: float) -> Claim:
    spool.submit(message(n))
    box.arrived([None])  # as after an inotify overflow: read new/ again
    q = box.next_due(now, 1 << 20)
    assert q is not None
    claim = box.claim(q, Log())
    assert claim is not None
    return claim


def test_a_claim_refuses_steps_out_of_order(tmp_path: Path) -> None:
    clock = Clock(T0)
    box, spool, _ = _outbox(tmp_path, clock)
    claim = _claim(box, spool, 1, T0)
    assert claim.phase is Phase.CLAIMED
    with pytest.raises(OutOfOrder):
        claim.sent("250 ok", 1, T0)  # the send was never reserved
    with pytest.raises(OutOfOrder):
        claim.defer("released", "451 later", T0 + 60)
    claim.reserve("<1@x>", 1, T0)
    with pytest.raises(OutOfOrder):
        claim.reserve("<1@x>", 1, T0)  # twice
    with pytest.raises(OutOfOrder):
        claim.done_already()  # reserved: it went to the server
    claim.defer("released", "451 later", T0 + 60)
    assert claim.phase is Phase.SETTLED
    with pytest.raises(OutOfOrder):
        claim.give_back()  # settled already
    assert spool.names("deferred") == [claim.name]


def test_the_next_reservation_records_the_previous_send(tmp_path: Path) -> None:
    clock = Clock(T0)
    box, spool, store = _outbox(tmp_path, clock)
    first = _claim(box, spool, 1, T0)
    first.reserve("<1@x>", 1, T0)
    first.sent("250 ok", 1, T0)
    # Accepted, not yet recorded: still counted in flight, still in active/.
    assert store.last_attempt(first.name).status == "inflight"  # type: ignore[union-attr]
    assert spool.names("active") == [first.name]
    second = _claim(box, spool, 2, T0 + 1)
    second.reserve("<2@x>", 1, T0 + 1)
    # One commit recorded the first and reserved the second ...
    assert store.last_attempt(first.name).status == "sent"  # type: ignore[union-attr]
    assert store.last_attempt(second.name).status == "inflight"  # type: ignore[union-attr]
    # ... and the first file goes only at tidy(), while the server reads the second.
    assert sorted(spool.names("active")) == sorted([first.name, second.name])
    box.tidy()
    assert spool.names("active") == [second.name]
    assert box.ledger.used(T0 + 1) == 2


def test_settle_records_the_waiting_send_on_its_own(tmp_path: Path) -> None:
    clock = Clock(T0)
    box, spool, store = _outbox(tmp_path, clock)
    claim = _claim(box, spool, 1, T0)
    claim.reserve("<1@x>", 1, T0)
    claim.sent("250 ok", 1, T0)
    box.settle()
    assert store.last_attempt(claim.name).status == "sent"  # type: ignore[union-attr]
    assert spool.names("active") == []
    box.settle()  # nothing waits: a no-op


def test_a_give_back_returns_the_allowance_and_the_place(tmp_path: Path) -> None:
    clock = Clock(T0)
    box, spool, store = _outbox(tmp_path, clock, daily_limit=5)
    claim = _claim(box, spool, 1, T0)
    spool.submit(message(2))
    box.arrived([None])
    claim.reserve("<1@x>", 1, T0)
    assert box.ledger.used(T0) == 1
    claim.give_back("535 login refused")
    assert box.ledger.used(T0) == 0
    assert store.last_attempt(claim.name).status == "released"  # type: ignore[union-attr]
    q = box.next_due(T0, 1 << 20)
    assert q is not None and q.name == claim.name  # first again, unblamed


def test_recovery_requeues_a_claim_and_removes_a_recorded_send(tmp_path: Path) -> None:
    clock = Clock(T0)
    box, spool, _ = _outbox(tmp_path, clock)
    sent = _claim(box, spool, 1, T0)
    sent.reserve("<1@x>", 1, T0)
    sent.sent("250 ok", 1, T0)
    claimed = _claim(box, spool, 2, T0 + 1)
    claimed.reserve("<2@x>", 1, T0 + 1)  # records the first: its file stays in active/
    # The daemon dies here. The next start-up:
    again, _, _ = _outbox(tmp_path, clock)
    assert spool.names("active") == []
    assert spool.names("new") == [claimed.name]
    assert again.ledger.used(T0 + 2) == 2  # the unknown outcome stays counted


def test_400_days_at_2000_sends_a_day_stay_bounded(tmp_path: Path) -> None:
    """maintain(), which the sender calls every step, keeps the attempts table
    and the ledger to the days a limit window can still count."""
    per_day = 2000
    clock = Clock(T0)
    box, _, store = _outbox(tmp_path, clock, daily_limit=per_day, limit_window="rolling_24h")
    db = sqlite3.connect(store.path)
    sizes: dict[int, int] = {}
    for day in range(400):
        start = T0 + day * DAY
        times = [start + i * (DAY / per_day) for i in range(per_day)]
        # A day of settled sends, as the sender records them (in bulk, for speed).
        with db:
            db.executemany(
                "INSERT INTO attempts (queue_id, message_id, started, units, status, finished)"
                " VALUES (?, '', ?, 1, 'sent', ?)",
                [(f"q{day}.{i}", t, t) for i, t in enumerate(times)],
            )
        for t in times:
            box.ledger.record(t, 1)
        clock.now = start + DAY
        box.maintain(clock.now)
        rows = db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0]
        assert rows <= (ATTEMPTS_KEPT / DAY + 1) * per_day, (day, rows)
        assert len(box.ledger) <= 2 * per_day + 1, (day, len(box.ledger))
        if day in (30, 399):
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            sizes[day] = store.path.stat().st_size
    db.close()
    assert rows >= (ATTEMPTS_KEPT / DAY) * per_day  # nothing pruned that may still count
    assert sizes[399] <= sizes[30] * 1.2, sizes
