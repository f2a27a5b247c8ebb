"""The provider presets: Microsoft 365 and Google servers, OAuth2 endpoints and limits.

With `account.auth.provider: microsoft365` or `google`, these fill in the
token, device-authorization and authorization URLs, the scope, and the
SMTP/IMAP/POP3 hosts and encryption that `exactmaild.config.account` would
otherwise require, and the provider's sending limits (`Preset.limits`), each
a default the file may override (`exactmaild.config.sending` merges them).
"""

from __future__ import annotations

from dataclasses import dataclass

from exactmaild.config.model import Security


@dataclass(frozen=True)
class Limits:
    """A provider's published sending limits, as config values.

    Keys are the config's own paths, so the merge and check-config's
    display of where each value came from need no second table.
    """

    daily_limit: int
    limit_window: str
    limit_counts: str
    max_per_minute: int | None
    max_recipients: int

    def items(self) -> dict[str, object]:
        return {
            "send.daily_limit": self.daily_limit,
            "send.limit_window": self.limit_window,
            "send.limit_counts": self.limit_counts,
            "send.max_per_minute": self.max_per_minute,
            "outgoing.max_recipients": self.max_recipients,
        }


@dataclass(frozen=True)
class Preset:
    token_url: str
    device_authorization_url: str
    # The authorization endpoint of the code flow with PKCE and a loopback
    # redirect (RFC 7636, RFC 8252): `exactmaild authorize` uses it when set,
    # the device flow otherwise.
    authorization_url: str | None
    scope: str
    smtp: tuple[str, Security]
    imap: tuple[str, Security]
    pop3: tuple[str, Security]
    limits: Limits


PRESETS: dict[str, Preset] = {
    "microsoft365": Preset(
        token_url="https://login.microsoftonline.com/common/oauth2/v2.0/token",
        device_authorization_url="https://login.microsoftonline.com/common/oauth2/v2.0/devicecode",
        # Microsoft keeps the device flow (its device endpoint takes the mail scopes).
        authorization_url=None,
        scope=(
            "https://outlook.office.com/SMTP.Send https://outlook.office.com/IMAP.AccessAsUser.All "
            "https://outlook.office.com/POP.AccessAsUser.All offline_access"
        ),
        smtp=("smtp.office365.com", "starttls"),
        imap=("outlook.office365.com", "tls"),
        pop3=("outlook.office365.com", "tls"),
        # Microsoft, "Exchange Online limits", sending limits: a message rate
        # of 30 a minute, 10,000 recipients a day (a rolling 24 h, every
        # recipient counted), 500 recipients a message. Also 3 concurrent
        # connections a mailbox (webmail and phones count): exactmaild uses one.
        limits=Limits(
            daily_limit=10_000,
            limit_window="rolling_24h",
            limit_counts="recipients",
            max_per_minute=30,
            max_recipients=500,
        ),
    ),
    "google": Preset(
        token_url="https://oauth2.googleapis.com/token",
        device_authorization_url="https://oauth2.googleapis.com/device/code",
        # Google's device flow takes only a few scopes, never https://mail.google.com/;
        # its guidance for installed apps is the loopback flow:
        # https://developers.google.com/identity/protocols/oauth2/native-app
        authorization_url="https://accounts.google.com/o/oauth2/v2/auth",
        scope="https://mail.google.com/",
        smtp=("smtp.gmail.com", "tls"),
        imap=("imap.gmail.com", "tls"),
        pop3=("pop.gmail.com", "tls"),
        # Google, "Gmail sending limits in Google Workspace": 2,000 messages a
        # day (a rolling 24 h), 100 recipients a message sent over SMTP by
        # POP/IMAP users. A consumer Gmail account allows about 500 a day:
        # `exactmaild.config.sending` warns for a gmail.com address.
        limits=Limits(
            daily_limit=2_000,
            limit_window="rolling_24h",
            limit_counts="messages",
            max_per_minute=None,
            max_recipients=100,
        ),
    ),
}
