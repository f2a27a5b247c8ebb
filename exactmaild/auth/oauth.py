"""OAuth2 for the mail servers: the refresh-token grant and the access-token cache.

`OAuth2Credentials(account, tokens)` is the `Credentials` object for
`account.auth.method: oauth2`. The SMTP and mailbox adapters ask it for
`secret()` at each login and get a current access token for SASL XOAUTH2;
when a server refuses the token they call `invalidate()` and the next login
gets a fresh one.

What it does:

- the refresh-token grant (RFC 6749 section 6) against `token_url` with
  `client_id`, the client secret if `client_secret_file` is set, the refresh
  token (`$CREDENTIALS_DIRECTORY/refresh_token` or `refresh_token_file`, read
  through `exactmaild.auth.secrets`) and `scope`; the HTTP and the meaning of
  a refusal are `exactmaild.auth.tokens`';
- the access token is cached in memory and refreshed `REFRESH_MARGIN` (60 s,
  or half the token's lifetime if that is shorter) before it expires, and
  after `invalidate()`;
- a refresh token the provider rotates is written back to `refresh_token_file`
  with `write_secret` (atomic, mode 0600 from the first byte);
- the cache is a `TokenCache` object, shared by every `OAuth2Credentials`
  made with it: the daemon owns one and hands it to the sender and to each
  mailbox check (each builds its own credentials object), so a refresh token
  one of them rotated is the one the other uses next; under one lock per
  account, so two threads never refresh at once. A one-shot command
  (`test-connection`) makes its own;
- the refresh token file is re-read at each refresh, so a token stored by
  `exactmaild authorize` (or rotated by another exactmaild process, such as
  `test-connection`) is picked up without a restart.

Errors: see `exactmaild.auth.tokens`; a secret file that cannot be read is an
`AccountFailure` naming the file (the queue pauses until someone fixes it).
Tokens never appear in an exception message, a repr or a log line.

The `TokenCache` also counts refused logins (a mail server refused the
password or access token) and refused grants, which the daemon's metrics
export with the token expiry (`exactmaild.daemon.exposition.OAuthCollector`).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from exactmaild.auth.secrets import (
    CLIENT_SECRET,
    REFRESH_TOKEN,
    SecretError,
    read_secret,
    write_secret,
)
from exactmaild.config.model import Account, Auth
from exactmaild.core.errors import AccountFailure
from exactmaild.core.log import Log, get_log

# Refresh this long before the access token expires (or at half its lifetime
# when that is shorter, so a short-lived token is still cached for a while).
REFRESH_MARGIN = 60.0
# After the endpoint refused a refresh token, the same token is not offered
# again for this long (a new one in the file is tried at once).
REFUSED_TOKEN_QUIET = 300.0

_log = get_log("exactmaild.auth.oauth")


# --------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------

AuthFailureKind = Literal["login", "token"]


def _fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass
class TokenState:
    """One account's tokens, shared by every OAuth2Credentials for it made with one cache."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    access_token: str | None = None
    refresh_after: float = 0.0  # time.monotonic() after which the token is refreshed
    expires_at: float | None = None  # wall clock, for the metric
    refresh_expires_at: float | None = None  # wall clock, when the endpoint says
    refreshed_at: float = 0.0  # wall clock of the last successful refresh
    # The refresh token as last read from its file, and the rotated one the
    # endpoint gave us since (used while the file still holds the old one:
    # a systemd credential cannot be rewritten, or saving failed).
    seen_on_disk: str | None = None
    rotated: str | None = None
    # The last refusal of a refresh token: its fingerprint, when, and the error.
    refused: tuple[str, float, AccountFailure] | None = None


