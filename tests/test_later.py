"""Mail for later, in process: the header and `--at` read into a time, the
header removed from what is sent, and the Outbox putting a message off into
`later/` (on arrival, or at its turn when it was queued while the daemon was
stopped), letting it in at its time, finding it again at start-up, and
dropping it when it is cancelled. Real spool and state store on disk; the
clock is injected. The real daemon is tests/test_later_daemon.py."""

from __future__ import annotations

import datetime as dt
import email.utils
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from exactmaild.core.errors import BadMessage, UsageError
from exactmaild.core.later import deferred_until, parse_at, with_time
from exactmaild.core.states import LATER, NEW
from exactmaild.outbox import Outbox, Spool
from exactmaild.outbox.scheduled import ScheduledIndex
from exactmaild.send.message import prepare
from tests.helpers import at, message
from tests.test_outbox import T0, Clock, Log, _outbox

LON = ZoneInfo("Europe/London")


def stamp(ts: float) -> str:
    return email.utils.format_datetime(dt.datetime.fromtimestamp(ts, LON))


def later_message(n: int, when: float) -> bytes:
    return message(n, Deferred_Delivery=stamp(when))


# -- the time: header and --at ---------------------------------------------------------


def test_the_header_gives_the_time_folded_or_not_crlf_or_not() -> None:
    t = at(LON, "2026-12-02 08:30")
    assert deferred_until(later_message(1, t)) == t
    folded = b"To: a@example.org\r\nDEFERRED-DELIVERY: Wed, 02 Dec 2026\r\n 08:30:00 +0000\r\n\r\nx"
    assert deferred_until(folded) == t
    # Only the header section counts; "-0000" (zone unknown) is UTC.
    assert deferred_until(b"To: a@example.org\n\nDeferred-Delivery: tomorrow\n") is None
    assert deferred_until(b"Deferred-Delivery: Wed, 02 Dec 2026 08:30:00 -0000\n\n") == t
    with pytest.raises(BadMessage, match="Deferred-Delivery header 'tomorrow'"):
        deferred_until(b"To: a@example.org\nDeferred-Delivery: tomorrow\n\nx")


def test_submit_at_reads_local_time_iso_with_offset_and_refuses_the_rest() -> None:
    assert parse_at("2026-12-02 08:30", LON) == at(LON, "2026-12-02 08:30")
    assert parse_at("2026-07-02 08:30", LON) == at(LON, "2026-07-02 07:30") + 3600  # BST
    assert parse_at("2026-12-02T08:30:00+01:00", LON) == at(LON, "2026-12-02 07:30")
    assert parse_at("2026-12-02T08:30Z", LON) == at(LON, "2026-12-02 08:30")
    # 01:30 never happens in London on 2026-03-29: the moment the clocks change.
    assert parse_at("2026-03-29 01:30", LON) == at(LON, "2026-03-29 02:00")
    with pytest.raises(UsageError, match="local time in Europe/London") as e:
        parse_at("next tuesday", LON)
    assert e.value.exit_code == 64


def test_with_time_replaces_any_earlier_header() -> None:
    raw = later_message(1, T0)
    out = with_time(raw, T0 + 60, LON)
    assert out.lower().count(b"deferred-delivery:") == 1
    assert deferred_until(out) == T0 + 60
    assert out.endswith(b"see you on Tuesday.\n")


@pytest.mark.parametrize("signature", [None, "Dr Smith's practice"])
def test_the_header_is_not_sent(signature: str | None) -> None:
    """Both preparation paths (the fast one and the MIME one a signature takes)."""
    p = prepare(
        later_message(1, T0),
        sender="reception@practice.example",
        display_name=None,
        signature=signature,
        max_size=1 << 20,
    )
    assert b"deferred-delivery" not in p.data.lower()
    assert b"Subject: Appointment reminder 1" in p.data


def test_a_message_whose_time_cannot_be_read_is_failed_with_the_reason() -> None:
    with pytest.raises(BadMessage, match="not an RFC 5322 date"):
        prepare(
            message(1, Deferred_Delivery="soon"),
            sender="reception@practice.example",
            display_name=None,
            signature=None,
            max_size=1 << 20,
        )


# -- the scheduled index -----------------------------------------------------------------


def test_the_scheduled_index_lets_in_what_is_due_earliest_first() -> None:
    idx = ScheduledIndex()
    idx.set("b", 20.0)
    idx.set("a", 20.0)
    idx.set("c", 10.0)
    idx.set("d", 30.0)
    idx.set("d", 40.0)  # superseded
    assert idx.next_time() == 10.0
    assert idx.pop_due(5.0) == []
    assert idx.pop_due(20.0) == [("c", "normal"), ("a", "normal"), ("b", "normal")]
    idx.retain({"x"})
    assert len(idx) == 0 and idx.next_time() == float("inf")


# -- the Outbox ----------------------------------------------------------------------------


def _due(box: Outbox, now: float) -> str | None:
    q = box.next_due(now, 1 << 20)
    return None if q is None else q.name


