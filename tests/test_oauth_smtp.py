"""The real daemon sending over SMTP with XOAUTH2 against a local token endpoint:
rotation stored 0600, refresh when the access token expires or is refused, a
revoked grant pausing the queue with a clear status, no token in the log."""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.tokens import (
    CLIENT_ID,
    CLIENT_SECRET,
    OAuthSmtp,
    TokenServer,
    start_token_server,
    start_xoauth2_smtp,
)
from tests.helpers import Daemon, exactmaild, message, wait_until, write_config
from tests.test_oauth import write_private

# The XOAUTH2 test server runs on loopback without TLS, which aiosmtpd warns about.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[TokenServer, OAuthSmtp]]:
    ts = start_token_server()
    smtp = start_xoauth2_smtp(ts.provider)
    yield ts, smtp
    smtp.stop()
    ts.stop()


def oauth_config(tmp: Path, ts: TokenServer, smtp: OAuthSmtp, **overrides: Any) -> Path:
    write_private(tmp / "refresh_token", ts.provider.new_refresh_token())
    write_private(tmp / "client_secret", CLIENT_SECRET)
    auth = {
        "method": "oauth2",
        "provider": "custom",
        "token_url": ts.token_url,
        "client_id": CLIENT_ID,
        "client_secret_file": str(tmp / "client_secret"),
        "refresh_token_file": str(tmp / "refresh_token"),
        "scope": "https://mail.example/smtp offline_access",
    }
    return write_config(
        tmp,
        smtp.server,
        account={"address": "reception@practice.example", "auth": auth},
        **overrides,
    )


def metrics_port(config: Path) -> int:
    import yaml

    return int(yaml.safe_load(config.read_text())["metrics"]["listen"].rsplit(":", 1)[1])


def submit(config: Path, n: int) -> None:
    done = exactmaild("submit", "-c", str(config), input=message(n))
    assert done.returncode == 0, done.stderr


def assert_no_secrets(text: str, ts: TokenServer) -> None:
    for token in [*ts.provider.issued, CLIENT_SECRET]:
        assert token not in text
    assert "Bearer " not in text


def test_send_with_xoauth2_rotates_refresh_token(
    tmp_path: Path, stack: tuple[TokenServer, OAuthSmtp]
) -> None:
    ts, smtp = stack
    config = oauth_config(tmp_path, ts, smtp)
    first = (tmp_path / "refresh_token").read_text().strip()
    daemon = Daemon(config)
    try:
        daemon.wait_ready(metrics_port(config), timeout=30)
        submit(config, 1)
        got = smtp.server.sink.wait_for(1, timeout=30)
        assert len(got) == 1, daemon.log()
        assert b"Appointment reminder 1" in got[0].data
        assert smtp.logins == [("reception@practice.example", True)]
        stored = (tmp_path / "refresh_token").read_text().strip()
        assert stored != first
        assert stored in ts.provider.current_refresh_tokens
        assert stat.S_IMODE((tmp_path / "refresh_token").stat().st_mode) == 0o600
        assert not list(tmp_path.glob(".refresh_token.*"))  # no temporary file left
    finally:
        assert daemon.stop() == 0
    log = daemon.log()
    assert "oauth_access_refreshed" in log
    assert_no_secrets(log, ts)


def test_expired_and_refused_access_tokens_are_refreshed(
    tmp_path: Path, stack: tuple[TokenServer, OAuthSmtp]
) -> None:
    ts, smtp = stack
    ts.provider.expires_in = 2  # the endpoint and the SMTP server both honour it
    # Each send logs in anew (a kept connection needs no token): the token at login is the point.
    config = oauth_config(tmp_path, ts, smtp, outgoing={"keepalive": "0s"})
    daemon = Daemon(config)
    try:
        daemon.wait_ready(metrics_port(config), timeout=30)
        submit(config, 1)
        assert len(smtp.server.sink.wait_for(1, timeout=30)) == 1, daemon.log()
        # the daemon's token expires while it idles; the next send refreshes first
        time.sleep(2.2)
        ts.provider.expires_in = 3600
        submit(config, 2)
        assert len(smtp.server.sink.wait_for(2, timeout=30)) == 2, daemon.log()
        assert all(ok for _, ok in smtp.logins), smtp.logins
        assert ts.provider.grants("refresh_token") == 2
        submit(config, 3)  # a new connection, the cached token
        assert len(smtp.server.sink.wait_for(3, timeout=30)) == 3, daemon.log()
        assert ts.provider.grants("refresh_token") == 2
        # the server starts refusing a token the daemon still thinks good
        ts.provider.expire_access_tokens()
        submit(config, 4)
        assert len(smtp.server.sink.wait_for(4, timeout=30)) == 4, daemon.log()
        # refused once (answered empty to the error challenge), then a fresh token worked
        assert [ok for _, ok in smtp.logins][-2:] == [False, True], smtp.logins
        assert all(user == "reception@practice.example" for user, _ in smtp.logins)
        assert ts.provider.grants("refresh_token") == 3
        status = json.loads(exactmaild("status", "--json", "-c", str(config)).stdout)
        assert not status["paused"]
    finally:
        assert daemon.stop() == 0
    assert "sending_paused" not in daemon.log()
    assert_no_secrets(daemon.log(), ts)


def test_revoked_grant_pauses_the_queue_and_loses_nothing(
    tmp_path: Path, stack: tuple[TokenServer, OAuthSmtp]
) -> None:
    ts, smtp = stack
    config = oauth_config(tmp_path, ts, smtp)
    ts.provider.revoke_refresh_tokens()
    daemon = Daemon(config)
    try:
        port = metrics_port(config)
        daemon.wait_ready(port, timeout=30)
        submit(config, 1)
        submit(config, 2)

        def paused() -> dict[str, Any] | None:
            done = exactmaild("status", "--json", "-c", str(config))
            st: dict[str, Any] = json.loads(done.stdout)
            return st if st["paused"] else None

        assert wait_until(lambda: paused() is not None, timeout=30), daemon.log()
        st = paused()
        assert st is not None
        reason = st["pause_reason"]
        assert "re-authorisation is needed" in reason and "exactmaild authorize" in reason
        assert smtp.server.sink.messages == []
        assert not list((tmp_path / "spool" / "failed").glob("*"))
        queue = exactmaild("queue", "list", "-c", str(config))
        assert queue.returncode == 0
        from tests.helpers import metric, scrape

        text = scrape(port)
        assert metric(text, "exactmaild_queue_paused") == 1
        # the sysadmin re-authorises (what `exactmaild authorize` writes) and flushes
        write_private(tmp_path / "refresh_token", ts.provider.new_refresh_token())
        assert exactmaild("flush", "-c", str(config)).returncode == 0
        got = smtp.server.sink.wait_for(2, timeout=30)
        assert len(got) == 2, daemon.log()
    finally:
        assert daemon.stop() == 0
    log = daemon.log()
    assert "sending_paused" in log and "invalid_grant" in log
    assert_no_secrets(log, ts)
