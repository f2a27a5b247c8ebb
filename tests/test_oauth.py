"""OAuth2Credentials against a local token endpoint: the grant, the cache, rotation,
the shared state between threads, the error mapping and what never leaks."""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exactmaild.auth.credentials import credentials_for
from exactmaild.auth.oauth import OAuth2Credentials, TokenCache
from exactmaild.config.model import Account, Auth
from exactmaild.core.errors import AccountFailure, TemporaryFailure
from exactmaild.daemon.exposition import OAuthCollector
from tests.fixtures.smtp import free_port
from tests.fixtures.tokens import CLIENT_ID, CLIENT_SECRET, TokenServer, start_token_server

USER = "reception@practice.example"


@pytest.fixture
def tokens() -> Iterator[TokenServer]:
    ts = start_token_server()
    yield ts
    ts.stop()


@pytest.fixture
def cache() -> TokenCache:
    """The token cache the daemon would own: shared by every credentials object made with it."""
    return TokenCache()


def write_private(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, (text + "\n").encode())
    os.close(fd)
    return path


def account(tmp: Path, ts: TokenServer, *, secret: bool = True, **auth: object) -> Account:
    rt = tmp / "refresh_token"
    if not rt.exists():
        write_private(rt, ts.provider.new_refresh_token())
    fields: dict[str, object] = {
        "method": "oauth2",
        "username": USER,
        "provider": "custom",
        "token_url": ts.token_url,
        "client_id": CLIENT_ID,
        "client_secret_file": write_private(tmp / "client_secret", CLIENT_SECRET)
        if secret
        else None,
        "refresh_token_file": rt,
        "scope": "https://mail.example/all offline_access",
        **auth,
    }
    return Account(address=USER, auth=Auth(**fields))  # type: ignore[arg-type]


def test_grant_caches_rotates_and_stores_0600(
    tmp_path: Path, tokens: TokenServer, cache: TokenCache
) -> None:
    acct = account(tmp_path, tokens)
    old = (tmp_path / "refresh_token").read_text().strip()
    creds = credentials_for(acct, tokens=cache)
    assert isinstance(creds, OAuth2Credentials)
    assert creds.expires_at is None
    token = creds.secret()
    assert tokens.provider.valid_access(token)
    assert creds.secret() == token  # cached: one grant only
    assert tokens.provider.grants("refresh_token") == 1
    request = tokens.provider.requests[0]
    assert request["client_id"] == CLIENT_ID
    assert request["scope"] == "https://mail.example/all offline_access"
    # rotated: the new refresh token is on disk, 0600, the old one is dead
    stored = (tmp_path / "refresh_token").read_text().strip()
    assert stored != old and stored in tokens.provider.current_refresh_tokens
    assert stat.S_IMODE((tmp_path / "refresh_token").stat().st_mode) == 0o600
    assert creds.expires_at is not None and abs(creds.expires_at - (time.time() + 3600)) < 30
    # another object for the same account (each receive check builds one) shares the cache
    assert OAuth2Credentials(acct, cache).secret() == token
    assert tokens.provider.grants("refresh_token") == 1
    # invalidate: the next secret() is a fresh token, from the rotated refresh token
    creds.invalidate()
    fresh = creds.secret()
    assert fresh != token and tokens.provider.valid_access(fresh)
    assert tokens.provider.grants("refresh_token") == 2
    assert (
        tmp_path / "refresh_token"
    ).read_text().strip() in tokens.provider.current_refresh_tokens


def test_refreshed_before_expiry(tmp_path: Path, tokens: TokenServer, cache: TokenCache) -> None:
    tokens.provider.expires_in = 2  # margin: half the lifetime, so cached for ~1 s
    creds = OAuth2Credentials(account(tmp_path, tokens), cache)
    first = creds.secret()
    assert creds.secret() == first
    time.sleep(1.1)
    second = creds.secret()
    assert second != first and tokens.provider.valid_access(second)


def test_threads_share_one_refresh(tmp_path: Path, tokens: TokenServer, cache: TokenCache) -> None:
    acct = account(tmp_path, tokens)
    got: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(5):
                c = OAuth2Credentials(acct, cache)
                got.append(c.secret())
                c.invalidate()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # With rotation, two threads refreshing with the same refresh token at
    # once would get invalid_grant: the lock prevents it.
    assert not errors, errors
    assert len(got) == 20
    assert (
        tmp_path / "refresh_token"
    ).read_text().strip() in tokens.provider.current_refresh_tokens


def test_token_from_authorize_is_picked_up(
    tmp_path: Path, tokens: TokenServer, cache: TokenCache
) -> None:
    acct = account(tmp_path, tokens)
    creds = OAuth2Credentials(acct, cache)
    creds.secret()
    tokens.provider.revoke_refresh_tokens()
    creds.invalidate()
    with pytest.raises(AccountFailure):
        creds.secret()
    requests = len(tokens.provider.requests)
    # the same revoked token is not offered again at each login
    with pytest.raises(AccountFailure):
        creds.secret()
    assert len(tokens.provider.requests) == requests
    # a new one in the file (what `exactmaild authorize` writes) is used at once
    write_private(tmp_path / "refresh_token", tokens.provider.new_refresh_token())
    assert tokens.provider.valid_access(creds.secret())


