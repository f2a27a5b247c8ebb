"""The sent history: each finished message's record, from the Outbox's
settlement to the state store, pruned by age; and the operator's requests
to the running daemon's queue index (send-now, the re-read after a batch
operation).

Real spool directories and a real state store on disk; the clock is the only
thing injected. The command line and the daemon are tests/test_queue_ops.py's.
"""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

import pytest

from exactmaild.config.load import parse
from exactmaild.config.model import Send
from exactmaild.core.errors import ConfigError
from exactmaild.core.limits import DAY
from exactmaild.outbox import Claim, Outbox, Spool
from exactmaild.store.state import DB_NAME, StateStore
from tests.test_outbox import Clock, Log

T0 = 1_800_000_000.0  # 2027-01-15, a Friday


def _outbox(
    tmp_path: Path, clock: Clock, history_days: int = 30
) -> tuple[Outbox, Spool, StateStore]:
    spool = Spool(tmp_path / "spool")
    store = StateStore(tmp_path / "state")
    box = Outbox(
        spool,
        store,
        send=Send(),
        timezone="Europe/London",
        log=Log(),
        clock=clock,
        history_days=history_days,
    )
    box.recover()
    return box, spool, store


def _msg(to: str, subject: str = "Appointment reminder", extra: str = "") -> bytes:
    mid = f"<{abs(hash(to + subject))}@x>"
    return f"To: {to}\nSubject: {subject}\nMessage-ID: {mid}\n{extra}\nHello.\n".encode()


def _claim(box: Outbox, spool: Spool, raw: bytes, now: float) -> Claim:
    name = spool.submit(raw)
    box.arrived([name])
    q = box.next_due(now, 1 << 20)
    assert q is not None and q.name == name
    claim = box.claim(q, Log())
    assert claim is not None
    return claim


def test_a_send_is_recorded_in_the_commit_that_records_it(tmp_path: Path) -> None:
    clock = Clock(T0)
    box, spool, store = _outbox(tmp_path, clock)
    first = _claim(box, spool, _msg("mrs.x@example.org", "=?utf-8?q?R=C3=A9sum=C3=A9?="), T0)
    first.reserve("<1@x>", 1, T0)
    first.note_result("250 2.0.0 queued as A1", ("mrs.x@example.org",), {}, {}, T0 + 1)
    first.sent("250 2.0.0 queued as A1", 1, T0 + 1)
    assert store.finished(first.name) is None  # accepted, not yet recorded
    second = _claim(box, spool, _msg("b@example.org"), T0 + 2)
    second.reserve("<2@x>", 1, T0 + 2)
    # The reservation's one commit recorded the first send and its history.
    rec = store.finished(first.name)
    assert rec is not None
    assert (rec.result, rec.message_id, rec.subject, rec.at) == ("sent", "<1@x>", "Résumé", T0 + 1)
    assert [(d.address, d.status, d.reply) for d in rec.recipients] == [
        ("mrs.x@example.org", "accepted", "250 2.0.0 queued as A1")
    ]
    assert rec.user  # the spool file's owner: whoever runs the tests
    assert rec.queued_at is not None and rec.tries == 1
    assert [r.queue_id for r in store.history(to="MRS.X@example.org")] == [first.name]
    assert store.history(to="x@example.org") == []  # the whole address, not a part


def test_partial_sends_join_one_record_with_every_recipient(tmp_path: Path) -> None:
    clock = Clock(T0)
    box, spool, store = _outbox(tmp_path, clock)
    claim = _claim(box, spool, _msg("a@example.org, gone@example.org, later@example.org"), T0)
    claim.reserve("<p@x>", 1, T0)
    claim.note_result(
        "250 ok",
        ("a@example.org",),
        {"gone@example.org": (550, "5.1.1 no such user")},
        {"later@example.org": (451, "4.2.0 try later")},
        T0,
    )
    claim.partly("250 ok", ("a@example.org", "gone@example.org"), "deferred", T0 + 60)
    assert store.finished(claim.name) is None  # still queued for later@
    q = box.next_due(T0 + 60, 1 << 20)
    assert q is not None and q.name == claim.name
    retry = box.claim(q, Log())
    assert retry is not None
    retry.reserve("<p@x>", 1, T0 + 60)
    retry.note_result("250 ok", ("later@example.org",), {}, {}, T0 + 61)
    retry.sent("250 ok", 1, T0 + 61)
    box.settle()
    rec = store.finished(claim.name)
    assert rec is not None
    assert rec.result == "partly sent" and rec.tries == 2
    got = {d.address: (d.status, d.reply) for d in rec.recipients}
    assert got == {
        "a@example.org": ("accepted", "250 ok"),
        "gone@example.org": ("refused", "550 5.1.1 no such user"),
        "later@example.org": ("accepted", "250 ok"),
    }
    assert store.pending_deliveries(claim.name) == ()


def test_failures_are_recorded_with_their_reason(tmp_path: Path) -> None:
    clock = Clock(T0)
    box, spool, store = _outbox(tmp_path, clock)
    claim = _claim(box, spool, _msg("c@example.org, d@example.org"), T0)
    claim.reserve("<f@x>", 1, T0)
    claim.note_failure("refused", "554 5.7.1 rejected as spam")
    claim.fail("released", "554 5.7.1 rejected as spam")
    rec = store.finished(claim.name)
    assert rec is not None and rec.result == "failed"
    assert rec.reason == "554 5.7.1 rejected as spam"
    assert [(d.address, d.status) for d in rec.recipients] == [
        ("c@example.org", "refused"),
        ("d@example.org", "refused"),
    ]
    # A message that can never go (rejected before any attempt) too.
    spool.submit(_msg("e@example.org"))
    box.arrived([None])
    q = box.next_due(T0, 1 << 20)
    assert q is not None
    box.reject(q, "the message is larger than spool.max_message_size")
    rec = store.finished(q.name)
    assert rec is not None and (rec.result, rec.tries) == ("failed", 0)
    assert [(d.address, d.status) for d in rec.recipients] == [("e@example.org", "not sent")]


