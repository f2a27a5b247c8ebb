"""Fault injection against the real daemon process (issue 4's acceptance).

The scripted server (tests/fixtures/faults.py) produces what aiosmtpd cannot:
4xx then success, 5xx on one recipient, a connection dropped after the body,
a refused login, a quota reply. Every test runs `exactmaild run` as a child
process and checks the spool, the SMTP side, the metrics and `status`.
"""

from __future__ import annotations

import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from exactmaild.outbox.spool import Spool
from tests.fixtures.faults import DROP, FaultServer, auth_fault_server, fault_server
from tests.fixtures.smtp import SMTP_PASSWORD, Sink, SmtpServer, free_port
from tests.helpers import Daemon, exactmaild, message, metric, scrape, wait_until, write_config

__all__ = ["auth_fault_server", "fault_server"]  # fixtures, used by name

PASSWORD = SMTP_PASSWORD


def metrics_port(cfg: Path) -> int:
    return int(yaml.safe_load(cfg.read_text())["metrics"]["listen"].rsplit(":", 1)[1])


def as_smtp(server: FaultServer) -> SmtpServer:
    return SmtpServer(server.host, server.port, Sink(), "none", None)


def config(
    tmp: Path, server: FaultServer | SmtpServer, *, password: bool = False, **kw: Any
) -> Path:
    """A config for the scripted server, with a local inbox for failure notices."""
    smtp = as_smtp(server) if isinstance(server, FaultServer) else server
    extra: dict[str, Any] = {
        # An incoming server is needed for receive.maildir (where notices go);
        # nothing listens on it: the checks fail, harmlessly, once an hour.
        "incoming": {
            "protocol": "imap",
            "host": "127.0.0.1",
            "port": free_port(),
            "security": "none",
        },
        "schedule": {"every": "1h"},
        "receive": {"maildir": str(tmp / "inbox")},
    }
    if password:
        pw = tmp / "password"
        pw.write_text(PASSWORD + "\n")
        pw.chmod(0o600)
        extra["account"] = {
            "address": "reception@practice.example",
            "auth": {"method": "password", "password_file": str(pw)},
        }
    send = {"retry_intervals": ["1s"], "give_up_after": "1h", **kw.pop("send", {})}
    return write_config(tmp, smtp, **{**extra, "send": send, **kw})


def start(cfg: Path) -> Daemon:
    d = Daemon(cfg)
    d.wait_ready(metrics_port(cfg), timeout=30)
    return d


