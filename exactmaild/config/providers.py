"""The provider presets: Microsoft 365 and Google servers and OAuth2 endpoints.

With `account.auth.provider: microsoft365` or `google`, these fill in the
token, device-authorization and authorization URLs, the scope, and the SMTP/IMAP/POP3 hosts
and encryption that `exactmaild.config.account` would otherwise require.
"""

from __future__ import annotations

from dataclasses import dataclass

from exactmaild.config.model import Security


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
    ),
}
