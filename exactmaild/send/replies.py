"""What an SMTP server's reply means for exactmaild: the reply table.

A reply is classified by its code, its enhanced status code (RFC 3463) and
the stage it answers (connect, auth, mail, rcpt, data), never by guessing
from words: the first row of `TABLE` that matches decides. A row may also
name a phrase of a provider's text, where the provider documents it and the
codes alone would be ambiguous (Postfix's anvil answers 4.7.1 to other
policies too). Each row's source is in the comment above it;
docs/operations.md has the same table for operators.

What the kinds do (the sender and `send.outcomes` act on them):

* "message": temporary, this message (TemporaryFailure): deferred on
  send.retry_intervals while the rest of the queue goes on; the same reply
  to several messages in a row pauses the account (`send.pausing`);
* "permanent": refused for good (PermanentFailure): to failed/, a notice;
* "recipient": at RCPT, this recipient only: deferred (4xx) or refused (5xx);
* "too_many_recipients": at RCPT, the transaction is full: the recipients
  not yet accepted go in the next transaction (`too_many_recipients()`);
* every other kind is an AccountFailure of that kind: nothing is failed,
  the message goes back unblamed and the account pauses ("provider_quota"
  until the provider's window frees, the others on send.account_pause).

Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from exactmaild.core.errors import AccountFailure, PermanentFailure, TemporaryFailure
from exactmaild.send.transport import Replies

Stage = Literal["connect", "auth", "mail", "rcpt", "data"]
Kind = Literal[
    "message",
    "permanent",
    "recipient",
    "too_many_recipients",
    "throttled",
    "rate_limited",
    "refused",
    "provider_quota",
    "auth_disabled",
    "mailbox_full",
]
ANY: frozenset[Stage] = frozenset(("connect", "auth", "mail", "rcpt", "data"))
SENDING: frozenset[Stage] = frozenset(("mail", "rcpt", "data"))

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$|;|:)")


@dataclass(frozen=True)
class Row:
    """One line of the table: what it matches and what it means.

    `codes`: reply codes (empty: any); `enhanced`: a regular expression the
    whole enhanced status code must match (None: any, or none given);
    `text`: a phrase the reply must contain (case-insensitive; None: any).
    """

    kind: Kind
    codes: frozenset[int] = frozenset()
    enhanced: str | None = None
    stages: frozenset[Stage] = ANY
    text: str | None = None

    def matches(self, code: int, enhanced: str | None, text: str, stage: Stage) -> bool:
        if stage not in self.stages or (self.codes and code not in self.codes):
            return False
        if self.enhanced is not None and not re.fullmatch(self.enhanced, enhanced or ""):
            return False
        return self.text is None or re.search(self.text, text, re.IGNORECASE) is not None


def _codes(*c: int) -> frozenset[int]:
    return frozenset(c)


TABLE: tuple[Row, ...] = (
    # Microsoft 365 turned SMTP AUTH with a password off for the tenant or the
    # mailbox: "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication
    # is disabled for the Tenant", "550 5.7.30 Basic authentication is not
    # supported for Client Submission".
    # https://learn.microsoft.com/en-us/exchange/clients-and-mobile-in-exchange-online/authenticated-client-smtp-submission
    # https://learn.microsoft.com/en-us/exchange/clients-and-mobile-in-exchange-online/deprecation-of-basic-authentication-exchange-online
    Row("auth_disabled", enhanced=r"5\.7\.139"),
    Row("auth_disabled", enhanced=r"5\.7\.30"),
    # Gmail: "454 4.7.0 Too many login attempts, please try again later."
    # https://support.google.com/a/answer/3726730 (Gmail SMTP errors and codes)
    Row("throttled", _codes(454), r"4\.7\.0", text=r"too many login attempts"),
    # A refused login, or mail refused for want of one (RFC 4954 section 6:
    # 530, 534, 535, 538; 454 "temporary authentication failure").
    Row("refused", _codes(530, 534, 535, 538)),
    Row("refused", _codes(454), stages=frozenset(("connect", "auth"))),
    Row("refused", _codes(454), text=r"auth"),
    # Postfix anvil, the hosting providers' usual limit:
    # "421 4.7.0 host[addr]: Error: too many connections from addr",
    # "450 4.7.1 Error: too much mail from addr", "... too many recipients
    # from addr", "... too many connections from addr".
    # https://www.postfix.org/postconf.5.html#smtpd_client_connection_count_limit
    # https://www.postfix.org/postconf.5.html#smtpd_client_message_rate_limit
    # https://www.postfix.org/anvil.8.html
    Row(
        "rate_limited",
        _codes(421, 450, 452),
        r"4\.7\.\d+",
        text=r"error: too (much mail|many (connections|messages|recipients|auth\w*)) from",
    ),
    # Gmail: "421 4.7.0 Try again later, closing connection." (throttled
    # connection); any other 421 with 4.7.x is a policy throttle as well.
    # https://support.google.com/a/answer/3726730 ; RFC 3463 section 3.8 (X.7.x)
    Row("throttled", _codes(421), r"4\.7\.\d+"),
    # Microsoft 365: "432 4.3.2 Concurrent connections limit exceeded",
    # "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded".
    # https://learn.microsoft.com/en-us/office365/servicedescriptions/exchange-online-service-description/exchange-online-limits
    Row("throttled", _codes(432)),
    Row("throttled", enhanced=r"4\.3\.2", text=r"sender thread limit|concurrent connections"),
    # The provider's own daily quota: Gmail "550 5.4.5 Daily user sending
    # limit exceeded" (https://support.google.com/a/answer/166852 ;
    # https://support.google.com/a/answer/3726730), Microsoft 365 "554 5.2.0
    # STOREDRV.Submission.Exception:SubmissionQuotaExceededException" and
    # "550 5.2.251".."5.2.255 Sender throttled due to continuous ..." (the
    # Exchange Online sending limits, in exchange-online-limits above).
    Row("provider_quota", enhanced=r"5\.4\.5", stages=SENDING),
    Row("provider_quota", enhanced=r"[45]\.2\.25[1-5]"),
    Row("provider_quota", text=r"SubmissionQuotaExceeded"),
    # Microsoft 365, SMTP AUTH mail is copied into Sent Items: "554 5.2.2
    # mailbox full; STOREDRV.Submission.Exception:QuotaExceededException".
    # https://learn.microsoft.com/en-us/exchange/mail-flow-best-practices/non-delivery-reports-in-exchange-online/fix-error-code-5-2-2-in-exchange-online
    Row("mailbox_full", stages=frozenset(("mail", "data")), text=r"\bQuotaExceededException"),
    # Gmail at RCPT: "452 4.5.3 Your message has too many recipients":
    # the transaction's recipient limit (RFC 5321 section 4.5.3.1.10, RFC 3463
    # X.5.3 "Too many recipients"); the rest go in the next transaction.
    Row("too_many_recipients", _codes(452), r"4\.5\.3", frozenset(("rcpt",))),
    # RFC 5321 section 4.5.3.1.10: a bare 452 at RCPT is the same answer.
    Row("too_many_recipients", _codes(452), None, frozenset(("rcpt",)), r"too many recipients"),
    # Everything else by its class (RFC 5321 section 4.2.1): at RCPT, about
    # that recipient; elsewhere 4xx (Gmail "451 4.3.0 Temporary server error",
    # any 450 4.x.x) is this message for now, 5xx for good.
    Row("recipient", stages=frozenset(("rcpt",))),
)


@dataclass(frozen=True)
class Meaning:
    """A reply, read: its kind, and the code and enhanced status that name it."""

    kind: Kind
    code: int
    enhanced: str | None

    @property
    def reply(self) -> str:
        """The code and enhanced status ("451 4.3.0"): the same reply to several messages."""
        return f"{self.code} {self.enhanced}" if self.enhanced else str(self.code)


def enhanced_of(text: str) -> str | None:
    """The enhanced status code (RFC 3463) a reply's text begins with, if any."""
    m = _ENHANCED.match(text.strip())
    return m.group(0) if m else None


