"""OAuth2 for the mail servers: the refresh-token grant and the access-token cache.

`OAuth2Credentials(account)` is the `Credentials` object for
`account.auth.method: oauth2`. The SMTP and mailbox adapters ask it for
`secret()` at each login and get a current access token for SASL XOAUTH2;
when a server refuses the token they call `invalidate()` and the next login
gets a fresh one.

What it does:

- the refresh-token grant (RFC 6749 section 6) against `token_url` with
  `client_id`, the client secret if `client_secret_file` is set, the refresh
  token (`$CREDENTIALS_DIRECTORY/refresh_token` or `refresh_token_file`, read
  through `exactmaild.auth.secrets`) and `scope`;
- the access token is cached in memory and refreshed `REFRESH_MARGIN` (60 s,
  or half the token's lifetime if that is shorter) before it expires, and
  after `invalidate()`;
- a refresh token the provider rotates is written back to `refresh_token_file`
  with `write_secret` (atomic, mode 0600 from the first byte);
- the cache is shared by every `OAuth2Credentials` for the same account in
  the process (the sender thread and each receive check build their own
  object), under one lock, so two threads never refresh at once and never
  use a refresh token the other has just rotated away;
- the refresh token file is re-read at each refresh, so a token stored by
  `exactmaild authorize` (or rotated by another exactmaild process, such as
  `test-connection`) is picked up without a restart.

Errors, in the tree the sender and receiver already handle:

- the token endpoint unreachable, timing out, 5xx, 429 or
  `temporarily_unavailable`: `TemporaryFailure` (retried later);
- `invalid_grant` (the refresh token is revoked, expired or was issued for
  something else): `AccountFailure` saying re-authorisation is needed and how
  (`exactmaild authorize`): the queue pauses, nothing is failed;
- the client refused (`invalid_client`, `unauthorized_client`), a bad scope,
  a wrong `token_url` (404) or a secret file that cannot be read:
  `AccountFailure` naming the key to fix.

Tokens never appear in an exception message, a repr or a log line: messages
quote only the provider's error code and (scrubbed, shortened) description.

Why `urllib` and no OAuth library: the grant is one form POST and a JSON
answer, a dozen lines here. `requests-oauthlib` would bring `requests`,
`oauthlib`, `urllib3`, `idna`, `charset-normalizer` and `certifi` into a
daemon whose dependencies are otherwise small, and its session-centred API
still leaves the parts that matter (the shared cache, writing a rotated token
back atomically, mapping provider errors to "pause" or "retry") to us.
`authlib` is the same trade. urllib verifies TLS with the system store and
honours `https_proxy`, which is all a token request needs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exactmaild.auth.secrets import (
    CLIENT_SECRET,
    REFRESH_TOKEN,
    SecretError,
    read_secret,
    write_secret,
)
from exactmaild.config.model import Account, Auth
from exactmaild.core.errors import AccountFailure, TemporaryFailure

# Refresh this long before the access token expires (or at half its lifetime
# when that is shorter, so a short-lived token is still cached for a while).
REFRESH_MARGIN = 60.0
# Seconds for one request to the token endpoint.
TOKEN_TIMEOUT = 30.0
# When the endpoint does not say (RFC 6749 makes expires_in optional).
DEFAULT_EXPIRES_IN = 3600.0
# After the endpoint refused a refresh token, the same token is not offered
# again for this long (a new one in the file is tried at once).
REFUSED_TOKEN_QUIET = 300.0

REAUTHORIZE = (
    "re-authorisation is needed: run `exactmaild authorize` (add `-c CONFIG` if the "
    "configuration is not in the default place) as the daemon's user and follow its "
    "instructions; sending resumes by itself once the new token is stored "
    "(at once with `exactmaild flush`)"
)

_TEMPORARY_ERRORS = ("temporarily_unavailable", "server_error")
_CLIENT_ERRORS = ("invalid_client", "unauthorized_client")

_log = structlog.get_logger("exactmaild.auth.oauth")


# --------------------------------------------------------------------------
# The token endpoint
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenReply:
    """What a token (or device) endpoint answered: HTTP status and the JSON object."""

    status: int
    body: Mapping[str, Any]

    @property
    def error(self) -> str:
        value = self.body.get("error")
        return value if isinstance(value, str) else ""

    def description(self, *secrets: str) -> str:
        """The provider's error_description, one line, shortened, with any secret removed."""
        text = self.body.get("error_description")
        if not isinstance(text, str):
            return ""
        text = " ".join(text.split())
        for secret in secrets:
            if secret:
                text = text.replace(secret, "[redacted]")
        # Microsoft appends trace and correlation ids and a timestamp: noise here.
        text = re.split(r"\s*(?:Trace ID|Correlation ID|Timestamp):", text)[0]
        return text[:240] + ("..." if len(text) > 240 else "")


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).hostname or url


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def post_form(url: str, fields: Mapping[str, str], *, timeout: float = TOKEN_TIMEOUT) -> TokenReply:
    """POST `fields` form-encoded to `url` and parse the JSON answer.

    Any HTTP status comes back as a `TokenReply` (the caller decides what an
    error means); a network failure, a timeout or an answer that is not a JSON
    object raises `TemporaryFailure`. No field value ever reaches a message.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme != "https" and not (parts.scheme == "http" and _is_loopback(host)):
        # check-config refuses this too; this is the last line of defence.
        raise AccountFailure(
            f"refusing to send OAuth2 secrets to {url}: only https:// "
            "(or http:// to this machine) is allowed"
        )
    data = urllib.parse.urlencode(fields).encode("ascii")
    request = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
            "User-Agent": "exactmaild",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = int(response.status)
            raw = response.read(1024 * 1024)
    except urllib.error.HTTPError as exc:
        status = int(exc.code)
        try:
            raw = exc.read(1024 * 1024)
        except OSError:
            raw = b""
        finally:
            exc.close()
    except urllib.error.URLError as exc:
        reason = exc.reason
        what = getattr(reason, "strerror", None) or str(reason)
        if isinstance(reason, socket.gaierror):
            what = f"cannot resolve {host}"
        raise TemporaryFailure(f"cannot reach the OAuth2 endpoint {host}: {what}") from None
    except TimeoutError:
        raise TemporaryFailure(
            f"the OAuth2 endpoint {host} did not answer within {timeout:g} s"
        ) from None
    except OSError as exc:
        raise TemporaryFailure(
            f"the connection to the OAuth2 endpoint {host} failed: "
            f"{exc.strerror or type(exc).__name__}"
        ) from None
    try:
        body = json.loads(raw.decode("utf-8")) if raw else {}
    except (UnicodeDecodeError, ValueError):
        body = None
    if not isinstance(body, dict):
        if status >= 500 or status in (408, 429):
            raise TemporaryFailure(f"the OAuth2 endpoint {host} answered HTTP {status}")
        if status == 200:
            raise TemporaryFailure(f"the OAuth2 endpoint {host} answered something not JSON")
        body = {}
    return TokenReply(status, body)


# --------------------------------------------------------------------------
# Auth failures and the token expiry, for monitoring
# --------------------------------------------------------------------------

AuthFailureKind = Literal["login", "token"]
_failures: dict[str, int] = {"login": 0, "token": 0}
_failures_lock = threading.Lock()


def record_auth_failure(kind: AuthFailureKind) -> None:
    """Count one refused login ("login": a mail server refused the secret) or one
    refused grant ("token": the token endpoint refused the refresh token or client)."""
    with _failures_lock:
        _failures[kind] = _failures.get(kind, 0) + 1


def auth_failures() -> dict[str, int]:
    with _failures_lock:
        return dict(_failures)


# --------------------------------------------------------------------------
# The shared cache
# --------------------------------------------------------------------------


def _fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass
class _TokenState:
    """One account's tokens, shared by every OAuth2Credentials for it in this process."""

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


