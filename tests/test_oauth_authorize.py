"""`exactmaild authorize`: the device-code flow against the local endpoints."""

from __future__ import annotations

import io
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from exactmaild.auth.authorize import AuthorizationFailed, authorize
from exactmaild.auth.oauth import OAuth2Credentials, TokenCache
from exactmaild.config.model import Account, Auth
from tests.fixtures.tokens import CLIENT_ID, CLIENT_SECRET, TokenServer, start_token_server
from tests.helpers import REPO
from tests.test_oauth import write_private

USER = "reception@practice.example"


@pytest.fixture
def tokens() -> Iterator[TokenServer]:
    ts = start_token_server()
    yield ts
    ts.stop()


def account(tmp: Path, ts: TokenServer) -> Account:
    return Account(
        address=USER,
        auth=Auth(
            method="oauth2",
            provider="custom",
            username=USER,
            token_url=ts.token_url,
            device_authorization_url=ts.device_url,
            client_id=CLIENT_ID,
            client_secret_file=write_private(tmp / "client_secret", CLIENT_SECRET),
            refresh_token_file=tmp / "refresh_token",
            scope="https://mail.example/all offline_access",
        ),
    )


def test_cli_device_flow_stores_token_0600_and_prints_code(
    tmp_path: Path, tokens: TokenServer
) -> None:
    tokens.provider.pending_polls = 2
    write_private(tmp_path / "client_secret", CLIENT_SECRET)
    config = tmp_path / "exactmaild.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "account": {
                    "address": USER,
                    "auth": {
                        "method": "oauth2",
                        "provider": "custom",
                        "token_url": tokens.token_url,
                        "device_authorization_url": tokens.device_url,
                        "client_id": CLIENT_ID,
                        "client_secret_file": str(tmp_path / "client_secret"),
                        "refresh_token_file": str(tmp_path / "refresh_token"),
                        "scope": "https://mail.example/all offline_access",
                    },
                },
                "incoming": "none",
                "outgoing": {"host": "127.0.0.1", "port": 2525, "security": "none"},
                "spool": {"dir": str(tmp_path / "spool")},
                "state_dir": str(tmp_path / "state"),
                "metrics": {"listen": "off"},
            }
        )
    )
    command = ["-m", "exactmaild", "authorize"]
    done = subprocess.run(
        [sys.executable, *command, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert "WDJB-MJHT" in done.stdout
    assert f"{tokens.base}/device" in done.stdout
    stored = (tmp_path / "refresh_token").read_text().strip()
    assert stored in tokens.provider.current_refresh_tokens
    assert stat.S_IMODE((tmp_path / "refresh_token").stat().st_mode) == 0o600
    for token in [*tokens.provider.issued, CLIENT_SECRET]:
        assert token not in done.stdout and token not in done.stderr
    # polled until approved, with the client secret and the device grant
    assert tokens.provider.grants("urn:ietf:params:oauth:grant-type:device_code") == 3
    # and the stored token works for the daemon
    acct = Account(
        address=USER,
        auth=Auth(
            method="oauth2",
            username=USER,
            token_url=tokens.token_url,
            client_id=CLIENT_ID,
            client_secret_file=tmp_path / "client_secret",
            refresh_token_file=tmp_path / "refresh_token",
        ),
    )
    assert tokens.provider.valid_access(OAuth2Credentials(acct, TokenCache()).secret())


def test_slow_down_widens_the_interval(tmp_path: Path, tokens: TokenServer) -> None:
    tokens.provider.slow_down_once = True
    tokens.provider.pending_polls = 1
    waits: list[float] = []
    out = io.StringIO()
    authorize(account(tmp_path, tokens), out=out, sleep=waits.append, slow_down_step=0.5)
    assert waits == [0.05, 0.55, 0.55]
    assert "enter the code  WDJB-MJHT" in out.getvalue()
    assert (tmp_path / "refresh_token").exists()


def test_declined_stores_nothing(tmp_path: Path, tokens: TokenServer) -> None:
    tokens.provider.deny = True
    tokens.provider.pending_polls = 0
    with pytest.raises(AuthorizationFailed, match="declined"):
        authorize(account(tmp_path, tokens), out=io.StringIO(), sleep=lambda _: None)
    assert not (tmp_path / "refresh_token").exists()


def test_code_expiry_and_missing_device_url(tmp_path: Path, tokens: TokenServer) -> None:
    tokens.provider.pending_polls = 1000
    clock = iter(range(0, 100000, 100))
    with pytest.raises(AuthorizationFailed, match="expired"):
        authorize(
            account(tmp_path, tokens),
            out=io.StringIO(),
            sleep=lambda _: None,
            clock=lambda: float(next(clock)),
        )
    from dataclasses import replace

    from exactmaild.core.errors import ConfigError

    acct = account(tmp_path, tokens)
    no_device = replace(acct, auth=replace(acct.auth, device_authorization_url=None))
    with pytest.raises(ConfigError, match="device_authorization_url"):
        authorize(no_device, out=io.StringIO())
