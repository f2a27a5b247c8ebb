"""IMAP IDLE (`incoming.idle: true`) against a real Dovecot, through the real daemon.

Mail delivered with `doveadm save` (as the server's own MTA would) reaches
the Maildir within 2 s; killing Dovecot's imap process of the IDLE session
(`doveadm who`) makes the daemon reconnect and lose or duplicate nothing;
a reload idles again with the new configuration; SIGTERM while idling ends
the daemon within 2 s; outside the schedule's window
there is no IDLE connection at all. The renewal (DONE + IDLE) is exercised
in-process with a renewal time of a fraction of a second.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from exactmaild.auth.oauth import TokenCache
from exactmaild.auth.tls import TlsContexts
from exactmaild.config.model import Account, Auth, Schedule
from exactmaild.core.log import get_log
from exactmaild.receive import watcher as watcher_module
from exactmaild.receive.receiver import CheckResult
from exactmaild.receive.watcher import IdleWatcher
from exactmaild.store.state import StateStore
from tests.fixtures.dovecot import (
    USER,
    Dovecot,
    build_config,
    cleanup,
    make_message,
    start_dovecot,
)
from tests.fixtures.smtp import SmtpServer, start_smtp
from tests.helpers import exactmaild, wait_until, write_config
from tests.test_receive_daemon import (
    daemon_config,
    events,
    message_ids,
    mid_of,
    start,
    status,
    value,
)

pytestmark = pytest.mark.dovecot


@pytest.fixture
def smtp_login() -> Iterator[SmtpServer]:
    """aiosmtpd accepting the Dovecot user's login (the daemon logs in to both)."""
    controller, server = start_smtp("none", auth=True, login=(USER, Dovecot.password))
    yield server
    controller.stop()


CONNECTED = "exactmaild_idle_connected"


def idle_config(tmp: Path, smtp: SmtpServer, dovecot: Dovecot, **schedule: Any) -> Path:
    """The daemon on Dovecot with IDLE on and an hourly safety-net check."""
    cfg = daemon_config(tmp, smtp, dovecot, every="1h")
    text = cfg.read_text().replace("folder: INBOX", "folder: INBOX\n  idle: true")
    assert "idle: true" in text
    if schedule:
        import yaml

        data = yaml.safe_load(text)
        data["schedule"].update(schedule)
        text = yaml.safe_dump(data)
    cfg.write_text(text)
    return cfg


def arrives_within(maildir: Path, mid: str, seconds: float) -> float | None:
    """Seconds until the message with `mid` is in the Maildir, or None past `seconds`."""
    t0 = time.monotonic()
    if not wait_until(lambda: message_ids(maildir)[mid] >= 1, seconds, interval=0.02):
        return None
    return time.monotonic() - t0


@pytest.mark.slow
def test_idle_delivers_in_seconds_survives_a_killed_session_and_stops_fast(
    dovecot: Dovecot,
    smtp_login: SmtpServer,
    tmp_path: Path,
) -> None:
    cfg = idle_config(tmp_path, smtp_login, dovecot)
    maildir = tmp_path / "inbox"
    d, port = start(cfg)
    stopped = False
    try:
        assert wait_until(lambda: value(port, CONNECTED) == 1, 15), d.log()
        # One connection: the scheduled check at start ran on the watcher's.
        assert len(dovecot.imap_pids()) == 1
        for n in (1, 2):
            data = make_message(n, subject=f"idle {n}")
            dovecot.save(data)
            took = arrives_within(maildir, mid_of(data), 2.0)
            assert took is not None, f"message {n} not delivered within 2 s: {d.log()}"
        text = status(cfg)
        assert text["idle"] == "connected"
        r = exactmaild("status", "-c", str(cfg))
        assert "IDLE connected" in r.stdout.decode(), r.stdout
        # Every delivery has its latency from INTERNALDATE.
        assert (value(port, "exactmaild_receive_latency_seconds_count") or 0) == 2

        # The server's imap process for this session dies: reconnect, no loss.
        [pid] = dovecot.imap_pids()
        os.kill(pid, signal.SIGKILL)
        lost = make_message(3, subject="while reconnecting")
        dovecot.save(lost)
        assert wait_until(lambda: events_named(d, "idle_reconnect"), 10), d.log()
        assert wait_until(lambda: message_ids(maildir)[mid_of(lost)] == 1, 15), d.log()
        assert wait_until(lambda: value(port, CONNECTED) == 1, 15), d.log()
        after = make_message(4, subject="after the reconnect")
        dovecot.save(after)
        assert arrives_within(maildir, mid_of(after), 2.0) is not None, d.log()
        ids = message_ids(maildir)
        assert len(ids) == 4 and set(ids.values()) == {1}, ids  # none lost, none twice

        # A reload logs out and idles again with the new configuration: still one session.
        connects = len(events(d, "idle_connected"))
        d.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: len(events(d, "idle_connected")) > connects, 10), d.log()
        assert wait_until(lambda: len(dovecot.imap_pids()) == 1, 5)
        again = make_message(5, subject="after the reload")
        dovecot.save(again)
        assert arrives_within(maildir, mid_of(again), 2.0) is not None, d.log()

        # SIGTERM while idling: the daemon ends IDLE, logs out and exits at once.
        t0 = time.monotonic()
        assert d.stop() == 0, d.log()
        stopped = True
        assert time.monotonic() - t0 < 2.0, d.log()
        assert wait_until(lambda: not dovecot.imap_pids(), 5)
    finally:
        if not stopped:
            d.stop()


def events_named(d: Any, name: str) -> bool:
    return bool(events(d, name))


