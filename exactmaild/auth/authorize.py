"""`exactmaild authorize`: obtain the first OAuth2 refresh token (device flow, or loopback).

With an authorization endpoint (`account.auth.authorization_url`, filled by
the google preset) the authorization-code flow with PKCE and a loopback
redirect runs (exactmaild.auth.loopback); otherwise the device flow here.

The server has no browser, so the sysadmin authorises on any other device
(RFC 8628): exactmaild asks the provider's device endpoint for a code, prints
where to go and the code to enter, polls the token endpoint until the user has
signed in and agreed, and stores the refresh token at
`account.auth.refresh_token_file`, atomically and with mode 0600 (through
`exactmaild.auth.secrets.write_secret`). The token is never printed.

The device endpoint is `account.auth.device_authorization_url`, filled from
the provider preset (microsoft365, google) when not given; a custom provider
must set it. Polling honours the endpoint's `interval`, `authorization_pending`
and `slow_down` (5 s more per RFC 8628 section 3.5) and gives up when the code
expires (`expires_in`).

A running daemon picks the new token up at its next refresh: nothing needs a
restart (`exactmaild flush` resumes a paused queue at once).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from exactmaild.auth.loopback import WAIT_SECONDS, run_loopback
from exactmaild.auth.secrets import CLIENT_SECRET, read_secret, write_secret
from exactmaild.auth.tokens import (
    TOKEN_TIMEOUT,
    AuthorizationFailed,
    TokenReply,
    endpoint_host,
    post_form,
)
from exactmaild.config.model import Account
from exactmaild.core.errors import (
    AccountFailure,
    ConfigError,
    ExactmailError,
    Problem,
    TemporaryFailure,
)

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_INTERVAL = 5.0  # RFC 8628 section 3.2: when the endpoint does not say
SLOW_DOWN_STEP = 5.0  # RFC 8628 section 3.5
DEFAULT_CODE_LIFETIME = 900.0


__all__ = ["AuthorizationFailed", "authorize", "poll_for_token", "request_device_code"]
# What the token endpoint answers when the user said no: RFC 8628's access_denied,
# and Microsoft's own names for it (its device flow documentation).
DECLINED = ("access_denied", "authorization_declined")
# Microsoft: the device code is not known (it expired, or was already used).
EXPIRED = ("expired_token", "code_expired", "bad_verification_code")


@dataclass(frozen=True)
class DeviceCode:
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    interval: float
    message: str | None


def _config_problem(path: str, message: str, source: str = "") -> ConfigError:
    return ConfigError([Problem(source, 0, path, message)])


def request_device_code(account: Account, *, timeout: float = TOKEN_TIMEOUT) -> DeviceCode:
    """Step 1: ask the device endpoint for a user code."""
    auth = account.auth
    url = auth.device_authorization_url
    if not url:
        raise _config_problem(
            "account.auth.device_authorization_url",
            "required for `exactmaild authorize` with provider custom: the provider's "
            "device authorization endpoint (RFC 8628)",
        )
    fields = {"client_id": auth.client_id or ""}
    if auth.scope:
        fields["scope"] = auth.scope
    secret = _client_secret(account)
    if secret:
        fields["client_secret"] = secret
    reply = post_form(url, fields, timeout=timeout)
    body = reply.body
    device_code = body.get("device_code")
    user_code = body.get("user_code")
    # Google says verification_url (an older draft of RFC 8628).
    uri = body.get("verification_uri") or body.get("verification_url")
    if (
        reply.status != 200
        or not isinstance(device_code, str)
        or not isinstance(user_code, str)
        or not isinstance(uri, str)
    ):
        raise _refusal(reply, url, secret, step="the device authorization endpoint")
    complete = body.get("verification_uri_complete")
    message = body.get("message")
    return DeviceCode(
        device_code=device_code,
        user_code=user_code,
        verification_uri=uri,
        verification_uri_complete=complete if isinstance(complete, str) else None,
        expires_in=_number(body.get("expires_in"), DEFAULT_CODE_LIFETIME),
        interval=_number(body.get("interval"), DEFAULT_INTERVAL),
        message=message if isinstance(message, str) else None,
    )


def poll_for_token(
    account: Account,
    code: DeviceCode,
    *,
    timeout: float = TOKEN_TIMEOUT,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    slow_down_step: float = SLOW_DOWN_STEP,
    on_wait: Callable[[], None] | None = None,
) -> str:
    """Step 2: poll the token endpoint until the user agreed; returns the refresh token."""
    auth = account.auth
    if not auth.token_url:
        raise _config_problem("account.auth.token_url", "required")
    fields = {
        "grant_type": DEVICE_GRANT,
        "device_code": code.device_code,
        "client_id": auth.client_id or "",
    }
    secret = _client_secret(account)
    if secret:
        fields["client_secret"] = secret
    interval = code.interval
    deadline = clock() + code.expires_in
    while True:
        sleep(interval)
        if clock() > deadline:
            raise AuthorizationFailed(
                "the code expired before the sign-in was completed: run `exactmaild "
                "authorize` again and enter the new code sooner"
            )
        try:
            reply = post_form(auth.token_url, fields, timeout=timeout)
        except TemporaryFailure:
            # A network blip while the user is signing in: keep polling until the code expires.
            interval += slow_down_step
            continue
        error = reply.error
        if error == "authorization_pending":
            if on_wait:
                on_wait()
            continue
        if error == "slow_down":
            interval += slow_down_step
            continue
        if error in DECLINED:
            raise AuthorizationFailed(
                f"the sign-in was declined ({error}): nothing was stored; run "
                "`exactmaild authorize` again and accept the requested permissions"
            )
        if error in EXPIRED:
            raise AuthorizationFailed(
                f"the code expired or was already used ({error}) before the sign-in was "
                "completed: nothing was stored; run `exactmaild authorize` again"
            )
        return _refresh_token(reply, auth.token_url, secret)


def _refresh_token(reply: TokenReply, token_url: str, secret: str) -> str:
    """The refresh token of a successful token reply, or what the refusal means."""
    error = reply.error
    refresh = reply.body.get("refresh_token")
    if reply.status == 200 and not error and isinstance(refresh, str) and refresh:
        return refresh
    if reply.status == 200 and not error:
        raise AuthorizationFailed(
            f"{endpoint_host(token_url)} issued no refresh token, so exactmaild could "
            "not log in again later: the scope must allow offline use (for Microsoft "
            "365 add offline_access to account.auth.scope)"
        )
    raise _refusal(reply, token_url, secret, step="the token endpoint")


def authorize(
    account: Account,
    *,
    out: TextIO = sys.stdout,
    timeout: float = TOKEN_TIMEOUT,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    slow_down_step: float = SLOW_DOWN_STEP,
    inp: TextIO | None = None,
    port: int = 0,
    wait: float = WAIT_SECONDS,
) -> None:
    """The whole flow: print the instructions, wait, store the refresh token 0600.

    The loopback flow (when `authorization_url` is set) listens on `port`
    (0: any free one) and reads a pasted redirect address from `inp`.

    Nothing to tell a running daemon: its `TokenCache` reads the file again at
    the next refresh and prefers a token that changed there."""
    auth = account.auth
    if auth.method != "oauth2":
        raise _config_problem(
            "account.auth.method",
            f"is {auth.method}: `exactmaild authorize` is for method: oauth2",
        )
    path = auth.refresh_token_file
    if path is None:
        raise _config_problem(
            "account.auth.refresh_token_file",
            "required for `exactmaild authorize`: where to store the refresh token",
        )
    if not path.parent.is_dir():
        raise _config_problem(
            "account.auth.refresh_token_file",
            f"{path.parent} does not exist: create it (mode 0700, owned by the daemon's user)",
        )
    if auth.authorization_url:
        if not auth.token_url:
            raise _config_problem("account.auth.token_url", "required")
        secret = _client_secret(account)
        reply = run_loopback(
            account, secret, out=out, inp=inp, port=port, timeout=timeout, wait=wait, clock=clock
        )
        _store(path, _refresh_token(reply, auth.token_url, secret), out)
        return
    code = request_device_code(account, timeout=timeout)
    who = auth.username or account.address
    minutes = max(1, round(code.expires_in / 60))
    print(f"To let exactmaild use the mailbox {who}:", file=out)
    print(f"  1. open  {code.verification_uri}", file=out)
    print(f"  2. enter the code  {code.user_code}", file=out)
    print(f"  3. sign in as {who} and accept the permissions.", file=out)
    if code.verification_uri_complete:
        print(f"  (or open {code.verification_uri_complete} directly)", file=out)
    print(f"The code is valid for {minutes} minute(s). Waiting...", file=out, flush=True)
    refresh = poll_for_token(
        account,
        code,
        timeout=timeout,
        sleep=sleep,
        clock=clock,
        slow_down_step=slow_down_step,
    )
    _store(path, refresh, out)


def _store(path: Path, refresh: str, out: TextIO) -> None:
    write_secret(path, refresh)
    print(f"Authorised: the refresh token is stored in {path} (mode 0600).", file=out)
    print(
        "A running daemon uses it at its next login; `exactmaild flush` resumes a "
        "paused queue now.",
        file=out,
        flush=True,
    )


# -- helpers ----------------------------------------------------------------------------


def _client_secret(account: Account) -> str:
    path = account.auth.client_secret_file
    if path is None:
        return ""
    return read_secret(path, CLIENT_SECRET, what="the OAuth2 client secret")


def _number(value: Any, default: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if number >= 0 else default


def _refusal(reply: TokenReply, url: str, secret: str, *, step: str) -> ExactmailError:
    host = endpoint_host(url)
    detail = reply.error or f"HTTP {reply.status}"
    description = reply.description(secret)
    if description:
        detail += f": {description}"
    if reply.error in ("invalid_client", "unauthorized_client"):
        return AccountFailure(
            f"{host} refused the OAuth2 client ({detail}): check account.auth.client_id and "
            "client_secret_file, and the application's type (Microsoft: 'Allow public "
            "client flows' for the device code flow; Google: a 'Desktop app' client with "
            "its secret)"
        )
    if reply.error == "invalid_scope":
        return AccountFailure(f"{host} refused the scope ({detail}): check account.auth.scope")
    if reply.status >= 500 or reply.error in ("temporarily_unavailable", "server_error"):
        return TemporaryFailure(f"{step} {host} failed for now ({detail})")
    return AccountFailure(f"{step} {host} refused the request ({detail})")
