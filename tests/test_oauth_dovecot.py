"""IMAP and POP3 XOAUTH2 against a real Dovecot whose `oauth2` passdb checks each
token at the local introspection endpoint (tests/fixtures/tokens.py)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Literal

import pytest

from exactmaild import oauth
from exactmaild.config import Account, Auth
from exactmaild.oauth import OAuth2Credentials
from exactmaild.receiver import Receiver
from exactmaild.state import StateStore
from tests.fixtures import dovecot as dv
from tests.fixtures.tokens import CLIENT_ID, CLIENT_SECRET, TokenServer, start_token_server
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
    binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
    if not os.path.exists(binary):
        pytest.skip("dovecot is not installed: apt-get install dovecot-imapd dovecot-pop3d")
    if os.geteuid() != 0:
        pytest.skip("the Dovecot fixture runs as root (it chowns the mailbox to uid 8)")
    d = Path(tempfile.mkdtemp(prefix="exactmaild-dovecot-oauth-"))
    d.chmod(0o755)
    dv._make_cert(d)
    ports = {name: dv.free_port() for name in ("imap", "imaps", "pop3", "pop3s")}
    conf = dv._CONF.format(dir=d, **ports)
    conf = conf.replace(
        "auth_mechanisms = plain login", "auth_mechanisms = plain login xoauth2 oauthbearer"
    )
    conf = conf.replace("passdb {", _OAUTH_PASSDB.format(dir=d) + "passdb {", 1)
    (d / "dovecot.conf").write_text(conf)
    (d / "oauth2.conf.ext").write_text(_OAUTH_ARGS.format(url=ts.introspection_url))
    home = d / "mail" / dv.USER
    (d / "users").write_text(f"{dv.USER}:{{PLAIN}}{dv.PASSWORD}:8:8::{home}::\n")
    out = open(d / "dovecot.out", "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [binary, "-F", "-c", str(d / "dovecot.conf")],
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    out.close()
    server = dv.Dovecot(
        dir=d,
        proc=proc,
        imap=ports["imap"],
        imaps=ports["imaps"],
        pop3=ports["pop3"],
        pop3s=ports["pop3s"],
    )
    server.wipe()
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            pytest.fail(f"dovecot exited: {(d / 'dovecot.out').read_text()}{server.log_text()}")
        try:
            with socket.create_connection(("127.0.0.1", server.pop3s), timeout=1):
                pass
            with socket.create_connection(("127.0.0.1", server.imaps), timeout=1):
                return server
        except OSError:
            if time.monotonic() > deadline:
                server.stop()
                pytest.fail("dovecot did not start listening within 15 s")
            time.sleep(0.05)


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
    oauth.forget_cached_tokens()
    account = oauth_account(tmp_path, ts)
    cfg = replace(dv.build_config(tmp_path, server.incoming(protocol, security)), account=account)
    server.add_messages(1, 2)
    before = ts.provider.introspections
    state = StateStore(cfg.state_dir)
    try:
        result = Receiver(cfg, state, OAuth2Credentials(account), timeout=30).check(time.time())
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
    oauth.forget_cached_tokens()
    account = oauth_account(tmp_path, ts)
    cfg = replace(dv.build_config(tmp_path, server.incoming("imap", "tls")), account=account)
    state = StateStore(cfg.state_dir)
    try:
        creds = OAuth2Credentials(account)
        assert Receiver(cfg, state, creds, timeout=30).check(time.time()).error is None
        before = oauth.auth_failures()["login"]
        ts.provider.expire_access_tokens()  # Dovecot's introspection now says inactive
        server.add_messages(1, 1)
        # A refused login makes Dovecot hold the next one from the same address
        # back by about 4 s (auth penalty, per instance): refuse on another one.
        other = start_oauth_dovecot(ts)
        try:
            elsewhere = replace(cfg, incoming=other.incoming("imap", "tls"))
            failed = Receiver(elsewhere, state, OAuth2Credentials(account), timeout=30).check(
                time.time()
            )
        finally:
            dv.cleanup(other)
        assert failed.error is not None and "refused the login" in failed.error
        assert oauth.auth_failures()["login"] == before + 1  # the adapter invalidated it
        ok = Receiver(cfg, state, OAuth2Credentials(account), timeout=30).check(time.time())
        assert ok.error is None and ok.delivered == 1
    finally:
        state.close()
