"""The commands that run the daemon or act on its state: run, flush, status, reset-mailbox-counter.

The daemon, state and status modules are imported inside each command: they
are large, and the other commands (above all the sendmail front) never need
them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from exactmaild.cli.paths import how_to, load_config, load_running
from exactmaild.core.errors import (
    EX_OK,
    EX_SOFTWARE,
    ExactmailError,
    NoPermission,
    NotAvailable,
    from_os_error,
)

if TYPE_CHECKING:
    from exactmaild.config.model import Config
    from exactmaild.daemon.detach import StartReport


def cmd_run(args: argparse.Namespace) -> int:
    from exactmaild.daemon import logs
    from exactmaild.daemon.service import Service

    cfg = load_config(args.config)
    adjust = None
    report: StartReport | None = None
    if args.daemon:
        from dataclasses import replace

        from exactmaild.daemon.detach import detach_and_wait

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
        if args.pidfile is None:
            # The default pidfile lives in the state directory, which the
            # daemon would create anyway: on a first start it is not there yet.
            cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        pidfile = Path(args.pidfile or cfg.state_dir / "exactmaild.pid")
        # The command line waits for the daemon's word and exits with its
        # code: a daemon that cannot start is a failure here, not a silent 0.
        detached = detach_and_wait(pidfile, working_dir=Path("/"), log_hint=f"; see {cfg.log.file}")
        if isinstance(detached, int):
            print(f"exactmaild started (pid {detached}); log: {cfg.log.file}")
            return EX_OK
        report = detached
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
        if report is not None:
            report.failed(exc.exit_code, str(exc))
        raise
    except BaseException as exc:
        if report is not None:
            report.failed(EX_SOFTWARE, f"failed to start: {exc!r}; see {cfg.log.file}")
        raise
    if report is not None:
        report.ready()
    return service.run()


def cmd_flush(args: argparse.Namespace) -> int:
    from exactmaild.daemon.control import daemon_running, send_control

    cfg = load_running(args.config)
    if not daemon_running(cfg.state_dir):
        raise NotAvailable(
            f"exactmaild is not running (no daemon holds {cfg.state_dir}); "
            f"start it with {how_to('start', cfg.state_dir)}"
        )
    from exactmaild.cli.status import flush_outlook

    outlook = flush_outlook(cfg)  # before the daemon acts on it
    send_control(cfg, "flush")
    print(f"flush requested: checking the mailbox; {outlook}")
    return EX_OK


def cmd_status(args: argparse.Namespace) -> int:
    import sqlite3  # here, not above: submit and sendmail import this module too

    from exactmaild.cli.status import UNKNOWN, collect, exit_code, render, to_json

    try:
        cfg = load_running(args.config)
        st = collect(cfg)
    except PermissionError as exc:
        # Not allowed is 77 from every front, with the fix (monitoring shows
        # an exit code outside 0-3 as UNKNOWN too).
        raise from_os_error(exc, "cannot read exactmaild's state") from None
    except NoPermission:
        raise
    except (ExactmailError, OSError, sqlite3.Error) as exc:
        # Monitoring reads 3 as UNKNOWN: nothing could be told.
        print(f"exactmaild UNKNOWN: {exc}", file=sys.stderr)
        return UNKNOWN
    if args.json:
        # For scripts: the answer is the JSON (its `state` says OK..CRITICAL).
        print(to_json(st))
        return EX_OK
    # Colours on a terminal only, and never when NO_COLOR is set (no-color.org).
    print(render(st, color=sys.stdout.isatty() and not os.environ.get("NO_COLOR")))
    return exit_code(st)


def cmd_reset_mailbox_counter(args: argparse.Namespace) -> int:
    from exactmaild.store.state import StateStore

    cfg = load_config(args.config)
    st = StateStore(cfg.state_dir)
    st.reset_receive()
    st.close()
    print("receive position forgotten: the next check fetches every message still on the server")
    return EX_OK