_states: dict[tuple[object, ...], _TokenState] = {}
_states_lock = threading.Lock()


def _key(auth: Auth, username: str) -> tuple[object, ...]:
    return (
        auth.token_url,
        auth.client_id,
        auth.client_secret_file,
        auth.refresh_token_file,
        auth.scope,
        username,
    )


def _state_for(auth: Auth, username: str) -> _TokenState:
    key = _key(auth, username)
    with _states_lock:
        state = _states.get(key)
        if state is None:
            state = _states[key] = _TokenState()
        return state


def _all_states() -> list[_TokenState]:
    with _states_lock:
        return list(_states.values())


def forget_cached_tokens() -> None:
    """Drop every cached access token (tests; a process that must start afresh)."""
    with _states_lock:
        _states.clear()


# --------------------------------------------------------------------------
# Credentials
# --------------------------------------------------------------------------


class OAuth2Credentials:
    """XOAUTH2 credentials: `secret()` is a current access token (see the module docstring)."""

    method: Literal["oauth2"] = "oauth2"

    def __init__(
        self,
        account: Account,
        *,
        timeout: float = TOKEN_TIMEOUT,
        log: Any = None,
    ) -> None:
        auth = account.auth
        if auth.method != "oauth2":
            raise ValueError(f"OAuth2Credentials for method {auth.method}")
        self._account = account
        self._auth = auth
        self.timeout = timeout
        self.log = log if log is not None else _log
        self._state = _state_for(auth, self.username)

    def __repr__(self) -> str:  # never show a token, even by accident
        return f"OAuth2Credentials(username={self.username!r}, endpoint={self._endpoint!r})"

    @property
    def username(self) -> str:
        return self._auth.username or self._account.address

    @property
    def _endpoint(self) -> str:
        return _host(self._auth.token_url or "")

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
        record_auth_failure("login")
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

    def _refresh_token(self, state: _TokenState) -> str:
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

    def _refresh(self, state: _TokenState) -> str:
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
            failure = self._failure(reply, secrets)
            if isinstance(failure, AccountFailure):
                record_auth_failure("token")
                if reply.error == "invalid_grant":
                    state.refused = (fingerprint, time.monotonic(), failure)
                self.log.error("oauth_refresh_refused", endpoint=self._endpoint, error=str(failure))
            raise failure
        state.refused = None
        expires_in = _seconds(reply.body.get("expires_in"), DEFAULT_EXPIRES_IN)
        margin = min(REFRESH_MARGIN, expires_in / 2)
        state.access_token = token
        state.refresh_after = started + expires_in - margin
        now = time.time()
        state.expires_at = now + expires_in
        state.refreshed_at = now
        rt_expires = _seconds(reply.body.get("refresh_token_expires_in"), 0.0)
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

    def _store_rotated(self, state: _TokenState, new_refresh: str) -> None:
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

    def _failure(self, reply: TokenReply, secrets: Iterable[str]) -> Exception:
        """Map a refusal of the token endpoint onto the error tree."""
        host = self._endpoint
        error = reply.error
        detail = error or f"HTTP {reply.status}"
        description = reply.description(*secrets)
        if description:
            detail += f": {description}"
        who = self.username
        if error == "invalid_grant":
            return AccountFailure(
                f"{host} refused the OAuth2 refresh token for {who} ({detail}): the grant "
                f"was revoked or has expired; {REAUTHORIZE}"
            )
        if error in _CLIENT_ERRORS:
            return AccountFailure(
                f"{host} refused the OAuth2 client ({detail}): check account.auth.client_id "
                "and account.auth.client_secret_file (a client secret expires too)"
            )
        if error == "invalid_scope":
            return AccountFailure(
                f"{host} refused the OAuth2 scope ({detail}): check account.auth.scope"
            )
        if error in _TEMPORARY_ERRORS or reply.status >= 500 or reply.status in (408, 429):
            return TemporaryFailure(f"the OAuth2 endpoint {host} failed for now ({detail})")
        if reply.status == 200:
            return TemporaryFailure(f"the OAuth2 endpoint {host} answered without an access token")
        if reply.status in (404, 405):
            return AccountFailure(
                f"the OAuth2 endpoint {host} answered HTTP {reply.status}: "
                "check account.auth.token_url"
            )
        return AccountFailure(f"{host} refused the OAuth2 token request for {who} ({detail})")


