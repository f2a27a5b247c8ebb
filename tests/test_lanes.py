"""Priority lanes, piece by piece: the headers that choose a lane, the urgent
reserve in the Ledger, `urgent_any_time` in the schedule, and the queue
index's order (urgent before normal before bulk, first in first out within
each, a held message giving way to a higher lane)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exactmaild.auth.credentials import credentials_for
from exactmaild.config import load as configload
from exactmaild.core.hours import Weekday, Window
from exactmaild.core.lanes import Lane, kept_back, lane_of
from exactmaild.core.limits import Ledger
from exactmaild.core.schedule import next_send_time
from exactmaild.core.states import DEFERRED, NEW, State
from exactmaild.daemon import logs
from exactmaild.daemon.metrics import Metrics
from exactmaild.outbox.index import QueueIndex
from exactmaild.outbox.spool import Spool
from exactmaild.send.sender import Sender
from exactmaild.send.smtp import SmtpConnection
from exactmaild.store.state import StateStore
from tests.fixtures.smtp import SmtpServer
from tests.helpers import at, message, write_config

LON = ZoneInfo("Europe/London")


@pytest.mark.parametrize(
    ("headers", "lane"),
    [
        ("", "normal"),
        ("Priority: urgent", "urgent"),
        ("Priority: normal", "normal"),
        ("Priority: non-urgent", "bulk"),
        ("X-Priority: 1", "urgent"),
        ("X-Priority: 2 (High)", "urgent"),
        ("X-Priority: 3 (Normal)", "normal"),
        ("X-Priority: 4", "bulk"),
        ("X-Priority: 5 (Lowest)", "bulk"),
        ("Importance: High", "urgent"),
        ("importance:low", "bulk"),
        ("Precedence: bulk", "bulk"),
        ("Precedence: list", "bulk"),
        ("Precedence: junk", "bulk"),
        ("Precedence: first-class", "normal"),  # not a lane word: ignored
        # Conflicts: Priority, then Importance, then X-Priority, then Precedence.
        ("Precedence: bulk\nX-Priority: 1", "urgent"),
        ("X-Priority: 5\nImportance: high", "urgent"),
        ("Importance: low\nPriority: urgent", "urgent"),
        ("Priority: non-urgent\nX-Priority: 1\nImportance: high", "bulk"),
        ("Priority: whenever\nX-Priority: 1", "urgent"),  # an unknown value does not decide
        ("Priority: urgent\nPriority: non-urgent", "urgent"),  # the first of a repeat
    ],
)
def test_lane_from_headers(headers: str, lane: Lane) -> None:
    head = "To: mrs.x@example.org\nSubject: Appointment\n" + headers
    raw = (head + "\n\nSee you Tuesday.\n").encode()
    assert lane_of(raw) == lane
    assert lane_of(raw.replace(b"\n", b"\r\n")) == lane


def test_only_the_header_block_counts() -> None:
    raw = b"To: a@example.org\n\nPriority: urgent\nX-Priority: 1\n"
    assert lane_of(raw) == "normal"


@pytest.mark.parametrize(
    ("used", "lane", "can"),
    [
        (0, "bulk", True),
        (16, "bulk", True),  # the 17th send of 20 - 3
        (17, "bulk", False),
        (17, "normal", False),
        (17, "urgent", True),
        (19, "urgent", True),
        (20, "urgent", False),  # the cap itself
    ],
)
def test_urgent_reserve_in_the_ledger(used: int, lane: Lane, can: bool) -> None:
    now = at(LON, "2026-12-01 10:00")
    ledger = Ledger("calendar_day", LON, 20)
    for i in range(used):
        ledger.record(now - 3600 + i)
    keep = kept_back(lane, 3)
    assert ledger.can_send(now, 1, keep) is can
    tomorrow = at(LON, "2026-12-02 00:00")
    assert ledger.next_allowed(now, 1, keep) == (now if can else tomorrow)


@given(
    allowance=st.integers(1, 30),
    data=st.data(),
)
def test_normal_mail_never_eats_the_reserve(allowance: int, data: st.DataObject) -> None:
    reserve = data.draw(st.integers(0, allowance - 1))
    kind = data.draw(st.sampled_from(["calendar_day", "rolling_24h"]))
    ledger = Ledger(kind, LON, allowance)
    t = at(LON, "2026-12-01 08:00")
    for lane in data.draw(st.lists(st.sampled_from(["urgent", "normal", "bulk"]), max_size=60)):
        keep = kept_back(lane, reserve)
        t = ledger.next_allowed(t, 1, keep)
        used = ledger.used(t)
        ledger.record(t, 1)
        assert used + 1 <= allowance - keep
        t += 60


def test_urgent_any_time_goes_outside_the_window_but_keeps_delay_and_cap() -> None:
    tz = LON
    window = Window(dt.time(8), dt.time(17))
    days: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri")
    evening = at(tz, "2026-12-01 22:00")  # a Tuesday
    ledger = Ledger("calendar_day", tz, 2)

    def due(any_time: bool, keep: int = 0) -> float:
        return next_send_time(
            evening,
            last_send=evening - 10,
            delay=60.0,
            immediately=False,
            flush=False,
            ledger=ledger,
            units=1,
            tz=tz,
            days=days,
            window=window,
            keep=keep,
            any_time=any_time,
        )

    assert due(False) == at(tz, "2026-12-02 08:00")
    assert due(True) == evening + 50  # the delay still holds
    ledger.record(evening - 20)
    ledger.record(evening - 10)
    assert due(True) == at(tz, "2026-12-02 00:00")  # the cap still holds
    assert due(True, keep=1) == at(tz, "2026-12-02 00:00")


def _index(lanes: dict[str, Lane]) -> QueueIndex:
    def lane_of_name(name: str, state: State) -> Lane:
        return lanes.get(name, "normal")

    return QueueIndex(lane_of_name)


def test_index_sends_lane_by_lane_fifo_within() -> None:
    idx = _index({"b1": "bulk", "b2": "bulk", "u1": "urgent", "u2": "urgent"})
    for name in ("b1", "n1", "b2", "u1", "n2", "u2"):
        assert idx.new.append(name)
    assert idx.new.names() == ["u1", "u2", "n1", "n2", "b1", "b2"]
    order = []
    while (first := idx.first(0.0)) is not None:
        order.append(first[0])
        idx.discard(*first)
    assert order == ["u1", "u2", "n1", "n2", "b1", "b2"]


def test_a_held_job_gives_way_to_a_higher_lane() -> None:
    idx = _index({"b1": "bulk", "u1": "urgent", "r1": "urgent", "rb": "bulk"})
    idx.new.append("b1")
    assert idx.first(0.0) == ("b1", NEW) and idx.is_first("b1", NEW, 0.0)
    idx.new.append("n1")  # a lower lane's arrival changes nothing for the job held...
    assert idx.is_first("n1", NEW, 0.0) and not idx.is_first("b1", NEW, 0.0)
    idx.discard("n1", NEW)
    idx.deferred.set("r1", 100.0)  # ... an urgent retry does once it is due
    assert idx.is_first("b1", NEW, 99.0)
    assert not idx.is_first("b1", NEW, 100.0)
    assert idx.first(100.0) == ("r1", DEFERRED)
    idx.deferred.set("rb", 50.0)  # a bulk retry due goes before bulk new mail
    assert idx.first(60.0) == ("rb", DEFERRED)
    idx.new.append("u1")
    assert idx.first(60.0) == ("u1", NEW)
    idx.put_first("b1")  # `queue send-now` above every lane
    assert idx.first(200.0) == ("b1", NEW) and idx.is_first("b1", NEW, 200.0)
    assert idx.counts()[NEW, "urgent"] == 1 and idx.counts()[DEFERRED, "bulk"] == 1


def test_spool_reads_the_lane_once_from_the_head(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    urgent = spool.submit(b"To: a@example.org\nPriority: urgent\n\nhi\n")
    bulk = spool.submit(b"To: a@example.org\nPrecedence: bulk\n\n" + b"x" * 100_000)
    assert spool.lane(urgent, "new") == "urgent"
    assert spool.lane(bulk, "new") == "bulk"
    assert spool.lane("nosuch", "new") == "normal"
    (tmp_path / "spool" / "new" / "dir").mkdir()
    assert spool.lane("dir", "new") == "normal"


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


def test_urgent_any_time_through_the_sender(tmp_path: Path, smtp_server: SmtpServer) -> None:
    """The sender on an injected clock, a real SMTP server: at 22:00, outside
    the 08:00-17:00 window, urgent mail goes (paced), normal mail waits for
    the morning."""
    cfg = configload.load(
        write_config(
            tmp_path,
            smtp_server,
            send={
                "immediately": False,
                "delay": "60s",
                "daily_limit": 3,
                "urgent_reserve": 1,
                "urgent_any_time": True,
            },
            schedule={"window": "08:00-17:00", "days": ["mon", "tue", "wed", "thu", "fri"]},
        )
    )
    logs.configure(cfg.log)
    clock = _Clock(at(LON, "2026-12-01 22:00"))  # a Tuesday
    store, spool = StateStore(cfg.state_dir), Spool(cfg.spool.dir)
    spool.submit(message(1))  # the recall letter
    spool.submit(message(2, Priority="urgent"))  # the appointment moved
    sender = Sender(
        cfg,
        store,
        spool,
        Metrics(),
        logs.get(),
        transport_factory=lambda c: SmtpConnection(c.outgoing, credentials_for(c.account)),
        clock=clock,
    )
    sink = smtp_server.sink
    try:
        sender.recover()
        assert sender.step() == 0.0
        assert [_subject(m.data) for m in sink.messages] == [2]
        assert sender.step() == pytest.approx(10 * 3600)  # normal: the window opens at 08:00
        spool.submit(message(3, Priority="urgent"))
        clock.now += 1
        assert sender.step() == pytest.approx(59)  # urgent, but still paced
        clock.now += 59
        sender.step()
        assert [_subject(m.data) for m in sink.messages] == [2, 3]
        clock.now = at(LON, "2026-12-02 08:00")
        sender.step()
        assert [_subject(m.data) for m in sink.messages] == [2, 3, 1]
    finally:
        sender.outbox.settle()
        sender.transport.close()


def _subject(data: bytes) -> int:
    """The number `message()` wrote into the subject."""
    return int(re.search(rb"Subject: Appointment reminder (\d+)", data)[1])  # type: ignore[index]


def test_status_names_the_lanes_only_when_it_matters() -> None:
    from exactmaild.cli.lanes import lanes_text

    now = at(LON, "2026-12-01 09:00")
    assert lanes_text((("normal", 5, now + 600),), LON, now) == ""
    text = lanes_text((("urgent", 2, now), ("bulk", 300, now + 86400)), LON, now)
    assert text == "2 urgent now, 300 bulk by tomorrow 09:00"
