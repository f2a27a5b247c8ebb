"""IMAP and POP3 XOAUTH2 against a real Dovecot whose `oauth2` passdb checks each
token at the local introspection endpoint (tests/fixtures/tokens.py), and the
daemon sending over SMTP and checking over IMAP with one token cache."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Literal

import pytest
import yaml

from exactmaild.auth.oauth import OAuth2Credentials, TokenCache
from exactmaild.config.model import Account, Auth
from exactmaild.receive.receiver import Receiver
from exactmaild.store.state import StateStore
from tests.fixtures import dovecot as dv
from tests.fixtures.tokens import (
    CLIENT_ID,
    CLIENT_SECRET,
    TokenServer,
    start_token_server,
    start_xoauth2_smtp,
)
from tests.helpers import Daemon, exactmaild, message, metric, scrape, wait_until, write_config
from tests.test_oauth import write_private

pytestmark = pytest.mark.dovecot

_OAUTH_PASSDB = """\
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {dir}/oauth2.conf.ext
}}
"""
_OAUTH_ARGS = """\
introspection_mode = post
introspection_url = {url}
username_attribute = username
active_attribute = active
active_value = true
"""


def start_oauth_dovecot(ts: TokenServer) -> dv.Dovecot:
    """Dovecot with the oauth2 passdb (before the passwd-file one) against `ts`."""

    def configure(d: Path, conf: str) -> str:
        (d / "oauth2.conf.ext").write_text(_OAUTH_ARGS.format(url=ts.introspection_url))
        conf = conf.replace(
            "auth_mechanisms = plain login", "auth_mechanisms = plain login xoauth2 oauthbearer"
        )
        return conf.replace("passdb {", _OAUTH_PASSDB.format(dir=d) + "passdb {", 1)

    return dv.start_dovecot(configure=configure, prefix="exactmaild-dovecot-oauth-")


@pytest.fixture(scope="module")
def oauth_dovecot() -> Iterator[tuple[dv.Dovecot, TokenServer]]:
    ts = start_token_server()
    ts.provider.username = dv.USER
    try:
        server = start_oauth_dovecot(ts)
    except BaseException:
        ts.stop()
        raise
    yield server, ts
    dv.cleanup(server)
    ts.stop()


def oauth_account(tmp: Path, ts: TokenServer) -> Account:
    write_private(tmp / "refresh_token", ts.provider.new_refresh_token())
    write_private(tmp / "client_secret", CLIENT_SECRET)
    return Account(
        address=f"{dv.USER}@practice.example",
        auth=Auth(
            method="oauth2",
            username=dv.USER,
            provider="custom",
            token_url=ts.token_url,
            client_id=CLIENT_ID,
            client_secret_file=tmp / "client_secret",
            refresh_token_file=tmp / "refresh_token",
            scope="https://mail.example/imap",
        ),
    )


@pytest.mark.parametrize(
    ("protocol", "security"), [("imap", "tls"), ("pop3", "tls"), ("imap", "starttls")]
)
def test_xoauth2_login_and_check_delivers(
    tmp_path: Path,
    oauth_dovecot: tuple[dv.Dovecot, TokenServer],
    protocol: Literal["imap", "pop3"],
    security: Literal["tls", "starttls"],
) -> None:
    server, ts = oauth_dovecot
    server.wipe()
    tokens = TokenCache()
    account = oauth_account(tmp_path, ts)
    cfg = replace(dv.build_config(tmp_path, server.incoming(protocol, security)), account=account)
    server.add_messages(1, 2)
    before = ts.provider.introspections
    state = StateStore(cfg.state_dir)
    try:
        result = Receiver(cfg, state, OAuth2Credentials(account, tokens), timeout=30).check(
            time.time()
        )
    finally:
        state.close()
    assert result.error is None, server.log_text()
    assert result.delivered == 2
    assert cfg.receive is not None
    assert dv.maildir_subjects(cfg.receive.maildir) == ["message 1", "message 2"]
    # Dovecot really asked the endpoint (it was not some other passdb that let us in)
    assert ts.provider.introspections > before
    log = server.log_text()
    assert all(token not in log for token in ts.provider.issued)


def test_expired_token_is_refused_then_refreshed(
    tmp_path: Path, oauth_dovecot: tuple[dv.Dovecot, TokenServer]
) -> None:
    server, ts = oauth_dovecot
    server.wipe()
    tokens = TokenCache()
    account = oauth_account(tmp_path, ts)
    cfg = replace(dv.build_config(tmp_path, server.incoming("imap", "tls")), account=account)
    state = StateStore(cfg.state_dir)
    try:
        creds = OAuth2Credentials(account, tokens)
        assert Receiver(cfg, state, creds, timeout=30).check(time.time()).error is None
        before = tokens.failures()["login"]
        ts.provider.expire_access_tokens()  # Dovecot's introspection now says inactive
        server.add_messages(1, 1)
        # A refused login makes Dovecot hold the next one from the same address
        # back by about 4 s (auth penalty, per instance): refuse on another one.
        other = start_oauth_dovecot(ts)
        try:
            elsewhere = replace(cfg, incoming=other.incoming("imap", "tls"))
            failed = Receiver(
                elsewhere, state, OAuth2Credentials(account, tokens), timeout=30
            ).check(time.time())
        finally:
            dv.cleanup(other)
        assert failed.error is not None and "refused the login" in failed.error
        assert tokens.failures()["login"] == before + 1  # the adapter invalidated it
        ok = Receiver(cfg, state, OAuth2Credentials(account, tokens), timeout=30).check(time.time())
        assert ok.error is None and ok.delivered == 1
    finally:
        state.close()


# The XOAUTH2 SMTP server runs on loopback without TLS, which aiosmtpd warns about.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_daemon_sends_and_checks_with_one_token_cache(
    tmp_path: Path, oauth_dovecot: tuple[dv.Dovecot, TokenServer]
) -> None:
    """The sender and the mailbox checks share the daemon's TokenCache: the
    refresh token is a systemd credential that cannot be rewritten, and each
    refresh rotates it, so a second cache would offer the dead first token."""
    server, ts = oauth_dovecot
    server.wipe()
    server.add_messages(1, 1)
    smtp = start_xoauth2_smtp(ts.provider)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    write_private(credentials / "refresh_token", ts.provider.new_refresh_token())
    write_private(tmp_path / "client_secret", CLIENT_SECRET)
    config = write_config(
        tmp_path,
        smtp.server,
        timezone="UTC",
        account={
            "address": f"{dv.USER}@practice.example",
            "auth": {
                "method": "oauth2",
                "username": dv.USER,
                "provider": "custom",
                "token_url": ts.token_url,
                "client_id": CLIENT_ID,
                "client_secret_file": str(tmp_path / "client_secret"),
                "scope": "https://mail.example/all offline_access",
            },
        },
        incoming={
            "protocol": "imap",
            "host": "127.0.0.1",
            "port": server.imaps,
            "security": "tls",
            "tls_ca_file": str(server.ca_file),
            "folder": "INBOX",
        },
        receive={"maildir": str(tmp_path / "inbox")},
        schedule={"every": "1s"},
    )
    port = int(yaml.safe_load(config.read_text())["metrics"]["listen"].rsplit(":", 1)[1])
    before = ts.provider.grants("refresh_token")
    daemon = Daemon(config, env={"CREDENTIALS_DIRECTORY": str(credentials)})
    try:
        daemon.wait_ready(port, timeout=30)
        done = exactmaild("submit", "-c", str(config), input=message(1))
        assert done.returncode == 0, done.stderr
        assert len(smtp.server.sink.wait_for(1, timeout=30)) == 1, daemon.log()

        def checks_ok() -> float:
            return metric(scrape(port), "exactmaild_receive_checks_total", 'result="ok"') or 0

        assert wait_until(lambda: checks_ok() >= 2, 30), daemon.log()
        text = scrape(port)
        assert metric(text, "exactmaild_received_total") == 1
        assert metric(text, "exactmaild_receive_checks_total", 'result="error"') == 0
        assert metric(text, "exactmaild_auth_failures_total", 'kind="token"') == 0
        # one grant served both: the access token is cached for the hour
        assert ts.provider.grants("refresh_token") == before + 1
    finally:
        assert daemon.stop() == 0
        smtp.stop()
    assert "invalid_grant" not in daemon.log()
