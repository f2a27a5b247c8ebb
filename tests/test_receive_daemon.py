"""Issue 3 acceptance that needs the real daemon (`python -m exactmaild run`):
checks on the schedule into the Maildir across restarts, failing checks that
never stop sending, mail sent elsewhere charged against the limit, kill -9
mid-fetch, `flush` and `test-connection`, against a real Dovecot and aiosmtpd.

The daemon logs in to both servers with the one account's credentials, so
aiosmtpd is started with AUTH accepting exactly the password the daemon uses
(the Dovecot user's, or the deliberately wrong one of the failure tests).
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import pytest
import yaml

from exactmaild.outbox.spool import Spool
from tests.fixtures.dovecot import USER, Dovecot, free_port, make_message
from tests.fixtures.smtp import SmtpServer, start_smtp
from tests.helpers import Daemon, exactmaild, message, metric, scrape, wait_until, write_config

pytestmark = pytest.mark.dovecot

OK = 'result="ok"'
ERROR = 'result="error"'


@pytest.fixture
def smtp_login(request: pytest.FixtureRequest) -> Iterator[SmtpServer]:
    """aiosmtpd without TLS, with AUTH accepting `reception` and the Dovecot password
    (or the password given by indirect parametrisation)."""
    password = getattr(request, "param", None) or Dovecot.password
    controller, server = start_smtp("none", auth=True, login=(USER, password))
    yield server
    controller.stop()


def daemon_config(
    tmp: Path,
    smtp: SmtpServer,
    dovecot: Dovecot,
    *,
    password: str | None = None,
    port: int | None = None,
    every: str = "1s",
    send: dict[str, Any] | None = None,
) -> Path:
    pw = tmp / "password"
    pw.write_text((password or dovecot.password) + "\n")
    pw.chmod(0o600)
    return write_config(
        tmp,
        smtp,
        timezone="UTC",
        account={
            "address": f"{USER}@practice.example",
            "auth": {"method": "password", "username": USER, "password_file": str(pw)},
        },
        incoming={
            "protocol": "imap",
            "host": "127.0.0.1",
            "port": port or dovecot.imaps,
            "security": "tls",
            "tls_ca_file": str(dovecot.ca_file),
            "folder": "INBOX",
        },
        receive={"maildir": str(tmp / "inbox")},
        schedule={"every": every},
        send=send or {},
    )


def metrics_port(cfg: Path) -> int:
    return int(yaml.safe_load(cfg.read_text())["metrics"]["listen"].rsplit(":", 1)[1])


def status(cfg: Path) -> dict[str, Any]:
    r = exactmaild("status", "--json", "-c", str(cfg))
    assert r.returncode == 0, r.stdout + r.stderr
    return dict(json.loads(r.stdout))


def value(port: int, name: str, labels: str = "") -> float | None:
    return metric(scrape(port), name, labels)


def delivered(maildir: Path) -> list[Path]:
    return [p for sub in ("new", "cur") for p in (maildir / sub).glob("*") if p.is_file()]


def message_ids(maildir: Path) -> collections.Counter[str]:
    parser = BytesHeaderParser()
    return collections.Counter(
        str(parser.parsebytes(p.read_bytes())["Message-ID"]).strip() for p in delivered(maildir)
    )


def mid_of(data: bytes) -> str:
    return str(BytesHeaderParser().parsebytes(data)["Message-ID"]).strip()


def events(d: Daemon, name: str) -> list[dict[str, Any]]:
    out = []
    for line in d.log().splitlines():
        if not line.startswith("{"):
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("event") == name:
            out.append(ev)
    return out


def start(cfg: Path) -> tuple[Daemon, int]:
    d = Daemon(cfg)
    port = metrics_port(cfg)
    d.wait_ready(port, timeout=30)
    return d, port


# -- 1. checks on the schedule, across a restart --------------------------------------


@pytest.mark.slow
def test_daemon_receives_on_schedule_and_across_restart(
    dovecot: Dovecot, smtp_login: SmtpServer, tmp_path: Path
) -> None:
    first = {mid_of(m) for m in dovecot.add_messages(1, 3)}
    cfg = daemon_config(tmp_path, smtp_login, dovecot)
    maildir = tmp_path / "inbox"
    d, port = start(cfg)
    try:
        assert wait_until(lambda: value(port, "exactmaild_received_total") == 3, 30), d.log()
        assert set(message_ids(maildir)) == first
        assert (value(port, "exactmaild_receive_checks_total", OK) or 0) >= 1
        # The gauge of the last successful check: set, and recent.
        ts = value(port, "exactmaild_last_receive_check_timestamp_seconds")
        assert ts is not None and abs(ts - time.time()) < 60
        st = status(cfg)
        assert st["daemon_running"] is True
        # Instants in --json are ISO 8601 with their offset.
        last, nxt = (
            dt.datetime.fromisoformat(st[k]).timestamp() for k in ("last_check", "next_check")
        )
        assert abs(last - time.time()) < 60
        assert nxt >= last
        assert st["receive_error"] is None
        # More checks (every 1s) deliver nothing more.
        ok = value(port, "exactmaild_receive_checks_total", OK) or 0
        assert wait_until(
            lambda: (value(port, "exactmaild_receive_checks_total", OK) or 0) >= ok + 2, 20
        ), d.log()
        assert value(port, "exactmaild_received_total") == 3
    finally:
        assert d.stop() == 0, d.log()

    d, port = start(cfg)
    try:
        assert wait_until(
            lambda: (value(port, "exactmaild_receive_checks_total", OK) or 0) >= 2, 30
        ), d.log()
        assert value(port, "exactmaild_received_total") == 0, d.log()
        assert len(delivered(maildir)) == 3
        second = {mid_of(m) for m in dovecot.add_messages(4, 2)}
        assert wait_until(lambda: value(port, "exactmaild_received_total") == 2, 30), d.log()
        ids = message_ids(maildir)
        assert set(ids) == first | second
        assert all(n == 1 for n in ids.values()), ids
    finally:
        assert d.stop() == 0, d.log()


# -- 2. failing checks: counted, logged once per streak, sending goes on --------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("smtp_login", "case"),
    [("wrong-password", "password"), (None, "port")],
    indirect=["smtp_login"],
)
def test_failing_checks_do_not_stop_sending(
    request: pytest.FixtureRequest, smtp_login: SmtpServer, tmp_path: Path, case: str
) -> None:
    if case == "password":
        # A wrong password makes Dovecot slow down the next logins from this
        # address: an instance of its own. aiosmtpd accepts that password, so
        # only the mailbox refuses it.
        server: Dovecot = request.getfixturevalue("fresh_dovecot")
        cfg = daemon_config(tmp_path, smtp_login, server, password="wrong-password")
        step = "login"
        # Each refused login makes Dovecot hold the next one for ~4 s: two
        # failing checks show the streak.
        several = 2
    else:
        server = request.getfixturevalue("dovecot")
        cfg = daemon_config(tmp_path, smtp_login, server, port=free_port())
        step = "connect"
        several = 3
    server.add_messages(1, 1)
    d, port = start(cfg)
    try:
        assert wait_until(
            lambda: (value(port, "exactmaild_receive_checks_total", ERROR) or 0) >= several, 40
        ), d.log()
        # Sending goes on meanwhile.
        Spool(tmp_path / "spool").submit(message(1))
        assert len(smtp_login.sink.wait_for(1, 20)) == 1, d.log()
        assert (value(port, "exactmaild_receive_checks_total", ERROR) or 0) >= several
        assert (value(port, "exactmaild_receive_checks_total", OK) or 0) == 0
        assert value(port, "exactmaild_received_total") == 0
        failed = events(d, "receive_failed")
        assert len(failed) == 1, failed  # once per streak, not once per check
        assert step in failed[0]["error"].lower(), failed
        st = status(cfg)
        assert st["receive_error"] and step in st["receive_error"].lower(), st
        assert st["last_error"] == st["receive_error"]
        assert st["last_check"] is None  # no check has succeeded
        assert delivered(tmp_path / "inbox") == []
    finally:
        assert d.stop() == 0, d.log()


# -- 3. mail sent elsewhere ---------------------------------------------------------


@pytest.mark.slow
def test_count_sent_folder_lowers_the_limit(
    dovecot: Dovecot, smtp_login: SmtpServer, tmp_path: Path
) -> None:
    dovecot._ensure_folder("Sent")  # an empty Sent folder: the checks succeed from the start
    spool = Spool(tmp_path / "spool")
    spool.submit(message(1))
    spool.submit(message(2))
    cfg = daemon_config(
        tmp_path,
        smtp_login,
        dovecot,
        send={"count_sent_folder": "Sent", "daily_limit": 100, "reserve": 0},
    )
    d, port = start(cfg)
    try:
        sent = smtp_login.sink.wait_for(2, 20)
        assert len(sent) == 2, d.log()
        assert wait_until(lambda: value(port, "exactmaild_sent_in_window") == 2), d.log()
        allowance = status(cfg)["allowance"]
        assert allowance == 100
        assert value(port, "exactmaild_daily_limit_remaining") == allowance - 2
        assert wait_until(
            lambda: (value(port, "exactmaild_receive_checks_total", OK) or 0) >= 1, 20
        ), d.log()
        assert value(port, "exactmaild_sent_elsewhere_in_window") == 0

        # Webmail's Sent folder: exactmaild's own two (as the server got them) + 2 others.
        for r in sent:
            dovecot.add_message(r.data, folder="Sent")
        dovecot.add_message(make_message(101, subject="from webmail 1"), folder="Sent")
        dovecot.add_message(make_message(102, subject="from webmail 2"), folder="Sent")
        assert wait_until(lambda: value(port, "exactmaild_sent_elsewhere_in_window") == 2, 20), (
            d.log()
        )
        # Give a few more checks the chance to count wrongly (e.g. our own two).
        ok = value(port, "exactmaild_receive_checks_total", OK) or 0
        assert wait_until(
            lambda: (value(port, "exactmaild_receive_checks_total", OK) or 0) >= ok + 2, 20
        ), d.log()
        assert value(port, "exactmaild_sent_elsewhere_in_window") == 2
        assert value(port, "exactmaild_daily_limit_remaining") == allowance - 2 - 2
        st = status(cfg)
        assert st["sent_elsewhere_in_window"] == 2
        assert st["sent_in_window"] == 2
        assert st["remaining"] == allowance - 2 - 2
    finally:
        assert d.stop() == 0, d.log()

    # Restart with the mailbox unreachable: no check can succeed, the count
    # kept in the state still applies.
    cfg = daemon_config(
        tmp_path,
        smtp_login,
        dovecot,
        port=free_port(),
        send={"count_sent_folder": "Sent", "daily_limit": 100, "reserve": 0},
    )
    d, port = start(cfg)
    try:
        assert value(port, "exactmaild_sent_elsewhere_in_window") == 2, d.log()
        assert value(port, "exactmaild_daily_limit_remaining") == allowance - 2 - 2
        assert wait_until(
            lambda: (value(port, "exactmaild_receive_checks_total", ERROR) or 0) >= 1, 20
        ), d.log()
        # A failed check does not forget it either.
        assert value(port, "exactmaild_sent_elsewhere_in_window") == 2
        assert status(cfg)["sent_elsewhere_in_window"] == 2
    finally:
        assert d.stop() == 0, d.log()


# -- 4. kill -9 mid-fetch ---------------------------------------------------------------

TOTAL = 200


@pytest.mark.slow
def test_kill_9_of_the_daemon_mid_fetch(
    dovecot: Dovecot, smtp_login: SmtpServer, tmp_path: Path
) -> None:
    expected = {mid_of(m) for m in dovecot.add_messages(1, TOTAL)}
    cfg = daemon_config(tmp_path, smtp_login, dovecot)
    new = tmp_path / "inbox" / "new"
    d = Daemon(cfg)
    try:
        deadline = time.monotonic() + 40
        while not (new.is_dir() and len(os.listdir(new)) >= 50):
            assert d.proc.poll() is None, d.log()
            assert time.monotonic() < deadline, "no progress in 40 s: " + d.log()
            time.sleep(0.002)
        d.proc.send_signal(signal.SIGKILL)
    finally:
        d.kill()
    assert d.proc.returncode == -signal.SIGKILL
    landed = len(os.listdir(new))
    assert 50 <= landed < TOTAL, f"the fetch was not interrupted ({landed} delivered)"

    d, port = start(cfg)
    try:
        assert wait_until(lambda: set(message_ids(tmp_path / "inbox")) == expected, 40), d.log()
        # One more successful check after that: nothing further arrives.
        ok = value(port, "exactmaild_receive_checks_total", OK) or 0
        assert wait_until(
            lambda: (value(port, "exactmaild_receive_checks_total", OK) or 0) >= ok + 1, 20
        ), d.log()
        got = value(port, "exactmaild_received_total")
        assert got in (TOTAL - landed, TOTAL - landed + 1), (got, landed)
    finally:
        assert d.stop() == 0, d.log()
    ids = message_ids(tmp_path / "inbox")
    assert set(ids) == expected  # nothing lost
    assert sum(n - 1 for n in ids.values()) <= 1, ids.most_common(3)  # at most one duplicate


# -- 5. flush ---------------------------------------------------------------------------


def test_flush_checks_the_mailbox_at_once(
    dovecot: Dovecot, smtp_login: SmtpServer, tmp_path: Path
) -> None:
    cfg = daemon_config(tmp_path, smtp_login, dovecot, every="1h")
    d, port = start(cfg)
    try:
        # The start-up check; the next periodic one is an hour away.
        assert wait_until(lambda: value(port, "exactmaild_receive_checks_total", OK) == 1, 20), (
            d.log()
        )
        next_check = dt.datetime.fromisoformat(status(cfg)["next_check"]).timestamp()
        assert next_check > time.time() + 3000
        mid = mid_of(dovecot.add_messages(1, 1)[0])
        time.sleep(1.5)
        assert delivered(tmp_path / "inbox") == []  # no check without the flush
        r = exactmaild("flush", "-c", str(cfg))
        assert r.returncode == 0, r.stdout + r.stderr
        flushed = time.monotonic()
        assert wait_until(lambda: len(delivered(tmp_path / "inbox")) == 1, 15), d.log()
        assert time.monotonic() - flushed < 5
        assert set(message_ids(tmp_path / "inbox")) == {mid}
        assert wait_until(lambda: value(port, "exactmaild_receive_checks_total", OK) == 2, 10)
        assert value(port, "exactmaild_received_total") == 1
    finally:
        assert d.stop() == 0, d.log()


# -- 6. test-connection -----------------------------------------------------------------


def test_test_connection_prints_each_step(
    dovecot: Dovecot, smtp_login: SmtpServer, tmp_path: Path
) -> None:
    cfg = daemon_config(tmp_path, smtp_login, dovecot)
    r = exactmaild("test-connection", "-c", str(cfg))
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    for step in ("connect", "TLS", "login", "folder"):
        assert re.search(rf"^incoming ok +{step}\b", out, re.M | re.I), (step, out)
    assert "FAIL" not in out
    assert re.search(r"^outgoing ok\b", out, re.M), out
    assert smtp_login.sink.messages == []  # sends nothing
    assert delivered(tmp_path / "inbox") == []  # fetches nothing


@pytest.mark.parametrize("smtp_login", ["wrong-password"], indirect=True)
def test_test_connection_names_the_failed_login(
    fresh_dovecot: Dovecot, smtp_login: SmtpServer, tmp_path: Path
) -> None:
    cfg = daemon_config(tmp_path, smtp_login, fresh_dovecot, password="wrong-password")
    r = exactmaild("test-connection", "-c", str(cfg))
    out = r.stdout.decode()
    assert r.returncode != 0, out
    assert re.search(r"^incoming ok +TLS", out, re.M | re.I), out
    assert re.search(r"^incoming FAIL login", out, re.M | re.I), out
    assert "wrong-password" not in out + r.stderr.decode()