def _seconds(value: object, default: float) -> float:
    # expires_in is a JSON number; some providers send it as a string.
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return seconds if seconds > 0 else default


# --------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------


class OAuthCollector(Collector):
    """Exports the OAuth2 token expiry and the auth failures; register it on the registry:

        registry.register(OAuthCollector())

    - `exactmaild_oauth_token_expiry_timestamp_seconds`: when the current access
      token expires (present once a token was fetched);
    - `exactmaild_oauth_refresh_token_expiry_timestamp_seconds`: when the refresh
      token expires, if the provider says (`refresh_token_expires_in`);
    - `exactmaild_auth_failures_total{kind}`: kind = login (a mail server refused
      the login) | token (the token endpoint refused the refresh token or client).
    """

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "exactmaild_oauth_token_expiry_timestamp_seconds", "OAuth2 access token expiry."
        )
        yield GaugeMetricFamily(
            "exactmaild_oauth_refresh_token_expiry_timestamp_seconds",
            "OAuth2 refresh token expiry.",
        )
        yield CounterMetricFamily("exactmaild_auth_failures", "Refused logins.", labels=["kind"])

    def collect(self) -> Iterator[Metric]:
        latest = max(
            (s for s in _all_states() if s.expires_at is not None),
            key=lambda s: s.refreshed_at,
            default=None,
        )
        if latest is not None and latest.expires_at is not None:
            yield GaugeMetricFamily(
                "exactmaild_oauth_token_expiry_timestamp_seconds",
                "Unix time the current OAuth2 access token expires (refreshed 60 s before).",
                value=latest.expires_at,
            )
            if latest.refresh_expires_at is not None:
                yield GaugeMetricFamily(
                    "exactmaild_oauth_refresh_token_expiry_timestamp_seconds",
                    "Unix time the OAuth2 refresh token expires, as the provider said; "
                    "run `exactmaild authorize` before then.",
                    value=latest.refresh_expires_at,
                )
        counts = auth_failures()
        family = CounterMetricFamily(
            "exactmaild_auth_failures",
            "Refused logins by kind: login (a mail server refused the password or access "
            "token), token (the OAuth2 endpoint refused the refresh token or the client).",
            labels=["kind"],
        )
        for kind in ("login", "token"):
            family.add_metric([kind], counts.get(kind, 0))
        yield family