@pytest.mark.slow
def test_no_idle_connection_outside_the_window(
    dovecot: Dovecot,
    smtp_login: SmtpServer,
    tmp_path: Path,
) -> None:
    hour = (dt.datetime.now(dt.UTC).hour + 12) % 24
    cfg = idle_config(tmp_path, smtp_login, dovecot, window=f"{hour:02d}:00-{hour:02d}:30")
    maildir = tmp_path / "inbox"
    d, port = start(cfg)
    try:
        data = make_message(1, subject="outside the window")
        dovecot.save(data)
        time.sleep(2.0)
        assert not dovecot.imap_pids()
        assert (value(port, CONNECTED) or 0) == 0
        assert message_ids(maildir)[mid_of(data)] == 0
        assert status(cfg)["idle"] is None
        # Outside the window only the schedule (and flush) check: one check, then logout.
        assert exactmaild("flush", "-c", str(cfg)).returncode == 0
        assert wait_until(lambda: message_ids(maildir)[mid_of(data)] == 1, 15), d.log()
        assert wait_until(lambda: not dovecot.imap_pids(), 5)
        assert (value(port, CONNECTED) or 0) == 0
        # The latency is observed for checks without IDLE too: about 2 s here.
        assert value(port, "exactmaild_receive_latency_seconds_count") == 1
        waited = value(port, "exactmaild_receive_latency_seconds_sum") or 0
        assert 1 <= waited < 60, waited
    finally:
        assert d.stop() == 0, d.log()


def test_idle_is_renewed_and_still_hears_new_mail(
    dovecot: Dovecot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Renewal every 0.2 s (25 min in the daemon): DONE + IDLE again on the same
    connection, and mail is still announced after several renewals."""
    calls: list[object] = []
    real_idle = watcher_module.idle

    def counting_idle(*args: Any, **kwargs: Any) -> Any:
        ended = real_idle(*args, **kwargs)
        calls.append(ended)
        return ended

    monkeypatch.setattr(watcher_module, "idle", counting_idle)
    w, results, up, state = _watcher(dovecot, tmp_path, renew_after=0.2)
    try:
        assert wait_until(lambda: up == [True] and len(results) == 1, 10), (up, results)
        assert wait_until(lambda: len(calls) >= 4, 5), calls  # renewed, not reconnected
        assert up == [True] and len(dovecot.imap_pids()) == 1
        data = make_message(7, subject="after renewals")
        dovecot.save(data)
        assert wait_until(lambda: sum(r.delivered for r in results) == 1, 3), results
        assert results[-1].latencies and results[-1].latencies[0] < 60
        # A scheduled check handed over runs on the same connection.
        n = len(results)
        w.check(None)
        assert wait_until(lambda: len(results) > n, 5)
        assert len(dovecot.imap_pids()) == 1
    finally:
        w.stop()
        w.join(5)
        state.close()
    assert not w.alive and up == [True, False]


def test_check_config_says_idle_and_refuses_it_with_pop3(
    smtp_login: SmtpServer, tmp_path: Path
) -> None:
    cfg = write_config(
        tmp_path,
        smtp_login,
        incoming={"protocol": "pop3", "host": "127.0.0.1", "port": 995, "idle": True},
        receive={"maildir": str(tmp_path / "inbox")},
    )
    r = exactmaild("check-config", "--syntax", "-c", str(cfg))
    assert r.returncode == 78, r.stdout + r.stderr
    out = (r.stdout + r.stderr).decode()
    assert "incoming.idle" in out and "protocol: imap" in out, out

    cfg = write_config(
        tmp_path,
        smtp_login,
        incoming={"protocol": "imap", "host": "127.0.0.1", "port": 993, "idle": True},
        receive={"maildir": str(tmp_path / "inbox")},
    )
    r = exactmaild("check-config", "--syntax", "-c", str(cfg))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "IDLE inside the window" in r.stdout.decode(), r.stdout


def test_a_server_without_idle_ends_the_watcher_with_a_clear_error(
    dovecot_server: Dovecot, tmp_path: Path
) -> None:
    """A server that does not list IDLE: one error saying what to do, no retry loop
    (the scheduler then leaves the mailbox to the scheduled checks)."""
    server = start_dovecot(
        dovecot_server.dir,
        configure=lambda _d, conf: conf + "imap_capability = IMAP4rev1 LITERAL+ UIDPLUS\n",
    )
    try:
        w, results, up, state = _watcher(server, tmp_path, renew_after=60.0)
        try:
            assert wait_until(lambda: not w.alive, 10), results
            assert up == [] and w.refused is not None
            [result] = results
            assert result.error is not None
            assert "does not offer IDLE" in result.error and "incoming.idle: false" in result.error
        finally:
            w.stop()
            w.join(5)
            state.close()
    finally:
        cleanup(server)


def _watcher(
    server: Dovecot, tmp_path: Path, *, renew_after: float
) -> tuple[IdleWatcher, list[CheckResult], list[bool], StateStore]:
    """An IdleWatcher on `server`'s INBOX, started; its reports and connection changes."""
    password = tmp_path / "password"
    password.write_text(server.password + "\n")
    password.chmod(0o600)
    cfg = build_config(tmp_path, replace(server.incoming("imap", "tls"), idle=True))
    cfg = replace(
        cfg,
        account=Account(
            address=cfg.account.address, auth=Auth(username=USER, password_file=password)
        ),
        schedule=Schedule(),
    )
    results: list[CheckResult] = []
    up: list[bool] = []
    state = StateStore(cfg.state_dir)
    w = IdleWatcher(
        cfg,
        state,
        log=get_log("test"),
        tokens=TokenCache(),
        tls=TlsContexts(),
        report=lambda result, window: results.append(result),
        connected=up.append,
        renew_after=renew_after,
    )
    w.start()
    return w, results, up, state