def status_json(cfg: Path) -> dict[str, Any]:
    r = exactmaild("status", "--json", "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def notices(tmp: Path) -> list[bytes]:
    d = tmp / "inbox" / "new"
    return [p.read_bytes() for p in sorted(d.iterdir())] if d.is_dir() else []


def subject(data: bytes) -> str:
    m = re.search(rb"(?m)^Subject: (.*?)\r?$", data)
    return m.group(1).decode() if m else ""


def assert_no_secret(tmp: Path, d: Daemon, cfg: Path) -> None:
    """The password is nowhere a person or monitoring can read."""
    assert PASSWORD not in d.log()
    assert PASSWORD not in json.dumps(status_json(cfg))
    for p in (tmp / "spool" / "failed").glob("*.reason"):
        assert PASSWORD not in p.read_text()
    for n in notices(tmp):
        assert PASSWORD.encode() not in n


# -- the failure taxonomy --------------------------------------------------------------


def test_temporary_permanent_and_dropped_do_not_hold_up_the_queue(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    srv = fault_server
    srv.advertise_auth = True
    srv.script.body["temp@example.org"] = ["451 4.3.0 local error in processing"] * 2
    srv.script.body["perm@example.org"] = ["550 5.6.0 message content rejected"]
    srv.script.body["drop@example.org"] = [DROP]
    srv.script.body["auto@example.org"] = ["550 5.6.0 message content rejected"]
    cfg = config(tmp_path, srv, password=True)
    spool = Spool(tmp_path / "spool")
    for n, to in enumerate(["temp", "perm", "drop", "good1", "good2", "good3"]):
        spool.submit(message(n, to=f"{to}@example.org"))  # bare LF line endings
        time.sleep(0.01)  # queue order is by mtime
    # A failing auto-reply gets no notice (never a notice about a notice).
    spool.submit(message(6, to="auto@example.org", Auto_Submitted="auto-replied"))
    port = metrics_port(cfg)
    d = start(cfg)
    try:
        assert srv.wait_for(lambda: len(srv.messages) == 5, 30), d.log()
        temp = srv.delivered_to("temp@example.org")
        assert len(temp) == 1
        assert len([b for b in srv.bodies if "temp@example.org" in b.rcpt_tos]) == 3
        # The others went while temp@ waited for its retries.
        for to in ("good1", "good2", "good3", "drop"):
            (t,) = srv.delivered_to(f"{to}@example.org")
            assert t.at < temp[0].at, to
        # Dropped after the body: sent again (at-least-once), both counted.
        assert len([b for b in srv.bodies if "drop@example.org" in b.rcpt_tos]) == 2
        assert srv.delivered_to("perm@example.org") == []
        assert wait_until(lambda: len(spool.names("failed")) == 2, 10)
        failed = spool.names("failed")[0]  # queue ids sort by time: perm@ came first
        reason = spool.reason(failed) or ""
        assert "550" in reason and "message content rejected" in reason, reason
        text = scrape(port)
        assert metric(text, "exactmaild_send_failures_total", 'kind="transient"') == 3
        assert metric(text, "exactmaild_send_failures_total", 'kind="permanent"') == 2
        # temp 1 + drop 2 (unknown, then sent) + 3 good; the 550 and the 451s gave theirs back
        assert metric(text, "exactmaild_sent_in_window") == 6
        assert PASSWORD not in text
        assert wait_until(lambda: len(notices(tmp_path)) == 1, 10)
        assert_no_secret(tmp_path, d, cfg)
        assert srv.logins and srv.logins[0][1] == PASSWORD
    finally:
        assert d.stop() == 0
    with sqlite3.connect(tmp_path / "state" / "exactmaild.sqlite3") as db:
        rows = db.execute(
            "SELECT status FROM attempts WHERE queue_id IN"
            " (SELECT queue_id FROM attempts WHERE status = 'unknown')"
        ).fetchall()
    assert sorted(r[0] for r in rows) == ["sent", "unknown"]
    assert spool.names("new") == spool.names("deferred") == spool.names("active") == []
    # SMTP wants CRLF: the bare LF of the spool files never reaches the wire.
    for b in srv.bodies:
        assert re.search(rb"(?<!\r)\n", b.data) is None
    # The notice: RFC 3464, delivered locally, never sent (nothing to the practice over SMTP).
    (dsn,) = notices(tmp_path)  # none for the auto-reply
    assert "the failed message is itself a notice" in d.log()
    assert b"Content-Type: multipart/report; report-type=delivery-status" in dsn
    assert b"Final-Recipient: rfc822; perm@example.org" in dsn
    assert b"Status: 5.6.0" in dsn
    assert b"Diagnostic-Code: smtp; 550 5.6.0 message content rejected" in dsn
    assert b"Subject: Appointment reminder 1" in dsn
    assert not srv.delivered_to("reception@practice.example")


def test_refused_recipients_named_and_accepted_ones_never_resent(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    srv = fault_server
    srv.script.rcpt["bad@example.org"] = ["550 5.1.1 no such user here"]
    srv.script.rcpt["later@example.org"] = ["450 4.2.1 mailbox busy"]
    cfg = config(tmp_path, srv)
    spool = Spool(tmp_path / "spool")
    raw = b"To: ok@example.org, bad@example.org\nCc: later@example.org\nSubject: x\n\nhello\n"
    spool.submit(raw)
    d = start(cfg)
    try:
        assert srv.wait_for(lambda: len(srv.messages) == 2, 20), d.log()
        assert wait_until(lambda: spool.names("deferred") == [] and spool.names("new") == [])
        time.sleep(1.5)  # a wrong retry would come a second after the last
    finally:
        assert d.stop() == 0
    first, second = srv.messages
    assert first.rcpt_tos == ["ok@example.org"]
    assert second.rcpt_tos == ["later@example.org"]  # the retry: the deferred one only
    assert srv.rcpt_seen.count("ok@example.org") == 1
    assert srv.rcpt_seen.count("bad@example.org") == 1  # refused for good: never asked again
    assert len(srv.messages) == 2
    assert spool.names("failed") == [] and spool.names("active") == []
    (dsn,) = notices(tmp_path)
    assert b"Final-Recipient: rfc822; bad@example.org" in dsn
    assert b"Status: 5.1.1" in dsn and b"no such user here" in dsn
    assert b"ok@example.org" in dsn  # named as delivered
    assert b"Final-Recipient: rfc822; ok@example.org" not in dsn
    assert "recipients_refused" in d.log() and "bad@example.org" in d.log()


@pytest.mark.parametrize(
    ("phase", "reply", "word"),
    [
        ("auth", "535 5.7.8 Authentication credentials invalid", "535"),
        # (The provider's quota pauses until its window frees: test_replies.py.)
        (
            "body",
            "554 5.2.2 mailbox full; STOREDRV.Submission.Exception:QuotaExceededException",
            "mailbox is full",
        ),
    ],
)
def test_account_failure_pauses_the_queue_and_resumes(
    tmp_path: Path, auth_fault_server: FaultServer, phase: str, reply: str, word: str
) -> None:
    srv = auth_fault_server
    if phase == "auth":
        srv.script.auth = [reply]
    else:
        srv.script.body_default = [reply]
    cfg = config(tmp_path, srv, password=True, send={"account_pause": ["4s"]})
    spool = Spool(tmp_path / "spool")
    for n in range(3):
        spool.submit(message(n))
    port = metrics_port(cfg)
    d = start(cfg)
    try:
        assert wait_until(lambda: metric(scrape(port), "exactmaild_queue_paused") == 1, 15, 0.02), (
            d.log()
        )
        st = status_json(cfg)
        assert st["paused"] is True and word in (st["pause_reason"] or ""), st
        assert spool.names("failed") == [] and srv.messages == []
        assert len(spool.names("new")) == 3  # all still queued
        # Resumes by itself once the server accepts again.
        assert srv.wait_for(lambda: len(srv.messages) == 3, 20), d.log()
        text = scrape(port)
        assert metric(text, "exactmaild_queue_paused") == 0
        assert metric(text, "exactmaild_send_failures_total", 'kind="permanent"') == 0
        assert metric(text, "exactmaild_send_failures_total", 'kind="account"') == 1
        assert d.log().count('"sending_paused"') == 1
        assert_no_secret(tmp_path, d, cfg)
    finally:
        assert d.stop() == 0
    assert spool.names("failed") == [] and notices(tmp_path) == []


def test_unknown_outcome_hold_parks_the_message_until_released(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    srv = fault_server
    srv.script.body["drop@example.org"] = [DROP]
    cfg = config(tmp_path, srv, send={"on_unknown_outcome": "hold"})
    spool = Spool(tmp_path / "spool")
    qid = spool.submit(message(1, to="drop@example.org"))
    spool.submit(message(2))
    d = start(cfg)
    try:
        assert wait_until(lambda: spool.names("hold") == [qid], 15), d.log()
        assert srv.wait_for(lambda: len(srv.messages) == 1)
        time.sleep(1.5)  # held: not retried by itself
        assert len(srv.bodies) == 2 and spool.names("hold") == [qid]
        r = exactmaild("queue", "retry", qid, "-c", str(cfg))
        assert r.returncode == 0, r.stderr
        assert srv.wait_for(lambda: len(srv.delivered_to("drop@example.org")) == 1), d.log()
    finally:
        assert d.stop() == 0
    assert spool.names("hold") == spool.names("failed") == []


# -- crashes ----------------------------------------------------------------------------


def test_kill_9_while_draining_loses_nothing(tmp_path: Path, smtp_server: SmtpServer) -> None:
    rng = random.Random(os.environ.get("EXACTMAILD_TEST_SEED", "4"))
    cfg = write_config(tmp_path, smtp_server)
    port = metrics_port(cfg)
    spool = Spool(tmp_path / "spool")
    total = 200
    for n in range(total):
        spool.submit(message(n))
    sink = smtp_server.sink
    for _ in range(5):
        d = Daemon(cfg)
        target = min(total - 1, len(sink.messages) + rng.randint(5, 30))
        try:
            d.wait_ready(port, timeout=30)
            assert wait_until(lambda t=target: len(sink.messages) >= t, 30), d.log()
            time.sleep(rng.uniform(0, 0.05))
        finally:
            d.kill()  # SIGKILL: no clean-up at all
    d = Daemon(cfg)
    try:
        d.wait_ready(port, timeout=30)
        want = {f"Appointment reminder {n}" for n in range(total)}
        assert wait_until(lambda: {subject(m.data) for m in sink.messages} >= want, 30), d.log()
        assert wait_until(lambda: spool.names("active") == [] and spool.names("new") == [])
    finally:
        assert d.stop() == 0
    got = Counter(subject(m.data) for m in sink.messages)
    assert set(got) == want
    assert sum(got.values()) - total <= 5, {s: c for s, c in got.items() if c > 1}
    assert spool.names("failed") == []


# -- storage ---------------------------------------------------------------------------


def mount_tmpfs(mnt: Path, size: str) -> Iterator[Path]:
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    yield from mount_tmpfs(tmp_path / "tiny", "300k")


def fill(fs: Path) -> Path:
    """Fill the file system to the last byte; returns the filler file."""
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def test_spool_on_a_full_filesystem_survives_and_recovers(
    tmp_path: Path, tiny_fs: Path, fault_server: FaultServer
) -> None:
    srv = fault_server
    srv.script.body["perm@example.org"] = ["550 5.1.1 mailbox unavailable"]
    cfg = config(tmp_path, srv, spool={"dir": str(tiny_fs / "spool")})
    spool = Spool(tiny_fs / "spool")
    spool.submit(message(0, to="perm@example.org"))
    time.sleep(0.01)
    for n in range(1, 4):
        spool.submit(message(n))
    filler = fill(tiny_fs)
    with pytest.raises(OSError):  # the disk is really full
        spool.submit(message(99))
    port = metrics_port(cfg)
    d = start(cfg)
    try:
        # The 550 cannot be written down (its reason file needs space): the
        # daemon says so and keeps the message, then holds off the rest.
        assert wait_until(lambda: metric(scrape(port), "exactmaild_storage_ok") == 0, 20), d.log()
        assert d.proc.poll() is None
        assert "storage_problem" in d.log()
        st = status_json(cfg)
        assert "No space left" in (st["storage_error"] or ""), st
        on_disk = sum(len(spool.names(s)) for s in ("new", "active", "deferred", "failed"))
        assert on_disk + len(srv.messages) == 4  # nothing lost
        filler.unlink()
        assert srv.wait_for(lambda: len(srv.messages) == 3, 30), d.log()
        assert wait_until(lambda: metric(scrape(port), "exactmaild_storage_ok") == 1, 15)
        assert wait_until(lambda: len(spool.names("failed")) == 1, 10), d.log()
        (failed,) = spool.names("failed")
        assert "550" in (spool.reason(failed) or "")
        assert "storage_recovered" in d.log()
    finally:
        assert d.stop() == 0
    assert len(srv.bodies) == 4  # the 550 was asked once: its outcome was kept, not re-sent
    assert {subject(m.data) for m in srv.messages} == {
        f"Appointment reminder {n}" for n in range(1, 4)
    }


def test_state_store_on_a_full_filesystem_sends_nothing_then_recovers(
    tmp_path: Path, tiny_fs: Path, fault_server: FaultServer
) -> None:
    """The state store cannot commit (its file system is full): no send may go
    out unreserved, so nothing is sent; the daemon stays up and says so; once
    space is back every message goes, once."""
    srv = fault_server
    cfg = config(tmp_path, srv, state_dir=str(tiny_fs / "state"))
    spool = Spool(tmp_path / "spool")
    port = metrics_port(cfg)
    d = start(cfg)
    try:
        assert wait_until(lambda: metric(scrape(port), "exactmaild_storage_ok") == 1, 20), d.log()
        filler = fill(tiny_fs)
        for n in range(3):
            spool.submit(message(n))
        assert wait_until(lambda: metric(scrape(port), "exactmaild_storage_ok") == 0, 20), d.log()
        assert d.proc.poll() is None
        assert "storage_problem" in d.log() and "full" in d.log()
        time.sleep(1.0)
        assert srv.messages == []  # never sent without a durable reservation
        # Each failed commit aborts one transaction at the server; the 5 s
        # back-off holds, however the sender's own renames stir the spool.
        assert len(srv.rcpt_seen) <= 2, len(srv.rcpt_seen)
        assert sum(len(spool.names(s)) for s in ("new", "active")) == 3  # nothing lost
        filler.unlink()
        assert srv.wait_for(lambda: len(srv.messages) == 3, 30), d.log()
        assert wait_until(lambda: metric(scrape(port), "exactmaild_storage_ok") == 1, 15)
        assert wait_until(lambda: spool.names("active") + spool.names("new") == [], 10)
        assert "storage_recovered" in d.log()
    finally:
        assert d.stop() == 0
    assert sorted(subject(m.data) for m in srv.messages) == [
        f"Appointment reminder {n}" for n in range(3)
    ]
    assert len(srv.rcpt_seen) <= 3 + 4  # the three, and an aborted try per back-off at most
    assert spool.names("failed") == []


# -- security --------------------------------------------------------------------------


def test_group_readable_password_file_refuses_to_start(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    cfg = config(tmp_path, fault_server, password=True)
    pw = tmp_path / "password"
    pw.chmod(0o640)
    p = subprocess.run(
        [sys.executable, "-m", "exactmaild", "run", "-c", str(cfg)],
        capture_output=True,
        timeout=30,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert p.returncode == 78, p.stdout + p.stderr
    err = p.stderr.decode()
    assert str(pw) in err and "chmod 600" in err, err
    assert PASSWORD not in err + p.stdout.decode()
    assert fault_server.logins == []


def test_submit_creates_spool_files_0640(tmp_path: Path, fault_server: FaultServer) -> None:
    cfg = config(tmp_path, fault_server)
    Spool(tmp_path / "spool")
    r = exactmaild("submit", "-c", str(cfg), input=message(1))
    assert r.returncode == 0, r.stderr
    qid = r.stdout.decode().strip()
    mode = (tmp_path / "spool" / "new" / qid).stat().st_mode & 0o777
    assert mode == 0o640, oct(mode)


def test_symlink_swapped_into_deferred_is_never_followed(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    srv = fault_server
    srv.script.body["temp@example.org"] = ["451 4.3.0 local error in processing"]
    cfg = config(tmp_path, srv, send={"retry_intervals": ["2s"]})
    secret = tmp_path / "secret.txt"
    secret.write_text("To: temp@example.org\nSubject: stolen\n\nTOP-SECRET-BYTES\n")
    spool = Spool(tmp_path / "spool")
    qid = spool.submit(message(1, to="temp@example.org"))
    d = start(cfg)
    try:
        assert wait_until(lambda: spool.names("deferred") == [qid], 15), d.log()
        path = tmp_path / "spool" / "deferred" / qid
        tmp_link = path.with_name(".swap")
        tmp_link.symlink_to(secret)
        os.replace(tmp_link, path)  # atomically swapped for a symlink out of the spool
        spool.submit(message(2))
        assert srv.wait_for(lambda: len(srv.messages) == 1, 15), d.log()
        time.sleep(3)  # past the retry time
        assert "ignored_non_file" in d.log()
    finally:
        assert d.stop() == 0
    for b in srv.bodies:
        assert b"TOP-SECRET-BYTES" not in b.data
    assert len(srv.messages) == 1 and b"Appointment reminder 2" in srv.messages[0].data
