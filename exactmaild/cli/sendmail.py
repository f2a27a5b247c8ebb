"""The sendmail-compatible front: `exactmaild-sendmail` and `exactmaild sendmail`.

PHP's mail(), mailx and cron call `sendmail -t -i -f ADDR -F NAME [--] [RCPT...]`
and read only the exit status. This module reads those flags the way
sendmail does (`read_flags`), then queues the message from stdin
(`cmd_sendmail`). It runs on every mail() call, so it imports the
configuration loader and the spool only once the flags are known to be fine.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from exactmaild.cli.paths import load_config
from exactmaild.cli.queue import queue_message
from exactmaild.cli.report import run_reporting
from exactmaild.core.errors import EX_OK, TemporaryFailure, UsageError, from_os_error

# Flags that take the next argument as their value; only -F's value is used.
_WITH_VALUE = ("-f", "-F", "-o", "-B", "-N", "-R", "-V", "-X", "-L", "-O", "-h", "-p", "-q")
# Modes other than "read one message from stdin": not something a queue can do.
_UNSUPPORTED_MODES = ("-bs", "-bd", "-bD", "-bi", "-bP", "-bt", "-bv", "-I")


@dataclass
class SendmailCall:
    """What a sendmail command line asks for."""

    recipients: list[str] = field(default_factory=list)
    full_name: str | None = None
    config: str | None = None


def read_flags(argv: Sequence[str]) -> SendmailCall:
    """sendmail's flags: -t -i -oi -f ADDR -F NAME [--] [RCPT...]; others accepted and ignored.

    Raises UsageError for a mode exactmaild cannot serve (-bs, -bd, ...).
    """
    call = SendmailCall()
    args = list(argv)
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            call.recipients.extend(args[i + 1 :])
            break
        if a in _WITH_VALUE:
            if a == "-F" and i + 1 < len(args):
                call.full_name = args[i + 1]
            i += 2
            continue
        if a in ("-c", "--config"):
            call.config = args[i + 1] if i + 1 < len(args) else None
            i += 2
            continue
        if a.startswith("-F") and len(a) > 2:
            call.full_name = a[2:]
        elif a in _UNSUPPORTED_MODES:
            raise UsageError(
                f"sendmail {a} is not supported: exactmaild only queues messages; "
                "pipe the message to `exactmaild-sendmail -t` instead"
            )
        elif not a.startswith("-"):
            call.recipients.append(a)
        # -t, -i, -oi, -odi, -oem, -v, -bm, -f..., -B8BITMIME and the rest: accepted, ignored.
        i += 1
    return call


def cmd_sendmail(argv: Sequence[str]) -> int:
    """Queue the message on stdin as sendmail `argv` asks; 0 once it is in the spool."""
    call = read_flags(argv)
    cfg = load_config(call.config)
    try:
        queue_message(cfg, sys.stdin.buffer.read(), call.recipients, call.full_name)
    except OSError as exc:
        # sendmail's callers read 75 (EX_TEMPFAIL) as "not sent, try later":
        # a spool that cannot take the message now is reported that way.
        raise TemporaryFailure(str(from_os_error(exc, "cannot queue the message"))) from exc
    return EX_OK


def sendmail_main() -> int:
    """The `exactmaild-sendmail` script."""
    return run_reporting(lambda: cmd_sendmail(sys.argv[1:]))
