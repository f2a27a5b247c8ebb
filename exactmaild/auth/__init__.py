"""Logging in: secrets, password and OAuth2 credentials, TLS contexts.

- `credentials_for()` gives the `Credentials` an account's `auth` section
  asks for (a password read at use time, XOAUTH2 tokens from a
  `TokenCache`, or none for a local relay); `check_at_start()` refuses an
  unusable secret file before the daemon runs;
- `read_secret()` / `write_secret()`: secrets from files (0600) or systemd
  credentials, never from the YAML and never into logs;
- `authorize()`: the OAuth2 device-code flow that obtains the first
  refresh token;
- `TlsContexts`: verifying TLS contexts, kept across connections.

Imported on first use (PEP 562): the command line pays for OAuth2 only
when the configuration uses it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from exactmaild.core.lazy import lazy_attributes

if TYPE_CHECKING:
    from exactmaild.auth.authorize import AuthorizationFailed, authorize
    from exactmaild.auth.credentials import (
        Credentials,
        NoCredentials,
        PasswordCredentials,
        check_at_start,
        credentials_for,
    )
    from exactmaild.auth.oauth import OAuth2Credentials, TokenCache
    from exactmaild.auth.secrets import SecretError, read_secret, secret_source, write_secret
    from exactmaild.auth.tls import TlsContexts

_WHERE = {
    "Credentials": "credentials",
    "NoCredentials": "credentials",
    "PasswordCredentials": "credentials",
    "check_at_start": "credentials",
    "credentials_for": "credentials",
    "OAuth2Credentials": "oauth",
    "TokenCache": "oauth",
    "SecretError": "secrets",
    "read_secret": "secrets",
    "write_secret": "secrets",
    "secret_source": "secrets",
    "TlsContexts": "tls",
    "authorize": "authorize",
    "AuthorizationFailed": "authorize",
}
__all__ = [
    "AuthorizationFailed",
    "Credentials",
    "NoCredentials",
    "OAuth2Credentials",
    "PasswordCredentials",
    "SecretError",
    "TlsContexts",
    "TokenCache",
    "authorize",
    "check_at_start",
    "credentials_for",
    "read_secret",
    "secret_source",
    "write_secret",
]

__getattr__ = lazy_attributes(__name__, _WHERE)
