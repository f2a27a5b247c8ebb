"""The `exactmaild COMMAND` script: the parser, and `main`, which runs one command.

The commands live in modules named for what they act on: exactmaild.cli.queue
(submit, queue; show, send-now and the batch operations in
exactmaild.cli.queue_ops), exactmaild.cli.history, exactmaild.cli.control (run, flush, status,
reset-mailbox-counter), exactmaild.cli.checks (check-config,
test-connection, plan), exactmaild.cli.authorize and exactmaild.cli.sendmail.
Every one runs through exactmaild.cli.report, which maps errors to exit codes
through the tree in exactmaild.core.errors and prints one clear line per
problem; a traceback reaches the user only for a bug.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from exactmaild import __version__
from exactmaild.cli.authorize import add_arguments as add_authorize_arguments
from exactmaild.cli.checks import cmd_check_config, cmd_plan, cmd_test_connection
from exactmaild.cli.control import cmd_flush, cmd_reset_mailbox_counter, cmd_run, cmd_status
from exactmaild.cli.paths import DEFAULT_CONFIG
from exactmaild.cli.queue import cmd_queue, cmd_submit
from exactmaild.cli.report import run_reporting
from exactmaild.cli.sendmail import cmd_sendmail
from exactmaild.core.errors import EX_OK, EX_USAGE

# What argparse exits with for a usage error; sysexits.h says EX_USAGE.
_ARGPARSE_USAGE = 2


def cmd_authorize(args: argparse.Namespace) -> int:
    # Imported on use: the OAuth2 flow pulls in the HTTP client and the secrets.
    from exactmaild.cli.authorize import cmd_authorize as run

    return run(args)


def cmd_history(args: argparse.Namespace) -> int:
    # Imported on use: it reads the state store (SQLite).
    from exactmaild.cli.history import cmd_history as run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="exactmaild",
        description="Owns a practice's email account: paced sending under a hard daily "
        "limit, scheduled mailbox checks.",
    )
    p.add_argument("--version", action="version", version=f"exactmaild {__version__}")
    p.add_argument(
        "-c", "--config", help=f"config file (default $EXACTMAILD_CONFIG, else {DEFAULT_CONFIG})"
    )
    # -c works before or after the command: `exactmaild -c F status` and `exactmaild status -c F`.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", default=argparse.SUPPRESS, help="config file")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    _add = sub.add_parser

    def add(name: str, **kw: Any) -> argparse.ArgumentParser:
        return _add(name, parents=[common], **kw)

    sub.add_parser = add  # type: ignore[method-assign]
    run = sub.add_parser("run", help="run the daemon in the foreground (systemd)")
    run.add_argument("--daemon", action="store_true", help="detach (hosts without systemd)")
    run.add_argument("--pidfile", help="with --daemon: pidfile (default STATE_DIR/exactmaild.pid)")
    run.set_defaults(func=cmd_run)
    check = sub.add_parser(
        "check-config", help="validate the configuration and what `run` checks at start"
    )
    check.add_argument(
        "--user", help="check the secrets and directories as this user (default: the service's)"
    )
    check.add_argument(
        "--syntax", action="store_true", help="the file alone: no secrets, no directories"
    )
    check.set_defaults(func=cmd_check_config)
    test = sub.add_parser("test-connection", help="log in to both servers, send nothing")
    test.add_argument(
        "--force",
        action="store_true",
        help="test the outgoing server even while the daemon runs (a second SMTP connection)",
    )
    test.set_defaults(func=cmd_test_connection)
    auth = sub.add_parser(
        "authorize",
        help="OAuth2: get and store the refresh token (device code flow; Google: loopback flow)",
    )
    add_authorize_arguments(auth)
    auth.set_defaults(func=cmd_authorize)
    submit = sub.add_parser("submit", help="queue one RFC 5322 message from FILE or stdin")
    submit.add_argument("file", nargs="?")
    submit.add_argument(
        "--at",
        metavar="TIME",
        help='send no earlier than TIME: "YYYY-MM-DD HH:MM" in the config\'s timezone, '
        "or ISO 8601 with an offset (writes a Deferred-Delivery header)",
    )
    submit.set_defaults(func=cmd_submit)
    # Only for the help text: main() hands `sendmail` to the front before argparse runs.
    sm = sub.add_parser("sendmail", help="sendmail-compatible front", add_help=False)
    sm.add_argument("rest", nargs=argparse.REMAINDER)
    q = sub.add_parser("queue", help="inspect the spool; cancel, hold, release, retry, send-now")
    qs = q.add_subparsers(
        dest="queue_command",
        metavar="list|show|cancel|hold|release|retry|send-now",
        required=True,
    )
    ql = qs.add_parser("list", parents=[common], help="the messages in the spool")
    ql.add_argument("--json", action="store_true")
    qs.add_parser("show", parents=[common], help="one message, queued or finished").add_argument(
        "id"
    )
    qs.add_parser(
        "send-now", parents=[common], help="send this one next (still paced and capped)"
    ).add_argument("id")
    for name, what in (
        ("cancel", "stop queued, deferred or held messages"),
        ("hold", "park queued or deferred messages in hold/"),
        ("release", "put held messages back in the queue"),
        ("retry", "queue failed, deferred, held or cancelled messages again"),
    ):
        op = qs.add_parser(name, parents=[common], help=what)
        op.add_argument("ids", nargs="*", metavar="ID")
        op.add_argument("--all", action="store_true", help="every message the filters select")
        op.add_argument(
            "--state", help="with --all: queued, deferred, scheduled, hold, failed or cancelled"
        )
        op.add_argument("--to", metavar="ADDR", help="with --all: messages to this recipient")
        op.add_argument("--subject", metavar="TEXT", help="with --all: subject contains TEXT")
    q.set_defaults(func=cmd_queue)
    hist = sub.add_parser("history", help="finished messages: did it go, to whom, when")
    hist.add_argument("--to", metavar="ADDR", help="only messages to this recipient")
    hist.add_argument(
        "--since", metavar="DATE", help="2026-12-01, '2026-12-01 14:00', today, yesterday, 2d, 12h"
    )
    hist.add_argument("--limit", type=int, metavar="N", help="at most the N latest")
    hist.add_argument("--json", action="store_true", help="ISO 8601 times with the offset")
    hist.set_defaults(func=cmd_history)
    sub.add_parser("flush", help="Send/Receive now").set_defaults(func=cmd_flush)
    status = sub.add_parser("status", help="sent against the limit, queue, checks, last error")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    sub.add_parser("reset-mailbox-counter", help="forget the receive position").set_defaults(
        func=cmd_reset_mailbox_counter
    )
    plan = sub.add_parser("plan", help="emails a minute and the delay for a daily limit")
    plan.add_argument("--daily-limit", type=int, required=True)
    g = plan.add_mutually_exclusive_group()
    g.add_argument("--hours", type=float)
    g.add_argument("--window", help="HH:MM-HH:MM")
    plan.add_argument("--reserve", type=int, default=0)
    plan.set_defaults(func=cmd_plan)
    return p


def _sendmail_args(argv: list[str]) -> list[str] | None:
    """The arguments after `sendmail` when that is the command, else None.

    `sendmail` takes sendmail's own flags, which argparse must not interpret;
    a `-c F` before it is passed on through $EXACTMAILD_CONFIG.
    """
    for i, a in enumerate(argv):
        if a == "sendmail":
            if i > 0 and argv[i - 1] in ("-c", "--config"):
                continue
            pre = argv[:i]
            if pre[:1] in (["-c"], ["--config"]) and len(pre) >= 2:
                os.environ["EXACTMAILD_CONFIG"] = pre[1]
            return argv[i + 1 :]
        if not a.startswith("-") and (i == 0 or argv[i - 1] not in ("-c", "--config")):
            return None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """The `exactmaild` script: run one command and return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    sendmail_argv = _sendmail_args(argv)
    if sendmail_argv is not None:
        return run_reporting(lambda: cmd_sendmail(sendmail_argv))
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # --help and --version exit 0; a usage error exits 2, which sysexits.h calls 64.
        if exc.code == _ARGPARSE_USAGE:
            return EX_USAGE
        return EX_OK if exc.code is None else int(exc.code)
    if not getattr(args, "func", None):
        parser.print_help()
        return EX_USAGE
    return run_reporting(lambda: int(args.func(args)))