class TokenCache:
    """The OAuth2 tokens of one process, per account, and its refused logins.

    Thread-safe: the sender thread and the mailbox checks' threads share one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[tuple[object, ...], TokenState] = {}
        self._failures: dict[AuthFailureKind, int] = {"login": 0, "token": 0}

    def state_for(self, auth: Auth, username: str) -> TokenState:
        """The tokens for this account and client (one state per distinct grant)."""
        key = (
            auth.token_url,
            auth.client_id,
            auth.client_secret_file,
            auth.refresh_token_file,
            auth.scope,
            username,
        )
        with self._lock:
            state = self._states.get(key)
            if state is None:
                state = self._states[key] = TokenState()
            return state

    def latest(self) -> TokenState | None:
        """The most recently refreshed state that holds a token (for the expiry metric)."""
        with self._lock:
            states = list(self._states.values())
        return max(
            (s for s in states if s.expires_at is not None),
            key=lambda s: s.refreshed_at,
            default=None,
        )

    def record_failure(self, kind: AuthFailureKind) -> None:
        """Count one refused login ("login": a mail server refused the secret) or one
        refused grant ("token": the token endpoint refused the refresh token or client)."""
        with self._lock:
            self._failures[kind] += 1

    def failures(self) -> dict[AuthFailureKind, int]:
        with self._lock:
            return dict(self._failures)


# --------------------------------------------------------------------------
# Credentials
# --------------------------------------------------------------------------


class OAuth2Credentials:
    """XOAUTH2 credentials: `secret()` is a current access token (see the module docstring)."""

    method: Literal["oauth2"] = "oauth2"

    def __init__(
        self,
        account: Account,
        tokens: TokenCache,
        *,
        timeout: float | None = None,
        log: Log | None = None,
    ) -> None:
        # The token endpoint's HTTP client (urllib.request, http.client) is
        # imported by the accounts that use OAuth2, not with the TokenCache
        # every daemon holds: here and in _endpoint and _refresh.
        from exactmaild.auth.tokens import TOKEN_TIMEOUT

        auth = account.auth
        if auth.method != "oauth2":
            raise ValueError(f"OAuth2Credentials for method {auth.method}")
        self._account = account
        self._auth = auth
        self._tokens = tokens
        self.timeout = TOKEN_TIMEOUT if timeout is None else timeout
        self.log = log if log is not None else _log
        self._state = tokens.state_for(auth, self.username)

    def __repr__(self) -> str:  # never show a token, even by accident
        return f"OAuth2Credentials(username={self.username!r}, endpoint={self._endpoint!r})"

    @property
    def username(self) -> str:
        return self._auth.username or self._account.address

    @property
    def _endpoint(self) -> str:
        from exactmaild.auth.tokens import endpoint_host

        return endpoint_host(self._auth.token_url or "")

    @property
    def expires_at(self) -> float | None:
        """Unix time the cached access token expires (None before the first refresh)."""
        return self._state.expires_at

    @property
    def refresh_token_expires_at(self) -> float | None:
        """Unix time the refresh token expires, if the endpoint said (refresh_token_expires_in)."""
        return self._state.refresh_expires_at

    def secret(self) -> str:
        """A current access token, refreshed first if it expires within the margin."""
        state = self._state
        with state.lock:
            if state.access_token is not None and time.monotonic() < state.refresh_after:
                return state.access_token
            return self._refresh(state)

    def invalidate(self) -> None:
        """A server refused the access token: the next `secret()` fetches a new one."""
        self._tokens.record_failure("login")
        state = self._state
        with state.lock:
            state.access_token = None
            state.refresh_after = 0.0

    # -- the grant -----------------------------------------------------------------

    def _read(self, path: Path | None, credential: str, what: str) -> str:
        try:
            return read_secret(path, credential, what=what)
        except SecretError as exc:
            # The account cannot log in until someone fixes the file: pause, don't fail mail.
            raise AccountFailure(str(exc)) from None

    def _refresh_token(self, state: TokenState) -> str:
        on_disk = self._read(
            self._auth.refresh_token_file, REFRESH_TOKEN, "the OAuth2 refresh token"
        )
        if state.rotated is not None and on_disk == state.seen_on_disk:
            return state.rotated
        # First use, or the file changed under us (`exactmaild authorize`, or
        # another process rotated it): the file wins.
        state.seen_on_disk = on_disk
        state.rotated = None
        return on_disk

    def _refresh(self, state: TokenState) -> str:
        from exactmaild.auth.tokens import (
            DEFAULT_EXPIRES_IN,
            post_form,
            refresh_refusal,
            seconds_field,
        )

        auth = self._auth
        if not auth.token_url or not auth.client_id:
            raise AccountFailure("account.auth.token_url and client_id are needed for oauth2")
        refresh_token = self._refresh_token(state)
        fingerprint = _fingerprint(refresh_token)
        if state.refused is not None:
            refused_fp, at, error = state.refused
            if refused_fp == fingerprint and time.monotonic() - at < REFUSED_TOKEN_QUIET:
                raise AccountFailure(str(error))
        fields = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": auth.client_id,
        }
        client_secret = ""
        if auth.client_secret_file is not None:
            client_secret = self._read(
                auth.client_secret_file, CLIENT_SECRET, "the OAuth2 client secret"
            )
            fields["client_secret"] = client_secret
        if auth.scope:
            fields["scope"] = auth.scope
        started = time.monotonic()
        reply = post_form(auth.token_url, fields, timeout=self.timeout)
        secrets = (refresh_token, client_secret)
        token = reply.body.get("access_token")
        if reply.status != 200 or reply.error or not isinstance(token, str) or not token:
            failure = refresh_refusal(
                reply, host=self._endpoint, username=self.username, secrets=secrets
            )
            if isinstance(failure, AccountFailure):
                self._tokens.record_failure("token")
                if reply.error == "invalid_grant":
                    state.refused = (fingerprint, time.monotonic(), failure)
                self.log.error("oauth_refresh_refused", endpoint=self._endpoint, error=str(failure))
            raise failure
        state.refused = None
        expires_in = seconds_field(reply.body.get("expires_in"), DEFAULT_EXPIRES_IN)
        margin = min(REFRESH_MARGIN, expires_in / 2)
        state.access_token = token
        state.refresh_after = started + expires_in - margin
        now = time.time()
        state.expires_at = now + expires_in
        state.refreshed_at = now
        rt_expires = seconds_field(reply.body.get("refresh_token_expires_in"), 0.0)
        if rt_expires > 0:
            state.refresh_expires_at = now + rt_expires
        new_refresh = reply.body.get("refresh_token")
        rotated = (
            isinstance(new_refresh, str) and bool(new_refresh) and new_refresh != refresh_token
        )
        if rotated:
            assert isinstance(new_refresh, str)
            self._store_rotated(state, new_refresh)
        self.log.info(
            "oauth_access_refreshed",
            endpoint=self._endpoint,
            username=self.username,
            expires_in=round(expires_in),
            rotated=rotated,
        )
        return token

    def _store_rotated(self, state: TokenState, new_refresh: str) -> None:
        state.rotated = new_refresh
        path = self._auth.refresh_token_file
        if path is None:
            self.log.warning(
                "oauth_rotated_not_saved",
                reason="account.auth.refresh_token_file is not set: the rotated refresh "
                "token lives in memory only and is lost at the next restart",
            )
            return
        try:
            write_secret(path, new_refresh)
        except SecretError as exc:
            self.log.error(
                "oauth_rotated_not_saved",
                reason=f"{exc}: the rotated refresh token lives in memory only; "
                f"make {path.parent} writable for the daemon's user",
            )
            return
        # If the file is what read_secret reads, it now holds the new token;
        # if a systemd credential shadows it, keep using the one in memory.
        if state.seen_on_disk is not None:
            with contextlib.suppress(SecretError):
                state.seen_on_disk = read_secret(path, REFRESH_TOKEN, what="refresh token")
            if state.seen_on_disk == new_refresh:
                state.rotated = None
