"""Credentials for the mail servers: who logs in, and with what secret.

The SMTP adapter and the mailbox adapters ask a `Credentials` object for the
secret at each login instead of holding it, so a password file rotated on
disk or an OAuth2 access token refreshed in memory is picked up without a
restart, and the secret never sits in a config object that might be logged.

`credentials_for(account, tokens=...)` picks the object for the configured
method. `tokens` is the process's `TokenCache`: OAuth2 access tokens live in
it, and every refused login is counted in it (for monitoring), whatever the
method. The daemon passes its own, shared by the sender and the mailbox
checks; a one-shot command may pass none and get a cache of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from exactmaild.auth.oauth import OAuth2Credentials, TokenCache
from exactmaild.config.model import Account


class Credentials(Protocol):
    @property
    def method(self) -> Literal["password", "oauth2", "none"]: ...

    @property
    def username(self) -> str: ...

    def secret(self) -> str:
        """The password, or a current OAuth2 access token."""
        ...

    def invalidate(self) -> None:
        """The server refused the secret: fetch a fresh one next time (OAuth2)."""
        ...


class PasswordCredentials:
    """Password login; the password is re-read from its file at each login."""

    method: Literal["password"] = "password"

    def __init__(self, account: Account, tokens: TokenCache) -> None:
        self._account = account
        self._tokens = tokens

    @property
    def username(self) -> str:
        return self._account.auth.username or self._account.address

    def secret(self) -> str:
        from exactmaild.auth.secrets import read_secret

        return read_secret(self._account.auth.password_file, "password", what="password")

    def invalidate(self) -> None:
        # Nothing cached to drop (the file is re-read at each login); count the
        # refusal so monitoring sees password failures as it sees OAuth ones.
        self._tokens.record_failure("login")

    def __repr__(self) -> str:  # never show the secret, even by accident
        return f"PasswordCredentials(username={self.username!r})"


class NoCredentials:
    """A local relay that needs no login."""

    method: Literal["none"] = "none"

    def __init__(self, account: Account) -> None:
        self._account = account

    @property
    def username(self) -> str:
        return self._account.address

    def secret(self) -> str:
        return ""

    def invalidate(self) -> None:
        pass


@dataclass(frozen=True)
class SecretFile:
    """One secret the configured method reads: its config key, its file, and
    whether the daemon may start without it (a refresh token may arrive
    later, from `exactmaild authorize`)."""

    key: str  # the config key that names the file, e.g. "account.auth.password_file"
    path: Path | None
    credential: str  # the LoadCredential= name
    what: str
    may_come_later: bool = False

    def check(self) -> None:
        """Read and drop the secret; raises SecretError naming the file and the fix."""
        from exactmaild.auth.secrets import read_secret

        read_secret(self.path, self.credential, what=self.what)


def secret_files(account: Account) -> list[SecretFile]:
    """The secrets the configured auth method needs, in the file's order."""
    from exactmaild.auth.secrets import CLIENT_SECRET, PASSWORD, REFRESH_TOKEN

    auth = account.auth
    if auth.method == "password":
        return [SecretFile("account.auth.password_file", auth.password_file, PASSWORD, "password")]
    if auth.method != "oauth2":
        return []
    files = [
        SecretFile(
            "account.auth.refresh_token_file",
            auth.refresh_token_file,
            REFRESH_TOKEN,
            "OAuth2 refresh token",
            may_come_later=True,
        )
    ]
    if auth.client_secret_file is not None:  # public clients have none
        files.append(
            SecretFile(
                "account.auth.client_secret_file",
                auth.client_secret_file,
                CLIENT_SECRET,
                "OAuth2 client secret",
            )
        )
    return files


def check_at_start(account: Account) -> None:
    """Refuse to start with a secret file that is missing, unreadable, empty or
    readable by other users (raises SecretError, exit 78, naming the file and
    the fix), instead of failing at the first send hours later. The secret is
    read and dropped: it is still re-read at each login. `check-config` runs
    the same `SecretFile.check()` on the same `secret_files()`."""
    for secret in secret_files(account):
        # Only a refresh token that exists: it may arrive later (`exactmaild
        # authorize`); one that exists must not be readable by others.
        if secret.may_come_later and not (secret.path is not None and secret.path.exists()):
            continue
        secret.check()


def credentials_for(account: Account, *, tokens: TokenCache | None = None) -> Credentials:
    """The credentials object for the configured auth method, keeping its
    tokens and counting its refusals in `tokens` (None: a cache of its own)."""
    if tokens is None:
        tokens = TokenCache()
    if account.auth.method == "none":
        return NoCredentials(account)
    if account.auth.method == "oauth2":
        return OAuth2Credentials(account, tokens)
    return PasswordCredentials(account, tokens)
