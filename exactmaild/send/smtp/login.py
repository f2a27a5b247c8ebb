"""SMTP AUTH: one mechanism per login, the best the server offers.

smtplib's `login()` tries every mechanism both sides know, in turn, until one
works: a wrong password is then refused once per mechanism, and providers
lock an account after a few refused logins (Gmail's "454 4.7.0 Too many
login attempts"). exactmaild sends one AUTH command per login:

- `auth.method: oauth2`: XOAUTH2 (Microsoft 365 and Google document only it
  for SMTP). A token refused although unexpired by our clock (revoked, or
  the clocks disagree) is tried once more with a fresh one: a second token,
  not a second guess at a password.
- `auth.method: password`: PLAIN, else LOGIN, else CRAM-MD5. PLAIN is one
  round trip and the SASL mechanism every server has (RFC 4616); LOGIN is
  the same secret over two more round trips, for servers that offer only it
  (old Exchange). CRAM-MD5 comes last: it needs the server to keep the
  password in a replayable form and is obsolete (RFC 8314 leaves it to
  TLS-less setups, which exactmaild refuses except on loopback).
"""

from __future__ import annotations

import smtplib

from exactmaild.auth.credentials import Credentials
from exactmaild.core.errors import AccountFailure, TemporaryFailure

# Best first; each the name of the smtplib method that answers its challenges.
PASSWORD_MECHANISMS = {"PLAIN": "auth_plain", "LOGIN": "auth_login", "CRAM-MD5": "auth_cram_md5"}


def offered(conn: smtplib.SMTP) -> list[str]:
    """The SASL mechanisms in the server's EHLO AUTH line, upper-cased."""
    return conn.esmtp_features.get("auth", "").upper().split()


def mechanism_for(server_offers: list[str]) -> str | None:
    """The one password mechanism to use, or None if the server offers none of them."""
    return next((m for m in PASSWORD_MECHANISMS if m in server_offers), None)


def log_in(conn: smtplib.SMTP, creds: Credentials, host: str) -> None:
    """Authenticate `conn` with one AUTH command (see the module's note);
    raises smtplib.SMTPAuthenticationError when the server refuses it."""
    if creds.method == "none":
        return
    if creds.method == "oauth2":
        _xoauth2(conn, creds)
        return
    if not conn.has_extn("auth"):
        raise TemporaryFailure(
            f"{host} does not offer AUTH on this connection "
            "(does it need outgoing.security: starttls?)"
        )
    mechanism = mechanism_for(offered(conn))
    if mechanism is None:
        raise AccountFailure(
            f"{host} offers AUTH {' '.join(offered(conn))}, none of which exactmaild "
            "speaks with a password (PLAIN, LOGIN, CRAM-MD5); ask the provider, or "
            "use auth.method: oauth2 if it supports XOAUTH2"
        )
    conn.user, conn.password = creds.username, creds.secret()
    conn.auth(mechanism, getattr(conn, PASSWORD_MECHANISMS[mechanism]), initial_response_ok=True)


def _xoauth2(conn: smtplib.SMTP, creds: Credentials) -> None:
    user = creds.username
    for attempt in (1, 2):
        token = creds.secret()

        def xoauth2(challenge: bytes | None = None, token: str = token) -> str:
            # A 334 after the initial response is the server's JSON error
            # challenge: the client answers empty (never the token again)
            # and the server then sends the 535.
            if challenge is not None:
                return ""
            return f"user={user}\x01auth=Bearer {token}\x01\x01"

        try:
            conn.auth("XOAUTH2", xoauth2, initial_response_ok=True)
            return
        except smtplib.SMTPAuthenticationError:
            if attempt == 2:
                raise
            creds.invalidate()
