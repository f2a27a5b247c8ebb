"""What an SMTP server's reply means for exactmaild: one place for the taxonomy.

* 5xx on MAIL/RCPT/DATA: PermanentFailure (the message goes to failed/);
* 4xx, connection refused/reset, TLS handshake failure, timeouts:
  TemporaryFailure (the message is deferred and retried);
* a refused login, or a provider's quota or rate-limit reply:
  AccountFailure (the whole queue pauses; no message is blamed for an
  account problem);
* the connection lost after the body went out but before the reply:
  UnknownOutcome (raised by the transport: the message may have been
  delivered).
"""

from __future__ import annotations

import re

from exactmaild.core.errors import AccountFailure, PermanentFailure, TemporaryFailure
from exactmaild.send.transport import Replies

# Replies by which providers say "this account is over its quota / sending too
# fast / blocked": never the message's fault. Enhanced status codes per RFC 3463
# (5.4.5 and 4.4.5 "system congestion"/quota in practice, 5.2.0/4.2.0 used by
# Microsoft and others for quota, 4.7.x / 5.7.x policy) and the words
# providers use in the text.
_ACCOUNT_CODES = re.compile(r"\b[45]\.(4\.5|2\.0|7\.0|7\.1|7\.2[6-9]|7\.3\d?|3\.2)\b")
_ACCOUNT_WORDS = re.compile(
    r"quota|rate.?limit|too many|sending limit|daily.*limit|limit exceeded|"
    r"exceeded.*limit|throttl|suspend|blocked|spam|temporarily deferred|try again later",
    re.IGNORECASE,
)


class AllRefused(PermanentFailure):
    """Every recipient was refused for good; `refused` has each one's reply."""

    def __init__(self, refused: Replies) -> None:
        self.refused = refused
        super().__init__(
            "every recipient was refused: "
            + "; ".join(f"{r}: {c} {t}" for r, (c, t) in refused.items())
        )


def is_account_reply(code: int, text: str) -> bool:
    """A reply to one RCPT that speaks of the account, not of that recipient."""
    return code == 421 or bool(_ACCOUNT_WORDS.search(text))


def classify_reply(code: int, text: str, *, stage: str) -> Exception:
    """Map an SMTP reply to the error tree. `stage` is connect, mail, rcpt or data."""
    detail = f"{code} {text}".strip()
    if code in (530, 534, 535, 538, 454) and "auth" in text.lower():
        return AccountFailure(f"the server refused the login: {detail}")
    if stage != "rcpt" and (_ACCOUNT_CODES.search(text) and _ACCOUNT_WORDS.search(text)):
        return AccountFailure(f"the provider is refusing mail from this account: {detail}")
    if code == 421 or (stage != "rcpt" and code in (451, 452) and _ACCOUNT_WORDS.search(text)):
        if _ACCOUNT_WORDS.search(text):
            return AccountFailure(f"the provider is limiting this account: {detail}")
        return TemporaryFailure(f"the server closed the session: {detail}")
    if 400 <= code < 500:
        return TemporaryFailure(f"temporary failure at {stage.upper()}: {detail}")
    if code >= 500:
        return PermanentFailure(f"refused at {stage.upper()}: {detail}")
    return TemporaryFailure(f"unexpected reply at {stage.upper()}: {detail}")


def no_recipient(refused: Replies, deferred: Replies) -> TemporaryFailure | PermanentFailure:
    """The error when no recipient was accepted: temporary if any was only deferred."""
    if deferred:
        rcpt, (code, text) = next(iter(deferred.items()))
        return TemporaryFailure(f"every recipient was deferred, e.g. {rcpt}: {code} {text}")
    return AllRefused(refused)
