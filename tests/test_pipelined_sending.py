"""One round trip a message: the next transaction begun with the previous dot.

Against a server that advertises PIPELINING, the Sender writes a message's
final dot and the next message's MAIL/RCPT/DATA together when the next may go
at once (`Transaction.follow()`). These tests hold it to its promises: every
message arrives once and in order; a connection lost (or a daemon killed)
between a dot and its reply leaves that message to the unknown-outcome rule
as before, and the message begun after it is put back unsent and uncounted;
a paced sender never follows.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exactmaild.auth.credentials import credentials_for
from exactmaild.config import load as configload
from exactmaild.config.model import Config
from exactmaild.daemon import logs
from exactmaild.daemon.metrics import Metrics
from exactmaild.outbox.spool import Spool
from exactmaild.send import smtp
from exactmaild.send.sender import Sender
from exactmaild.send.smtp import SmtpConnection
from exactmaild.store.state import StateStore
from tests.fixtures.faults import DROP, HANG, FaultServer
from tests.fixtures.smtp import Sink, SmtpServer, start_smtp
from tests.helpers import Daemon, message, wait_until, write_config


@pytest.fixture
def pipelining_server() -> Iterator[SmtpServer]:
    controller, server = start_smtp("none", pipelining=True)
    yield server
    controller.stop()


@pytest.fixture
def follows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the transactions begun with a previous final dot (the real
    method runs: this only watches)."""
    calls: list[int] = []
    real = smtp.Transaction.follow

    def watched(self: smtp.Transaction, *args: Any) -> smtp.Transaction:
        calls.append(1)
        return real(self, *args)

    monkeypatch.setattr(smtp.Transaction, "follow", watched)
    return calls


def _at(srv: FaultServer) -> SmtpServer:
    return SmtpServer(srv.host, srv.port, Sink(), "none", None)


def _sender(tmp_path: Path, server: SmtpServer, **overrides: Any) -> Sender:
    cfg = configload.load(write_config(tmp_path, server, **overrides))
    logs.configure(cfg.log)

    def transport(c: Config) -> SmtpConnection:
        return SmtpConnection(c.outgoing, credentials_for(c.account), timeout=10.0)

    store, spool = StateStore(cfg.state_dir), Spool(cfg.spool.dir)
    sender = Sender(cfg, store, spool, Metrics(), logs.get(), transport_factory=transport)
    return sender


def _submit(spool: Spool, n: int) -> list[str]:
    names = []
    for i in range(1, n + 1):
        names.append(spool.submit(message(i)))
        time.sleep(0.002)  # distinct mtimes: the queue's order is the submission order
    return names


def _drain(sender: Sender, steps: int = 100) -> None:
    sender.recover()
    for _ in range(steps):
        if sender.step() > 0 and not sender.outbox.queued:
            break
    sender.outbox.settle()
    sender.transport.close()


def test_twenty_messages_arrive_in_order_once_each(
    tmp_path: Path, pipelining_server: SmtpServer, follows: list[int]
) -> None:
    sender = _sender(tmp_path, pipelining_server)
    _submit(sender.spool, 20)
    _drain(sender)
    got = [m.rcpt_tos for m in pipelining_server.sink.messages]
    assert got == [[f"patient{i}@example.org"] for i in range(1, 21)]
    # Each one after the first began with the previous one's final dot, on
    # one connection, and each was recorded sent.
    assert len(follows) == 19
    assert pipelining_server.sink.ehlos == 1
    assert sender.spool.names("new") + sender.spool.names("active") == []
    assert sender.state.counted_sends(0) and len(sender.state.counted_sends(0)) == 20


def test_a_paced_sender_has_nothing_to_follow_with(
    tmp_path: Path, pipelining_server: SmtpServer, follows: list[int]
) -> None:
    sender = _sender(tmp_path, pipelining_server, send={"delay": "1h", "immediately": False})
    _submit(sender.spool, 2)
    sender.recover()
    assert sender.step() == 0.0  # the first goes; the second waits an hour
    assert sender.step() > 3000
    sender.outbox.settle()
    assert follows == []
    assert len(pipelining_server.sink.messages) == 1


def test_without_pipelining_one_by_one(
    tmp_path: Path, smtp_server: SmtpServer, follows: list[int]
) -> None:
    sender = _sender(tmp_path, smtp_server)
    _submit(sender.spool, 3)
    _drain(sender)
    assert len(smtp_server.sink.messages) == 3
    assert follows == []


