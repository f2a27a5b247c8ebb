"""Message-ID and Date are assigned once, when a message is first claimed,
and written back into its spooled file: a retry carries its first Date, and
the duplicate a crash may cost carries the same Message-ID, so the
recipient's mail client can tell the two copies for one."""

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
from exactmaild.outbox.stamp import missing_headers
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
def test_the_lines_a_message_lacks(raw: bytes, want: set[str]) -> None:
    stamp = missing_headers(raw, domain="practice.example", now=NOON, timezone="Europe/London")
    got = stamp.lines()
    names = {line.split(b":")[0].decode().lower() for line in got.splitlines()}
    assert names == want
    eol = b"\r\n" if b"\r\n" in raw else b"\n"
    assert all(line.endswith(eol) for line in got.splitlines(keepends=True))
    if "date" in want:
        assert b"Date: Thu, 28 May 2026 21:26:40 +0100" in got  # the practice's time zone
    if "message-id" in want:
        assert b"@practice.example>" in got


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
        # Written back into the spooled file, which keeps its queued time and mode.
        path = spool.dir("deferred") / qid
        kept = ids(path.read_bytes())
        assert kept[0] and kept[1]
        assert path.stat().st_mtime == NOON
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        assert not [n for n in os.listdir(spool.dir("active")) if n.startswith(".")]
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


def test_a_cut_short_write_back_leaves_only_the_message(tmp_path: Path) -> None:
    """A crash between the new file and its rename: the message is as it was
    (a new Message-ID is made at the next claim, none went out), and the
    leftover goes at start."""
    spool = Spool(tmp_path / "spool")
    qid = spool.submit(message(1))
    spool.claim(qid)
    (spool.dir("active") / f".{qid}.rewrite").write_bytes(b"half")
    spool.drop_leftovers("active")
    assert os.listdir(spool.dir("active")) == [qid]
    spool.rewrite("active", qid, b"Message-ID: <a@b>\n" + message(1))
    assert os.listdir(spool.dir("active")) == [qid]
    assert ids((spool.dir("active") / qid).read_bytes())[0] == "<a@b>"


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
