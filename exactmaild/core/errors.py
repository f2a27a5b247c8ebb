"""The error tree every layer raises and the command line maps to exit codes.

Three kinds matter to a user: the configuration is wrong (fix the file),
something failed for now (it will be retried), or something failed for good
(a person must look). Exit codes follow sysexits.h.
"""

from __future__ import annotations

from dataclasses import dataclass

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_CANTCREAT = 73
EX_TEMPFAIL = 75
EX_CONFIG = 78


class ExactmailError(Exception):
    """Base of every error exactmaild raises on purpose."""

    exit_code = EX_SOFTWARE


@dataclass(frozen=True)
class Problem:
    """One configuration problem, located in its file."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(ExactmailError):
    """The configuration cannot be used; carries every problem found."""

    exit_code = EX_CONFIG

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class TemporaryFailure(ExactmailError):
    """Failed for now; retrying later may succeed (4xx, timeouts, resets)."""

    exit_code = EX_TEMPFAIL


class AccountFailure(TemporaryFailure):
    """The account itself is blocked (bad login, quota, rate limit).

    Not the message's fault: the whole queue pauses and nothing is failed.
    """


class UnknownOutcome(TemporaryFailure):
    """The connection dropped after the message body went out: it may have been delivered."""


class PermanentFailure(ExactmailError):
    """Failed for good (5xx); retrying the same thing will fail the same way."""

    exit_code = EX_UNAVAILABLE


class BadMessage(PermanentFailure):
    """The message itself is unusable (empty, not RFC 5322, no recipients, too big)."""

    exit_code = EX_DATAERR