def _statuses(store: StateStore, name: str) -> list[str]:
    rows = store._query("SELECT status FROM attempts WHERE queue_id = ? ORDER BY id", (name,))
    return [r[0] for r in rows]


def test_connection_lost_between_dot_and_reply(tmp_path: Path, follows: list[int]) -> None:
    srv = FaultServer(pipelining=True)
    try:
        sender = _sender(tmp_path, _at(srv), send={"retry_intervals": ["1h"]})
        one, two, three = _submit(sender.spool, 3)
        srv.script.body["patient2@example.org"] = [DROP]
        _drain(sender)
        # The second's body went out and the connection died before the
        # verdict: the unknown-outcome rule (counted, retried later).
        assert _statuses(sender.state, two) == ["unknown"]
        assert sender.spool.names("deferred") == [two]
        # The third was begun in the same write as that dot, never reserved:
        # back to the queue, then sent on a new connection; never unknown,
        # never counted but for its one real send.
        assert len(follows) >= 2
        assert _statuses(sender.state, three) == ["sent"]
        assert [m.rcpt_tos for m in srv.messages] == [
            ["patient1@example.org"],
            ["patient3@example.org"],
        ]
        assert len(sender.state.counted_sends(0)) == 3  # 1, 2 (unknown: counted), 3
        assert _statuses(sender.state, one) == ["sent"]
    finally:
        srv.close()


def test_daemon_killed_between_dot_and_reply(tmp_path: Path) -> None:
    srv = FaultServer(pipelining=True)
    try:
        config = write_config(tmp_path, _at(srv))
        spool = Spool(tmp_path / "spool")
        one, two, three = _submit(spool, 3)
        srv.script.body["patient2@example.org"] = [HANG]
        daemon = Daemon(config)
        try:
            # The second's body is in, its verdict never comes; the third was
            # claimed and begun with that dot.
            assert wait_until(
                lambda: len(srv.bodies) == 2 and len(spool.names("active")) == 2, timeout=20
            )
        finally:
            daemon.kill()
        store = StateStore(tmp_path / "state")
        # As without pipelining: the second is reserved (counted) and in flight.
        assert _statuses(store, two) == ["inflight"]
        # The third was claimed and begun, never reserved: nothing counted.
        assert _statuses(store, three) == []
        assert sorted(spool.names("active")) == sorted([two, three])
        cfg = configload.load(config)
        logs.configure(cfg.log)
        sender = Sender(
            cfg,
            store,
            spool,
            Metrics(),
            logs.get(),
            transport_factory=lambda c: SmtpConnection(c.outgoing, credentials_for(c.account)),
        )
        sender.recover()
        # Start-up: the second to the unknown-outcome rule, the third back unsent.
        assert _statuses(store, two) == ["unknown"]
        assert _statuses(store, three) == []
        assert sorted(spool.names("new")) == sorted([two, three])
        assert len(store.counted_sends(0)) == 2  # the first, and the second (unknown)
        assert _statuses(store, one) == ["sent"]
    finally:
        srv.close()


@pytest.mark.parametrize(
    ("reply", "second", "second_state"),
    [
        # The server is closing: the second is retried, the third goes on a
        # new connection.
        ("421 4.3.2 shutting down", ["released"], "deferred"),
        # The account's quota: the queue pauses; both go back unblamed.
        ("550 5.4.5 daily sending quota exceeded", ["released"], "new"),
    ],
)
def test_the_next_goes_back_unsent_when_it_cannot_go_on(
    tmp_path: Path, follows: list[int], reply: str, second: list[str], second_state: str
) -> None:
    srv = FaultServer(pipelining=True)
    try:
        sender = _sender(tmp_path, _at(srv), send={"retry_intervals": ["1h"]})
        _, two, three = _submit(sender.spool, 3)
        srv.script.body["patient2@example.org"] = [reply]
        _drain(sender, steps=10)
        assert len(follows) >= 2  # the third was begun with the second's dot
        assert _statuses(sender.state, two) == second
        assert two in sender.spool.names(second_state)
        if second_state == "deferred":
            assert _statuses(sender.state, three) == ["sent"]
            assert len(srv._conns) == 2  # not on the connection the server was closing
        else:  # paused: the third waits in new/, never reserved
            assert _statuses(sender.state, three) == []
            assert three in sender.spool.names("new")
    finally:
        srv.close()