def test_maintain_prunes_the_history_by_age(tmp_path: Path) -> None:
    clock = Clock(T0)
    box, spool, store = _outbox(tmp_path, clock, history_days=3)
    old = _claim(box, spool, _msg("old@example.org"), T0)
    old.reserve("<o@x>", 1, T0)
    old.note_result("250 ok", ("old@example.org",), {}, {}, T0)
    old.sent("250 ok", 1, T0)
    box.settle()
    clock.now = T0 + 2 * DAY
    new = _claim(box, spool, _msg("new@example.org"), clock.now)
    new.reserve("<n@x>", 1, clock.now)
    new.note_result("250 ok", ("new@example.org",), {}, {}, clock.now)
    new.sent("250 ok", 1, clock.now)
    box.settle()
    box.maintain(clock.now)
    assert {r.queue_id for r in store.history()} == {old.name, new.name}
    clock.now = T0 + 3 * DAY + 60  # the first is past history_days, the second not
    box.maintain(clock.now)
    assert [r.queue_id for r in store.history()] == [new.name]
    box.history_days = 1  # a reload shortens it: the next hourly prune applies it
    box.maintain(clock.now + 3600)
    assert store.history() == []


def test_an_existing_database_gains_the_history(tmp_path: Path) -> None:
    """A state store made before the history (no history tables) keeps its
    rows and gains the tables when the daemon opens it."""
    state = tmp_path / "state"
    store = StateStore(state)
    aid = store.reserve("q1", "<1@x>", 1, T0)
    store.close()
    with sqlite3.connect(state / DB_NAME) as db:
        db.execute("DROP TABLE history")
        db.execute("DROP TABLE history_pending")
    reader = StateStore(state, create=False)
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        reader.history()
    reader.close()
    store = StateStore(state)
    assert store.last_attempt("q1").id == aid  # type: ignore[union-attr]
    store.finish_sent(aid, "q1", T0 + 1, "250 ok", had_state=False)
    assert store.history() == []
    store.close()


def test_retry_out_of_deferred_leaves_the_retry_index_on_rescan(tmp_path: Path) -> None:
    """`queue retry` renames a deferred message into new/: without the
    re-read the daemon would count it twice (index and levels) until its
    old retry time."""
    clock = Clock(T0)
    box, spool, _ = _outbox(tmp_path, clock)
    claim = _claim(box, spool, _msg("r@example.org"), T0)
    claim.reserve("<r@x>", 1, T0)
    claim.defer("released", "451 later", T0 + 3600)
    assert len(box) == 1
    spool.retry(claim.name)  # what `queue retry` does, from another process
    box.arrived([claim.name])  # inotify saw it arrive in new/
    assert len(box) == 2  # stale: still in the retry index
    box.requests.rescan()
    q = box.next_due(T0 + 1, 1 << 20)
    assert q is not None and (q.name, q.src) == (claim.name, "new")
    assert len(box) == 1
    # A batch hold out of new/ leaves the index the same way.
    spool.hold(claim.name)
    box.requests.rescan()
    assert box.next_due(T0 + 2, 1 << 20) is None and len(box) == 0


def test_send_now_goes_before_due_retries_and_older_mail(tmp_path: Path) -> None:
    clock = Clock(T0)
    box, spool, _ = _outbox(tmp_path, clock)
    later = _claim(box, spool, _msg("deferred@example.org"), T0)
    later.reserve("<d@x>", 1, T0)
    later.defer("released", "451 later", T0 + 7200)  # not due for two hours
    names = [spool.submit(_msg(f"n{i}@example.org")) for i in range(3)]
    box.arrived(names)
    q = box.next_due(T0 + 1, 1 << 20)
    assert q is not None and q.name == names[0]
    box.requests.send_now(names[2])
    assert not box.still_next(q, T0 + 1)  # a prepared message gives way
    q = box.next_due(T0 + 1, 1 << 20)
    assert q is not None and q.name == names[2]
    box.requests.send_now(later.name)  # a retry, long before its time
    q = box.next_due(T0 + 1, 1 << 20)
    assert q is not None and (q.name, q.src) == (later.name, "deferred")
    box.requests.send_now("no-such-message")  # logged and ignored
    assert box.still_next(q, T0 + 1)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("history_days: 0\n", "history_days: expected a whole number of at least 1"),
        ("history_day: 30\n", "did you mean 'history_days'?"),
    ],
)
def test_history_days_is_checked(text: str, problem: str) -> None:
    base = "account: {address: a@practice.example, auth: {method: none}}\n"
    base += "outgoing: {host: 127.0.0.1, security: none}\nincoming: none\n"
    assert parse(base, "x.yaml").history_days == 30
    assert parse(base + "history_days: 90\n", "x.yaml").history_days == 90
    with pytest.raises(ConfigError) as info:
        parse(base + textwrap.dedent(text), "x.yaml")
    assert any(problem in str(p) for p in info.value.problems), info.value.problems
