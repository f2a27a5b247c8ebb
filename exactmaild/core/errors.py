"""The error tree every layer raises, and the exit code of each kind of error.

Three kinds matter to a user: the configuration is wrong (fix the file),
something failed for now (it will be retried), or something failed for good
(a person must look). Each class carries its `exit_code`; the command line
maps an error to its code through this tree and nowhere else, so every exit
status exactmaild returns is one of the named constants below. They follow
sysexits.h, which is also what sendmail's callers (PHP mail(), cron, mailx)
expect.

A message should say what was wrong, where (the file, host or path) and what
to do about it: the user sees it as one line prefixed with "exactmaild: ".
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "EX_CANTCREAT",
    "EX_CONFIG",
    "EX_DATAERR",
    "EX_INTERRUPTED",
    "EX_IOERR",
    "EX_NOINPUT",
    "EX_NOPERM",
    "EX_OK",
    "EX_SOFTWARE",
    "EX_TEMPFAIL",
    "EX_UNAVAILABLE",
    "EX_USAGE",
    "SUBMIT_GROUP",
    "AccountFailure",
    "BadMessage",
    "ConfigError",
    "ExactmailError",
    "LocalIOFailure",
    "MissingFile",
    "NoPermission",
    "NotAvailable",
    "PermanentFailure",
    "Problem",
    "TemporaryFailure",
    "UnknownOutcome",
    "UsageError",
    "current_user",
    "from_os_error",
]

# sysexits.h
EX_OK = 0
EX_USAGE = 64  # the command line is wrong
EX_DATAERR = 65  # the input (a message) is unusable
EX_NOINPUT = 66  # an input file does not exist
EX_UNAVAILABLE = 69  # a server, the daemon or a queued message is not there
EX_SOFTWARE = 70  # a bug
EX_CANTCREAT = 73  # an output file (the pidfile) cannot be created
EX_IOERR = 74  # reading or writing a file failed
EX_TEMPFAIL = 75  # try again later
EX_NOPERM = 77  # not allowed: run as another user or fix the permissions
EX_CONFIG = 78  # the configuration is wrong

# Not sysexits.h: 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C.
EX_INTERRUPTED = 130


class ExactmailError(Exception):
    """Base of every error exactmaild raises on purpose."""

    exit_code = EX_SOFTWARE


class UsageError(ExactmailError):
    """The command line asks for something impossible (a bad option value, an unsupported flag)."""

    exit_code = EX_USAGE


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
    """Failed for now; retrying later may succeed (4xx, timeouts, resets).

    `reply` is the server's reply code and enhanced status ("451 4.3.0")
    when a reply caused it: the same reply on message after message says the
    server, not the message, is in trouble.
    """

    exit_code = EX_TEMPFAIL

    def __init__(self, message: str = "", *, reply: str | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class AccountFailure(TemporaryFailure):
    """The account itself is blocked (bad login, quota, rate limit).

    Not the message's fault: the whole queue pauses and nothing is failed.
    `kind` says how long for: "provider_quota" waits until the provider's
    limit window frees; every other kind ("refused", "throttled",
    "rate_limited", "auth_disabled", "mailbox_full", "server_trouble") steps
    through send.account_pause.
    """

    def __init__(self, message: str = "", *, reply: str | None = None, kind: str = "refused"):
        super().__init__(message, reply=reply)
        self.kind = kind


class UnknownOutcome(TemporaryFailure):
    """The connection dropped after the message body went out: it may have been delivered."""


class PermanentFailure(ExactmailError):
    """Failed for good (5xx); retrying the same thing will fail the same way."""

    exit_code = EX_UNAVAILABLE


class BadMessage(PermanentFailure):
    """The message itself is unusable (empty, not RFC 5322, no recipients, too big)."""

    exit_code = EX_DATAERR


class NotAvailable(ExactmailError):
    """What the command works on is not there: the daemon is not running, no such queued message."""

    exit_code = EX_UNAVAILABLE


class LocalIOFailure(ExactmailError):
    """Reading or writing a local file failed (disk full, read-only, a directory in the way).

    Made from an OSError by `from_os_error`; `path` is the file concerned, if
    the system said which.
    """

    exit_code = EX_IOERR

    def __init__(self, message: str, path: Path | None = None) -> None:
        self.path = path
        super().__init__(message)


class MissingFile(LocalIOFailure):
    """A file or directory the command reads does not exist."""

    exit_code = EX_NOINPUT


class NoPermission(LocalIOFailure):
    """This user may not read or write a file the command needs."""

    exit_code = EX_NOPERM


# The producers' group: its members may submit mail and nothing more
# (docs/operations.md, "Who may submit").
SUBMIT_GROUP = "exactmaild-submit"


def current_user() -> str:
    """This process's user name, for messages about permissions."""
    import os
    import pwd

    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def from_os_error(exc: OSError, doing: str = "") -> LocalIOFailure:
    """The error of the tree for `exc`, with the path and what to do in its message.

    `doing` says what was being done ("cannot queue the message"), so the
    line reads as a sentence: "exactmaild: cannot queue the message: PATH: ...".
    """
    path = Path(exc.filename) if isinstance(exc.filename, str) else None
    where = f"{exc.filename}: " if exc.filename else ""
    lead = f"{doing}: " if doing else ""
    if isinstance(exc, FileNotFoundError):
        return MissingFile(f"{lead}{where}not found: check the path (or the config)", path)
    if isinstance(exc, PermissionError):
        return NoPermission(
            f"{lead}{where}permission denied for user {current_user()}: run as root or the "
            "exactmaild user, or fix the file's owner and mode (for the spool and state "
            "directories: systemd-tmpfiles --create exactmaild.conf, as root); "
            f"applications that only submit mail belong in the group {SUBMIT_GROUP}",
            path,
        )
    what = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        todo = "free some space on that filesystem"
    elif exc.errno in (errno.EISDIR, errno.ENOTDIR):
        todo = "a directory is where a file should be (or the reverse): check the path"
    elif exc.errno == errno.EROFS:
        todo = "the filesystem is mounted read-only: remount it read-write"
    else:
        todo = "check the path, the disk and the filesystem"
    return LocalIOFailure(f"{lead}{where}{what}: {todo}", path)