def meaning(code: int, text: str, stage: Stage) -> Meaning:
    """What `code text` means at `stage`: the first row of TABLE that matches."""
    enhanced = enhanced_of(text)
    for row in TABLE:
        if row.matches(code, enhanced, text, stage):
            return Meaning(row.kind, code, enhanced)
    return Meaning("message" if code < 500 else "permanent", code, enhanced)


def too_many_recipients(code: int, text: str, stage: Stage = "rcpt") -> bool:
    """The transaction holds no more recipients: send it to the accepted ones
    and the rest in the next transaction (never a pause, never a failure)."""
    return meaning(code, text, stage).kind == "too_many_recipients"


class AllRefused(PermanentFailure):
    """Every recipient was refused for good; `refused` has each one's reply."""

    def __init__(self, refused: Replies) -> None:
        self.refused = refused
        super().__init__(
            "every recipient was refused: "
            + "; ".join(f"{r}: {c} {t}" for r, (c, t) in refused.items())
        )


def is_account_reply(code: int, text: str) -> bool:
    """A reply to one RCPT that speaks for the whole transaction, not that
    recipient: an account problem, or the server closing the session (421)."""
    return code == 421 or meaning(code, text, "rcpt").kind not in (
        "recipient",
        "too_many_recipients",
        "message",
        "permanent",
    )


