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
# What each of those would have done, and what to use instead.
_INSTEAD = {
    "-bs": "SMTP on stdin/stdout: exactmaild does not speak SMTP to local programs; "
    "pipe the message to `exactmaild-sendmail -t` instead",
    "-bd": "run as an SMTP daemon: exactmaild is not an SMTP server; run `exactmaild run` "
    "and let programs pipe to `exactmaild-sendmail -t`",
    "-bD": "run as an SMTP daemon: exactmaild is not an SMTP server; run `exactmaild run` "
    "and let programs pipe to `exactmaild-sendmail -t`",
    "-bi": "rebuild the aliases: exactmaild has no aliases",
    "-I": "rebuild the aliases: exactmaild has no aliases",
    "-bP": "print the queue's size: use `exactmaild status`",
    "-bt": "test the address rewriting: exactmaild rewrites no addresses",
    "-bv": "verify addresses: exactmaild cannot; the provider's server decides at send time",
}
USAGE = """\
usage: exactmaild-sendmail [-t] [-i] [-f ADDR] [-F NAME] [--] [RCPT...] < MESSAGE
       exactmaild-sendmail -bp          list the queue (as mailq)

Queues the RFC 5322 message on stdin for exactmaild to send (paced, under the
daily limit). -t takes the recipients from To, Cc and Bcc; RCPT arguments are
added as Bcc. -i and -oi are accepted (the message ends at end of input, never
at a line with a single dot). Other sendmail flags are accepted and ignored;
-bs, -bd, -bi, -bt and -bv are refused: exactmaild only queues messages.
The configuration is $EXACTMAILD_CONFIG, else /etc/exactmaild/exactmaild.yaml.
Exit 0 once queued; 64 usage, 65 bad message, 75 try again later, 78 config.
"""


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
            raise UsageError(f"sendmail {a} is not supported ({_INSTEAD[a]})")
        elif not a.startswith("-"):
            call.recipients.append(a)
        # -t, -i, -oi, -odi, -oem, -v, -bm, -f..., -B8BITMIME and the rest: accepted, ignored.
        i += 1
    return call


def cmd_sendmail(argv: Sequence[str]) -> int:
    """Queue the message on stdin as sendmail `argv` asks; 0 once it is in the spool."""
    answered = answer_without_stdin(argv)
    if answered is not None:
        return answered
    call = read_flags(argv)
    cfg = load_config(call.config)
    try:
        queue_message(cfg, sys.stdin.buffer.read(), call.recipients, call.full_name)
    except OSError as exc:
        # sendmail's callers read 75 (EX_TEMPFAIL) as "not sent, try later":
        # a spool that cannot take the message now is reported that way.
        raise TemporaryFailure(str(from_os_error(exc, "cannot queue the message"))) from exc
    return EX_OK


def answer_without_stdin(argv: Sequence[str]) -> int | None:
    """The calls answered without reading a message: --help, and -bp (the
    queue, as mailq); None for a call that queues the message on stdin.

    Before any of them is read from a terminal, it says it waits for the
    message, instead of waiting silently.
    """
    args = list(argv)
    if "--help" in args or "-?" in args:
        print(USAGE, end="")
        return EX_OK
    if "-bp" in args:
        import argparse

        from exactmaild.cli.queue import cmd_queue

        # What `exactmaild queue list` parses into (tests/test_sendmail_answers.py
        # runs -bp, so a new option of `queue list` cannot go unnoticed here).
        config = read_flags([a for a in args if a != "-bp"]).config
        return cmd_queue(argparse.Namespace(config=config, queue_command="list", json=False))
    if not any(a in _UNSUPPORTED_MODES for a in args) and sys.stdin.isatty():
        print(
            "exactmaild-sendmail: reading the message from the terminal: headers, an empty "
            "line, the body; end it with Ctrl-D (--help for usage)",
            file=sys.stderr,
        )
    return None


def sendmail_main() -> int:
    """The `exactmaild-sendmail` script."""
    return run_reporting(lambda: cmd_sendmail(sys.argv[1:]))