def test_invalid_grant_is_account_failure_saying_how(
    tmp_path: Path, tokens: TokenServer, cache: TokenCache
) -> None:
    acct = account(tmp_path, tokens)
    refresh = (tmp_path / "refresh_token").read_text().strip()
    tokens.provider.revoke_refresh_tokens()
    before = cache.failures()["token"]
    creds = OAuth2Credentials(acct, cache)
    with pytest.raises(AccountFailure) as info:
        creds.secret()
    text = str(info.value)
    assert "re-authorisation is needed" in text and "exactmaild authorize" in text
    assert "invalid_grant" in text and "AADSTS70008" in text
    assert "Trace ID" not in text
    # the endpoint echoed the refresh token in its description: scrubbed
    assert refresh not in text and "[redacted]" in text
    assert cache.failures()["token"] == before + 1
    assert refresh not in repr(creds) and CLIENT_SECRET not in repr(creds)


def test_endpoint_trouble_is_temporary(
    tmp_path: Path, tokens: TokenServer, cache: TokenCache
) -> None:
    acct = account(tmp_path, tokens)
    tokens.provider.server_errors = 1
    with pytest.raises(TemporaryFailure) as info:
        OAuth2Credentials(acct, cache).secret()
    assert not isinstance(info.value, AccountFailure)
    assert "failed for now" in str(info.value)
    assert OAuth2Credentials(acct, cache).secret()  # recovered
    # nothing listening
    dead = Auth(**{**acct.auth.__dict__, "token_url": f"http://127.0.0.1:{free_port()}/token"})
    cache = TokenCache()  # afresh, as a new process would start
    with pytest.raises(TemporaryFailure) as info:
        OAuth2Credentials(Account(address=USER, auth=dead), cache, timeout=5).secret()
    assert not isinstance(info.value, AccountFailure)
    assert "cannot reach the OAuth2 endpoint 127.0.0.1" in str(info.value)


def test_client_and_file_problems_pause(
    tmp_path: Path, tokens: TokenServer, cache: TokenCache
) -> None:
    # no client secret, but the endpoint needs one: invalid_client
    with pytest.raises(AccountFailure, match="client_secret_file"):
        OAuth2Credentials(account(tmp_path, tokens, secret=False), cache).secret()
    cache = TokenCache()  # afresh, as a new process would start
    # the refresh token file is readable by others: refused, naming the fix
    (tmp_path / "refresh_token").chmod(0o644)
    with pytest.raises(AccountFailure, match="chmod 600"):
        OAuth2Credentials(account(tmp_path, tokens), cache).secret()
    cache = TokenCache()  # afresh, as a new process would start
    (tmp_path / "refresh_token").chmod(0o600)
    good = account(tmp_path, tokens).auth
    gone = Auth(**{**good.__dict__, "refresh_token_file": tmp_path / "missing"})
    with pytest.raises(AccountFailure, match="does not exist"):
        OAuth2Credentials(Account(address=USER, auth=gone), cache).secret()
    bad = Auth(**{**good.__dict__, "token_url": tokens.base + "/nope"})
    with pytest.raises(AccountFailure, match="token_url"):
        OAuth2Credentials(Account(address=USER, auth=bad), cache).secret()


def test_no_rotation_keeps_the_file(tmp_path: Path, tokens: TokenServer, cache: TokenCache) -> None:
    tokens.provider.rotate = False
    acct = account(tmp_path, tokens)
    before = (tmp_path / "refresh_token").stat().st_mtime_ns
    OAuth2Credentials(acct, cache).secret()
    assert (tmp_path / "refresh_token").stat().st_mtime_ns == before


def test_rotated_token_kept_in_memory_under_a_systemd_credential(
    tmp_path: Path, tokens: TokenServer, cache: TokenCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds_dir = tmp_path / "credentials"
    creds_dir.mkdir()
    write_private(creds_dir / "refresh_token", tokens.provider.new_refresh_token())
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds_dir))
    acct = account(tmp_path, tokens)
    creds = OAuth2Credentials(acct, cache)
    creds.secret()
    # the rotated token went to refresh_token_file; the credential still holds
    # the old (now dead) one, so the next refresh must use the one in memory
    creds.invalidate()
    assert tokens.provider.valid_access(creds.secret())
    creds.invalidate()
    assert tokens.provider.valid_access(creds.secret())


def test_metrics_collector(tmp_path: Path, tokens: TokenServer, cache: TokenCache) -> None:
    registry = CollectorRegistry()
    registry.register(OAuthCollector(cache))
    text = generate_latest(registry).decode()
    assert "exactmaild_oauth_token_expiry_timestamp_seconds " not in text
    assert 'exactmaild_auth_failures_total{kind="login"}' in text
    assert 'exactmaild_auth_failures_total{kind="token"}' in text
    creds = OAuth2Credentials(account(tmp_path, tokens), cache)
    token = creds.secret()
    before = cache.failures()["login"]
    creds.invalidate()
    text = generate_latest(registry).decode()
    line = next(
        x for x in text.splitlines() if x.startswith("exactmaild_oauth_token_expiry_timestamp")
    )
    assert abs(float(line.split()[1]) - (time.time() + 3600)) < 30
    assert f'exactmaild_auth_failures_total{{kind="login"}} {before + 1}.0' in text
    assert token not in text