# What each account kind tells the operator, after "{detail}".
_ACCOUNT_TEXT: dict[Kind, str] = {
    "auth_disabled": (
        "the provider has disabled password logins (SMTP AUTH) for this account: "
        "set account.auth.method: oauth2 with provider: microsoft365, "
        "then run `exactmaild authorize`"
    ),
    "throttled": "the server is throttling this account's connections; trying again after a pause",
    "rate_limited": (
        "the server is rate-limiting this account or host; sending pauses until the rate frees, "
        "nothing has failed"
    ),
    "provider_quota": (
        "provider quota reached: the provider's own sending limit for this account is used up; "
        "sending resumes when the provider's limit window frees"
    ),
    "mailbox_full": (
        "the mailbox is full (the provider keeps a copy of every sent message): "
        "empty Sent Items and Deleted Items, then run `exactmaild flush`"
    ),
    "refused": "the server refused the login: check the password file or the account's SMTP AUTH",
}


def classify_reply(code: int, text: str, *, stage: Stage) -> Exception:
    """Map an SMTP reply to the error tree, by the table."""
    m = meaning(code, text, stage)
    detail = f"{code} {text}".strip()
    where = stage.upper()
    if m.kind in _ACCOUNT_TEXT:
        return AccountFailure(f"{_ACCOUNT_TEXT[m.kind]} ({detail})", reply=m.reply, kind=m.kind)
    if code == 421:
        return TemporaryFailure(f"the server closed the session: {detail}", reply=m.reply)
    if 400 <= code < 500:  # "message", or a deferred recipient / full transaction at RCPT
        return TemporaryFailure(f"temporary failure at {where}: {detail}", reply=m.reply)
    if code >= 500:
        return PermanentFailure(f"refused at {where}: {detail}")
    return TemporaryFailure(f"unexpected reply at {where}: {detail}", reply=m.reply)


def login_refused(code: int, text: str, host: str, username: str, hint: str) -> AccountFailure:
    """The server refused AUTH: by the table (password logins switched off,
    too many logins), or a plain refusal naming the account and `hint`."""
    failure = classify_reply(code, text, stage="auth")
    if isinstance(failure, AccountFailure) and failure.kind != "refused":
        return failure
    return AccountFailure(
        f"{host} refused the login for {username}: {code} {text} ({hint})",
        reply=meaning(code, text, "auth").reply,
    )


def no_recipient(refused: Replies, deferred: Replies) -> TemporaryFailure | PermanentFailure:
    """The error when no recipient was accepted: temporary if any was only deferred."""
    if deferred:
        rcpt, (code, text) = next(iter(deferred.items()))
        return TemporaryFailure(
            f"every recipient was deferred, e.g. {rcpt}: {code} {text}",
            reply=meaning(code, text, "rcpt").reply,
        )
    return AllRefused(refused)
