"""The OAuth2 token endpoint: the form POST, its reply, and what a refusal means.

`post_form` is the whole HTTP side of OAuth2 here (the refresh-token grant in
`exactmaild.auth.oauth`, the device-code flow in `exactmaild.auth.authorize`):
one form-encoded POST, one JSON object back as a `TokenReply`. A network
failure, a timeout or an answer that is not JSON is a `TemporaryFailure`;
what an HTTP status or an `error` code means is mapped by `refresh_refusal`
onto the error tree the sender and receiver already handle:

- the endpoint unreachable, timing out, 5xx, 429 or `temporarily_unavailable`:
  `TemporaryFailure` (retried later);
- `invalid_grant` (the refresh token is revoked, expired or was issued for
  something else): `AccountFailure` saying re-authorisation is needed and how
  (`exactmaild authorize`): the queue pauses, nothing is failed;
- the client refused (`invalid_client`, `unauthorized_client`), a bad scope
  or a wrong `token_url` (404): `AccountFailure` naming the key to fix.

Tokens never appear in an exception message: messages quote only the
provider's error code and (scrubbed, shortened) description.

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

import json
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from exactmaild.core.errors import EX_UNAVAILABLE, AccountFailure, ExactmailError, TemporaryFailure

# Seconds for one request to the token endpoint.
TOKEN_TIMEOUT = 30.0
# When the endpoint does not say (RFC 6749 makes expires_in optional).
DEFAULT_EXPIRES_IN = 3600.0

REAUTHORIZE = (
    "re-authorisation is needed: run `exactmaild authorize` (add `-c CONFIG` if the "
    "configuration is not in the default place) as the daemon's user and follow its "
    "instructions; sending resumes by itself once the new token is stored "
    "(at once with `exactmaild flush`)"
)

_TEMPORARY_ERRORS = ("temporarily_unavailable", "server_error")
_CLIENT_ERRORS = ("invalid_client", "unauthorized_client")


class AuthorizationFailed(ExactmailError):
    """`exactmaild authorize`: the user refused, or the code expired: run the command again."""

    exit_code = EX_UNAVAILABLE


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


def endpoint_host(url: str) -> str:
    """The host of an endpoint URL, as messages name it (the whole URL if it has none)."""
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


def refresh_refusal(
    reply: TokenReply, *, host: str, username: str, secrets: Iterable[str]
) -> Exception:
    """Map the token endpoint's refusal of a refresh-token grant onto the error tree."""
    error = reply.error
    detail = error or f"HTTP {reply.status}"
    description = reply.description(*secrets)
    if description:
        detail += f": {description}"
    if error == "invalid_grant":
        return AccountFailure(
            f"{host} refused the OAuth2 refresh token for {username} ({detail}): the grant "
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
            f"the OAuth2 endpoint {host} answered HTTP {reply.status}: check account.auth.token_url"
        )
    return AccountFailure(f"{host} refused the OAuth2 token request for {username} ({detail})")


def seconds_field(value: object, default: float) -> float:
    """A lifetime field of a reply (`expires_in`), or `default` when absent or not positive."""
    # A JSON number; some providers send it as a string.
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return seconds if seconds > 0 else default