def test_a_message_for_later_waits_in_later_until_its_time(tmp_path: Path) -> None:
    clock = Clock(T0)
    box, spool, _ = _outbox(tmp_path, clock)
    name = spool.submit(later_message(1, T0 + 300))
    now_name = spool.submit(later_message(2, T0 - 60))  # a time in the past means now
    box.arrived([name, now_name])
    assert spool.exists(LATER, name) and not spool.exists(NEW, name)
    assert box.next_retry_time() == T0 + 300  # the sender's wait ends then
    assert _due(box, T0) == now_name
    box.claim(box.next_due(T0, 1 << 20), Log())  # type: ignore[arg-type]
    assert _due(box, T0 + 299) is None
    assert len(box) == 0  # not in the queue while it waits
    assert _due(box, T0 + 300) == name
    assert spool.exists(NEW, name)
    assert box.next_retry_time() == float("inf")


def test_queued_while_stopped_it_is_put_off_at_its_turn(tmp_path: Path) -> None:
    """Start-up never opens new/ for the header; the pick reads the message
    anyway, and sends it to later/ instead of sending it."""
    spool = Spool(tmp_path / "spool")
    early = spool.submit(later_message(1, T0 + 600))
    plain = spool.submit(message(2))
    clock = Clock(T0)
    box, _, _ = _outbox(tmp_path, clock)
    assert _due(box, T0) == plain
    assert spool.exists(LATER, early)
    assert box.next_retry_time() == T0 + 600


def test_a_restart_keeps_the_time(tmp_path: Path) -> None:
    clock = Clock(T0)
    box, spool, store = _outbox(tmp_path, clock)
    name = spool.submit(later_message(1, T0 + 3600))
    box.arrived([name])
    store.close()
    box2, _, _ = _outbox(tmp_path, clock)  # a new daemon over the same spool
    assert box2.next_retry_time() == T0 + 3600
    assert _due(box2, T0 + 3599) is None
    assert _due(box2, T0 + 3600) == name


def test_cancel_and_hold_take_a_scheduled_message_out_of_the_index(tmp_path: Path) -> None:
    clock = Clock(T0)
    box, spool, _ = _outbox(tmp_path, clock)
    a = spool.submit(later_message(1, T0 + 60))
    b = spool.submit(later_message(2, T0 + 120))
    box.arrived([a, b])
    assert spool.cancel(a) == LATER
    assert spool.hold(b) == LATER
    box.requests.rescan()  # what `queue cancel|hold` tells the running daemon
    assert _due(box, T0 + 200) is None
    assert box.next_retry_time() == float("inf")
    # Released after its time: it goes now.
    spool.release(b)
    box.arrived([b])
    assert _due(box, T0 + 200) == b


# -- with priority lanes ---------------------------------------------------------------


def test_mail_for_later_joins_the_back_of_its_own_lane(tmp_path: Path) -> None:
    """Let in at its time, an urgent message goes before the normal mail
    queued all along, and before the urgent mail that arrives after it; a
    held normal message gives way to it, as to an urgent arrival."""
    clock = Clock(T0)
    box, spool, _ = _outbox(tmp_path, clock)
    normal = spool.submit(message(1))
    soon = spool.submit(message(2, Deferred_Delivery=stamp(T0 + 60), Priority="urgent"))
    box.arrived([normal, soon])
    q = box.next_due(T0, 1 << 20)
    assert q is not None and q.name == normal
    assert box.still_next(q, T0 + 59)
    assert box.next_retry_time(above="normal") == T0 + 60  # the held send wakes for it
    assert not box.still_next(q, T0 + 60)  # let in at its time, into the urgent lane
    urgent = spool.submit(message(3, Priority="urgent"))
    box.arrived([urgent])
    assert _due(box, T0 + 61) == soon
    box.claim(box.next_due(T0 + 61, 1 << 20), Log())  # type: ignore[arg-type]
    assert _due(box, T0 + 61) == urgent
    box.claim(box.next_due(T0 + 61, 1 << 20), Log())  # type: ignore[arg-type]
    assert _due(box, T0 + 61) == normal


def test_a_restart_keeps_the_lane_of_mail_for_later(tmp_path: Path) -> None:
    clock = Clock(T0)
    box, spool, store = _outbox(tmp_path, clock)
    bulk = spool.submit(message(1, Deferred_Delivery=stamp(T0 + 60), Precedence="bulk"))
    normal = spool.submit(message(2, Deferred_Delivery=stamp(T0 + 120)))
    box.arrived([bulk, normal])
    store.close()
    box2, _, _ = _outbox(tmp_path, clock)  # `later/` read again at start-up
    levels = box2.snapshot(T0, daily_limit=10, last_send=None, paused=False, weigh=lambda n, s: 1)
    assert {w.name: w.lane for w in levels.waiting} == {bulk: "bulk", normal: "normal"}
    assert _due(box2, T0 + 120) == normal  # both let in; the bulk one waits behind
