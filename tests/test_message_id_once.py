"""Message-ID and Date, when a message lacks them, are the same at every
attempt (derived from its spooled file: outbox/stamp.py): a retry carries
its queued time as its Date, and the duplicate a crash may cost carries the
same Message-ID, so the recipient's mail client can tell the two copies for
one. The producer's file is never rewritten."""

from __future__ import annotations

import email
import os
import stat
import time
from pathlib import Path

import pytest

from exactmaild.auth.credentials import credentials_for
from exactmaild.config import load as configload
from exactmaild.config.model import Config
from exactmaild.daemon import logs
from exactmaild.daemon.metrics import Metrics
from exactmaild.outbox.spool import Spool
from exactmaild.outbox.stamp import Born, missing_headers
from exactmaild.send.sender import Sender
from exactmaild.send.smtp import SmtpConnection
from exactmaild.store.state import StateStore
from tests.fixtures.faults import HANG, FaultServer
from tests.fixtures.smtp import Sink, SmtpServer
from tests.helpers import Daemon, message, wait_until, write_config

NOON = 1_780_000_000.0  # a Thursday in May 2026


def ids(data: bytes) -> tuple[str | None, str | None]:
    msg = email.message_from_bytes(data)
    return msg["Message-ID"], msg["Date"]


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (b"To: a@example.org\n\nhi\n", {"date", "message-id"}),
        (
            b"To: a@example.org\r\nDate: Thu, 1 Jan 2026 10:00:00 +0000\r\n\r\nhi\r\n",
            {"message-id"},
        ),
        (b"message-id: <x@y>\nTo: a@example.org\n\nhi\n", {"date"}),
        (b"To: a@example.org\nMessage-ID: <x@y>\nDATE: now\n\nhi\n", set()),
        # A continuation line and the body never count as fields.
        (
            b"To: a@example.org,\n Date: b@example.org\n\nDate: in the body\n",
            {"date", "message-id"},
        ),
    ],
)
def test_the_fields_a_message_lacks(raw: bytes, want: set[str]) -> None:
    born = Born("20260528T202640.000000.1.ab", 1234, int(NOON * 1e9))
    stamp = missing_headers(raw, born, domain="practice.example", timezone="Europe/London")
    got = {n for n, v in (("date", stamp.date), ("message-id", stamp.message_id)) if v}
    assert got == want
    if "date" in want:
        assert stamp.date == "Thu, 28 May 2026 21:26:40 +0100"  # queued, the practice's zone
    if "message-id" in want:
        assert stamp.message_id is not None
        assert stamp.message_id.startswith("<20260528202640.")
        assert stamp.message_id.endswith("@practice.example>")


def test_the_message_id_is_the_files_and_no_other() -> None:
    """The same file gives the same Message-ID; another file (a new inode, or
    a name used again later) gives another."""
    raw = b"To: a@example.org\n\nhi\n"

    def mid(name: str, ino: int, mtime: float) -> str | None:
        born = Born(name, ino, int(mtime * 1e9))
        return missing_headers(raw, born, domain="p.example", timezone="UTC").message_id

    assert mid("a", 1, NOON) == mid("a", 1, NOON)
    others = {mid("b", 1, NOON), mid("a", 2, NOON), mid("a", 1, NOON + 0.001)}
    assert mid("a", 1, NOON) not in others and len(others) == 3


def _sender(tmp_path: Path, server: SmtpServer, **overrides: object) -> Sender:
    cfg = configload.load(write_config(tmp_path, server, **overrides))
    logs.configure(cfg.log)

    def transport(c: Config) -> SmtpConnection:
        return SmtpConnection(c.outgoing, credentials_for(c.account), timeout=10.0)

    store, spool = StateStore(cfg.state_dir), Spool(cfg.spool.dir)
    return Sender(cfg, store, spool, Metrics(), logs.get(), transport_factory=transport)


def test_a_deferred_message_keeps_its_message_id_and_first_date(tmp_path: Path) -> None:
    srv = FaultServer()
    try:
        sender = _sender(tmp_path, SmtpServer(srv.host, srv.port, Sink(), "none", None))
        spool = sender.spool
        qid = spool.submit(message(1))  # no Message-ID, no Date: as most applications drop it
        os.utime(spool.dir("new") / qid, (NOON, NOON))
        srv.script.body["patient1@example.org"] = ["451 4.3.0 Local error in processing"]
        sender.recover()
        sender.step()
        assert spool.names("deferred") == [qid]
        # The producer's file is as it was: its content, time and mode.
        path = spool.dir("deferred") / qid
        assert path.read_bytes() == message(1)
        assert path.stat().st_mtime == NOON
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        kept = ids(srv.bodies[0].data)
        assert kept[0] and kept[1] == "Thu, 28 May 2026 21:26:40 +0100"
        time.sleep(1.1)  # a Date made anew would differ by the second
        sender.flush()  # the retry is due now
        sender.step()
        sender.outbox.settle()
        sender.transport.close()
        assert len(srv.bodies) == 2
        assert ids(srv.bodies[0].data) == ids(srv.bodies[1].data) == kept
        assert len(srv.messages) == 1
        assert not spool.names("deferred") and not spool.names("active")
    finally:
        srv.close()


def test_a_crash_duplicate_carries_the_same_message_id(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    """SIGKILL after the final dot, before the server's verdict is recorded:
    the recipient gets the message twice (the one duplicate a crash may
    cost), both with ONE Message-ID and ONE Date."""
    srv = FaultServer()
    try:
        config = write_config(tmp_path, SmtpServer(srv.host, srv.port, Sink(), "none", None))
        spool = Spool(tmp_path / "spool")
        qid = spool.submit(message(1))
        srv.script.body["patient1@example.org"] = [HANG]
        daemon = Daemon(config)
        try:
            assert wait_until(lambda: len(srv.bodies) == 1, timeout=20), daemon.log()
        finally:
            daemon.kill()
        assert spool.names("active") == [qid]
    finally:
        srv.close()
    # Started again against a server that answers: the message goes again.
    config = write_config(tmp_path, smtp_server)
    daemon = Daemon(config)
    try:
        got = smtp_server.sink.wait_for(1)
        assert wait_until(lambda: not spool.names("active") and not spool.names("new"))
    finally:
        assert daemon.stop() == 0
    first, second = ids(srv.bodies[0].data), ids(got[0].data)
    assert first[0] and first[1]
    assert first == second


@pytest.mark.parametrize("signature", [None, "Smiles Dental\n"])  # the fast path, the slow one
def test_prepare_adds_the_values_assigned_once(signature: str | None) -> None:
    from exactmaild.send.message import prepare

    date, mid = "Thu, 28 May 2026 21:26:40 +0100", "<once.1@practice.example>"
    p = prepare(
        message(1),
        sender="reception@practice.example",
        display_name=None,
        signature=signature,
        max_size=10_000,
        date=date,
        message_id=mid,
    )
    assert ids(p.data) == (mid, date)
    assert p.message_id == mid
