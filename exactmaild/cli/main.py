"""The command line: `exactmaild COMMAND` and the `exactmaild-sendmail` front.

Each command maps errors from the tree to sysexits codes and prints one clear
line per problem; a traceback reaches the user only for a bug.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from exactmaild import __version__
from exactmaild.cli.paths import DEFAULT_CONFIG, config_path
from exactmaild.config.model import Config
from exactmaild.core.errors import (
    EX_DATAERR,
    EX_OK,
    EX_SOFTWARE,
    EX_UNAVAILABLE,
    EX_USAGE,
    BadMessage,
    ConfigError,
    ExactmailError,
    TemporaryFailure,
)


def _load(args: argparse.Namespace) -> Config:
    from exactmaild.config import load as configload

    return configload.load(config_path(args.config))


def _err(text: str) -> None:
    print(f"exactmaild: {text}", file=sys.stderr)


# -- commands ------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from exactmaild.daemon import logs
    from exactmaild.daemon.service import Service

    cfg = _load(args)
    adjust = None
    if args.daemon:
        from dataclasses import replace

        from exactmaild.daemon.detach import detach

        for warning in cfg.warnings:  # to the terminal, before it is gone
            print(f"warning: {warning}", file=sys.stderr)

        def adjust(c: Config) -> Config:
            # A detached process has no stdout: log beside the state, also
            # after a reload of a YAML that names no log.file.
            if c.log.file is not None:
                return c
            return replace(
                c, log=replace(c.log, file=c.state_dir / "exactmaild.log", format="json")
            )

        cfg = adjust(cfg)
        pidfile = Path(args.pidfile or cfg.state_dir / "exactmaild.pid")
        detach(pidfile, working_dir=Path("/"))
    logs.configure(cfg.log)
    # Through the logger, not print(): under systemd stderr is the journal too,
    # and a plain line there breaks "every line is a JSON event".
    for warning in cfg.warnings:
        logs.get().warning("config_warning", warning=warning)
    service = Service(cfg, adjust_config=adjust)
    try:
        service.start()
    except ExactmailError as exc:
        logs.get().error("start_failed", error=str(exc))
        _err(str(exc))
        return exc.exit_code
    return service.run()


def cmd_check_config(args: argparse.Namespace) -> int:

    cfg = _load(args)
    from exactmaild.cli.summary import summary

    print(summary(cfg))
    return EX_OK


def cmd_plan(args: argparse.Namespace) -> int:
    from exactmaild.config.load import parse_window
    from exactmaild.core.pacing import plan

    if args.window:
        try:
            hours = parse_window(args.window).hours
        except ValueError as exc:
            _err(f"--window: {exc}")
            return EX_USAGE
    else:
        hours = args.hours if args.hours is not None else 8.0
    try:
        p = plan(args.daily_limit, hours, args.reserve)
    except ValueError as exc:
        _err(str(exc))
        return EX_USAGE
    print(f"daily limit {p.daily_limit}, reserve {p.reserve}, over {p.hours:g} h:")
    if p.per_minute >= 1:
        print(f"  {p.per_minute} email{'s' if p.per_minute != 1 else ''} a minute")
    else:
        print("  less than 1 email a minute")
    print(f"  delay: {p.delay:g}s between sends")
    print(
        f"  config: send: {{delay: {p.delay:g}s, daily_limit: {p.daily_limit}, "
        f"reserve: {p.reserve}}}  (or delay: auto)"
    )
    return EX_OK


def _read_input(path: str | None) -> bytes:
    if path and path != "-":
        return Path(path).read_bytes()
    return sys.stdin.buffer.read()


def _queue_message(
    cfg: Config, raw: bytes, extra_rcpts: Sequence[str] = (), full_name: str | None = None
) -> str:
    """Validate and spool one message; raises BadMessage (exit 65)."""
    from exactmaild.outbox.spool import Spool
    from exactmaild.send import message

    raw = raw.replace(b"\r\n", b"\n")
    message.check_raw(raw, cfg.spool.max_message_size)
    msg = message.parse(raw)
    have = set(message.recipients(msg))
    missing = [r for r in extra_rcpts if r not in have]
    if missing:
        # Recipients named on the command line travel as Bcc: they get the
        # message, and the headers others see are unchanged.
        head, sep, body = raw.partition(b"\n\n")
        raw = head + b"\nBcc: " + ", ".join(missing).encode("ascii") + b"\n" + sep[1:] + body
        msg = message.parse(raw)
    if full_name and msg["from"] is None:
        raw = f"From: {full_name} <{cfg.account.address}>\n".encode() + raw
    if not message.recipients(message.parse(raw)):
        raise BadMessage("the message has no recipient: it needs a To, Cc or Bcc header")
    if not (cfg.spool.dir / "new").is_dir() or not (cfg.spool.dir / "tmp").is_dir():
        raise TemporaryFailure(
            f"the spool {cfg.spool.dir} is missing its tmp/ and new/ directories; "
            "start the daemon once (it creates them) or check spool.dir"
        )
    spool = Spool(cfg.spool.dir, create=False)
    return spool.submit(raw)


def cmd_submit(args: argparse.Namespace) -> int:
    cfg = _load(args)
    qid = _queue_message(cfg, _read_input(args.file))
    print(qid)
    return EX_OK


def cmd_sendmail(argv: Sequence[str]) -> int:
    """sendmail-compatible: -t -i -oi -f ADDR -F NAME [--] [RCPT...]; others ignored."""
    rcpts: list[str] = []
    full_name: str | None = None
    config: str | None = None
    i = 0
    args = list(argv)
    while i < len(args):
        a = args[i]
        if a == "--":
            rcpts.extend(args[i + 1 :])
            break
        if a in ("-f", "-F", "-o", "-B", "-N", "-R", "-V", "-X", "-L", "-O", "-h", "-p", "-q"):
            if a == "-F" and i + 1 < len(args):
                full_name = args[i + 1]
            i += 2
            continue
        if a in ("-c", "--config"):
            config = args[i + 1] if i + 1 < len(args) else None
            i += 2
            continue
        if a.startswith("-F") and len(a) > 2:
            full_name = a[2:]
        elif a in ("-bs", "-bd", "-bD", "-bi", "-bP", "-bt", "-bv", "-I"):
            _err(f"sendmail {a} is not supported: exactmaild only queues messages")
            return EX_USAGE
        elif not a.startswith("-"):
            rcpts.append(a)
        # -t, -i, -oi, -odi, -oem, -v, -bm, -f..., -B8BITMIME and the rest: accepted, ignored.
        i += 1
    from exactmaild.config import load as configload

    try:
        cfg = configload.load(config_path(config))
        qid = _queue_message(cfg, sys.stdin.buffer.read(), rcpts, full_name)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    except BadMessage as exc:
        _err(f"message refused: {exc}")
        return EX_DATAERR
    except OSError as exc:
        _err(f"cannot queue the message: {exc}")
        return 75
    del qid
    return EX_OK


def sendmail_main() -> int:
    return cmd_sendmail(sys.argv[1:])


def cmd_queue(args: argparse.Namespace) -> int:
    from exactmaild.outbox.spool import STATE_NAMES, Spool
    from exactmaild.send import message
    from exactmaild.store.state import StateStore

    cfg = _load(args)
    spool = Spool(cfg.spool.dir, create=False)
    if args.queue_command == "list":
        infos: dict[str, Any] = {}
        if (cfg.state_dir / "exactmaild.sqlite3").exists():
            st = StateStore(cfg.state_dir, create=False)
            infos = st.messages()
            st.close()
        rows: list[dict[str, Any]] = []
        for e in spool.entries(("new", "active", "deferred", "hold", "failed")):
            info = infos.get(e.queue_id)
            rows.append(
                {
                    "id": e.queue_id,
                    "state": STATE_NAMES[e.state],
                    "size": e.size,
                    "queued_at": e.mtime,
                    "tries": info.tries if info else 0,
                    "next_try": info.next_try if info else None,
                    "last_error": info.last_error if info else "",
                }
            )
        if args.json:
            print(json.dumps(rows, indent=1))
            return EX_OK
        if not rows:
            print("the queue is empty")
        for r in rows:
            extra = f"  tries {r['tries']}: {r['last_error'][:60]}" if r["tries"] else ""
            print(f"{r['id']}  {r['state']:<9} {r['size']:>9} B{extra}")
        return EX_OK
    qid = args.id
    if args.queue_command == "show":
        entry = spool.find(qid)
        if entry is None:
            _err(f"no message {qid} in the spool")
            return EX_UNAVAILABLE
        print(f"id: {qid}\nstate: {STATE_NAMES[entry.state]}\nsize: {entry.size} bytes")
        if entry.path.is_file() and not entry.path.is_symlink():
            headers = message.summary_headers(entry.path.read_bytes()[:65536])
            for k, v in headers.items():
                print(f"{k.lower()}: {v}")
        reason = spool.reason(qid)
        if reason:
            print(f"reason: {reason.strip()}")
        return EX_OK
    try:
        if args.queue_command == "cancel":
            was = spool.cancel(qid)
            print(f"{qid}: cancelled (was {STATE_NAMES[was]})")
        else:
            was = spool.retry(qid)
            print(f"{qid}: queued again (was {STATE_NAMES[was]})")
    except FileNotFoundError:
        entry = spool.find(qid)
        if entry is not None and entry.state == "active":
            _err(f"{qid} is being sent right now and can no longer be stopped")
        else:
            _err(
                f"no message {qid} that could be {args.queue_command}led"
                if args.queue_command == "cancel"
                else f"no message {qid} to retry"
            )
        return EX_UNAVAILABLE
    return EX_OK


def cmd_flush(args: argparse.Namespace) -> int:
    from exactmaild.daemon.control import daemon_running, send_control

    cfg = _load(args)
    if not daemon_running(cfg.state_dir):
        _err(
            f"exactmaild is not running (no daemon holds {cfg.state_dir}); "
            "start it with `systemctl start exactmaild`"
        )
        return EX_UNAVAILABLE
    send_control(cfg, "flush")
    print("flush requested: checking the mailbox and sending the queue now (within the limit)")
    return EX_OK


def cmd_status(args: argparse.Namespace) -> int:
    from exactmaild.cli.status import collect, render

    cfg = _load(args)
    st = collect(cfg)
    if args.json:
        print(json.dumps(st, indent=1, sort_keys=True))
    else:
        print(render(st, color=sys.stdout.isatty()))
    return EX_OK


def cmd_reset_mailbox_counter(args: argparse.Namespace) -> int:
    from exactmaild.store.state import StateStore

    cfg = _load(args)
    st = StateStore(cfg.state_dir)
    st.reset_receive()
    st.close()
    print("receive position forgotten: the next check fetches every message still on the server")
    return EX_OK


def cmd_test_connection(args: argparse.Namespace) -> int:
    from exactmaild.auth.credentials import credentials_for
    from exactmaild.send.smtp import test_login

    cfg = _load(args)
    ok = True
    creds = credentials_for(cfg.account)
    if cfg.incoming is not None:
        from exactmaild.receive.receiver import test_connection

        steps = test_connection(cfg, creds)
        for step in steps:
            mark = "ok  " if step.ok else "FAIL"
            print(f"incoming {mark} {step.name}: {step.detail}")
        ok = ok and all(s.ok for s in steps)
    else:
        print("incoming: none configured")
    try:
        print(f"outgoing ok   {test_login(cfg.outgoing, creds)}")
    except ExactmailError as exc:
        print(f"outgoing FAIL {exc}")
        ok = False
    return EX_OK if ok else EX_UNAVAILABLE


def cmd_authorize(args: argparse.Namespace) -> int:
    from exactmaild.cli.authorize import cmd_authorize as run

    return run(args)


# -- parser -------------------------------------------------------------------------------


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
    sub.add_parser("check-config", help="validate the configuration").set_defaults(
        func=cmd_check_config
    )
    sub.add_parser("test-connection", help="log in to both servers, send nothing").set_defaults(
        func=cmd_test_connection
    )
    sub.add_parser(
        "authorize", help="OAuth2: get and store the refresh token (device code flow)"
    ).set_defaults(func=cmd_authorize)
    submit = sub.add_parser("submit", help="queue one RFC 5322 message from FILE or stdin")
    submit.add_argument("file", nargs="?")
    submit.set_defaults(func=cmd_submit)
    sm = sub.add_parser("sendmail", help="sendmail-compatible front", add_help=False)
    sm.add_argument("rest", nargs=argparse.REMAINDER)
    q = sub.add_parser("queue", help="inspect the spool")
    qs = q.add_subparsers(dest="queue_command", metavar="list|show|cancel|retry", required=True)
    ql = qs.add_parser("list", parents=[common])
    ql.add_argument("--json", action="store_true")
    for name in ("show", "cancel", "retry"):
        qs.add_parser(name, parents=[common]).add_argument("id")
    q.set_defaults(func=cmd_queue)
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `sendmail` takes sendmail's own flags, which argparse must not interpret.
    for i, a in enumerate(argv):
        if a == "sendmail":
            if i > 0 and argv[i - 1] in ("-c", "--config"):
                continue
            pre = argv[:i]
            if pre[:1] in (["-c"], ["--config"]) and len(pre) >= 2:
                os.environ["EXACTMAILD_CONFIG"] = pre[1]
            return cmd_sendmail(argv[i + 1 :])
        if not a.startswith("-") and (i == 0 or argv[i - 1] not in ("-c", "--config")):
            break
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # argparse exits 2 on a usage error; sysexits.h says 64 (EX_USAGE).
        return EX_USAGE if exc.code == 2 else int(exc.code or 0)
    if not getattr(args, "func", None):
        parser.print_help()
        return EX_USAGE
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    except BadMessage as exc:
        _err(f"message refused: {exc}")
        return exc.exit_code
    except ExactmailError as exc:
        _err(str(exc))
        return exc.exit_code
    except FileNotFoundError as exc:
        _err(f"{exc.filename or exc}: not found")
        return 66
    except PermissionError as exc:
        _err(f"{exc.filename or exc}: permission denied (run as the exactmaild user or root)")
        return 77
    except OSError as exc:
        # Disk full, read-only filesystem, a directory in the way: say which file.
        where = f"{exc.filename}: " if exc.filename else ""
        _err(f"{where}{exc.strerror or exc}")
        return 74  # EX_IOERR
    except KeyboardInterrupt:
        return 130
    except Exception:
        import traceback

        traceback.print_exc()
        return EX_SOFTWARE
