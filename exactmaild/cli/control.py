"""The commands that run the daemon or act on its state: run, flush, status, reset-mailbox-counter.

The daemon, state and status modules are imported inside each command: they
are large, and the other commands (above all the sendmail front) never need
them.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from exactmaild.cli.paths import load_config
from exactmaild.core.errors import EX_OK, ExactmailError, NotAvailable

if TYPE_CHECKING:
    from exactmaild.config.model import Config


def cmd_run(args: argparse.Namespace) -> int:
    from exactmaild.daemon import logs
    from exactmaild.daemon.service import Service

    cfg = load_config(args.config)
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
        # Logged as an event for the journal and the log file; the command
        # line's report then prints it and exits with its code.
        logs.get().error("start_failed", error=str(exc))
        raise
    return service.run()


def cmd_flush(args: argparse.Namespace) -> int:
    from exactmaild.daemon.control import daemon_running, send_control

    cfg = load_config(args.config)
    if not daemon_running(cfg.state_dir):
        raise NotAvailable(
            f"exactmaild is not running (no daemon holds {cfg.state_dir}); "
            "start it with `systemctl start exactmaild`"
        )
    from exactmaild.cli.status import flush_outlook

    outlook = flush_outlook(cfg)  # before the daemon acts on it
    send_control(cfg, "flush")
    print(f"flush requested: checking the mailbox; {outlook}")
    return EX_OK


def cmd_status(args: argparse.Namespace) -> int:
    from exactmaild.cli.status import UNKNOWN, collect, exit_code, render, to_json

    try:
        cfg = load_config(args.config)
        st = collect(cfg)
    except (ExactmailError, OSError, sqlite3.Error) as exc:
        # Monitoring reads 3 as UNKNOWN: nothing could be told.
        print(f"exactmaild UNKNOWN: {exc}", file=sys.stderr)
        return UNKNOWN
    if args.json:
        # For scripts: the answer is the JSON (its `state` says OK..CRITICAL).
        print(to_json(st))
        return EX_OK
    print(render(st, color=sys.stdout.isatty()))
    return exit_code(st)


def cmd_reset_mailbox_counter(args: argparse.Namespace) -> int:
    from exactmaild.store.state import StateStore

    cfg = load_config(args.config)
    st = StateStore(cfg.state_dir)
    st.reset_receive()
    st.close()
    print("receive position forgotten: the next check fetches every message still on the server")
    return EX_OK
