"""The commands that check a setup before it runs: check-config, test-connection, plan.

None of them changes anything: check-config validates the file, then checks
what `run` checks before it starts (exactmaild.daemon.preflight: the secret
files, the directories, as the service's user) and prints what it means;
test-connection logs in to both servers and sends nothing (the outgoing
server only while the daemon does not run: see `cmd_test_connection`); plan does the
pacing arithmetic for a daily limit.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from exactmaild.cli.paths import load_config
from exactmaild.core.errors import (
    EX_OK,
    EX_UNAVAILABLE,
    ConfigError,
    ExactmailError,
    UsageError,
)

if TYPE_CHECKING:
    from exactmaild.config.model import Config


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate the file, then (unless --syntax) what `run` checks before it
    starts, as the service's user: every problem is one located line, exit 78."""
    cfg = load_config(args.config)
    from exactmaild.cli.summary import summary

    checked = "the file only (--syntax): secrets and directories not checked"
    if not getattr(args, "syntax", False):
        from exactmaild.daemon.preflight import problems, service_user

        try:
            user = service_user(getattr(args, "user", None))
        except LookupError as exc:
            raise UsageError(f"check-config --user: {exc}") from None
        found = problems(cfg, user=user)
        if found:
            raise ConfigError(found)
        checked = f"secrets and directories as user {user.name} ({user.why})"
    print(summary(cfg))
    print(f"checked: {checked}")
    return EX_OK


def cmd_test_connection(args: argparse.Namespace) -> int:
    """Log in to both servers and send nothing: one line a step, `incoming`/`outgoing`
    `ok`/`FAIL`/`skip`, the step's name, and what it found or what to change."""
    from exactmaild.auth.credentials import credentials_for

    cfg = load_config(args.config)
    ok = True
    creds = credentials_for(cfg.account)
    if cfg.incoming is not None:
        from exactmaild.receive.diagnose import explain
        from exactmaild.receive.receiver import test_connection

        steps = explain(cfg.incoming, test_connection(cfg, creds))
        for step in steps:
            _line("incoming", step.ok, step.name, step.detail)
        ok = ok and all(s.ok for s in steps)
    else:
        print("incoming: none configured")
    pid = _daemon_pid(cfg)
    if pid is not None and not getattr(args, "force", False):
        # One SMTP connection per account: a provider that allows one (or a
        # few, shared with the practice's phones) would refuse a second, and
        # every login counts against its login-rate limits.
        print(
            f"outgoing skip connect: the daemon (pid {pid}) is running and sends over its "
            f"own connection to {cfg.outgoing.host}:{cfg.outgoing.port}; no second connection "
            "was opened. `exactmaild status` says how sending goes; stop the daemon, or "
            "add --force, to test the login here"
        )
        return EX_OK if ok else EX_UNAVAILABLE
    from exactmaild.send.probe import test_outgoing

    for out in test_outgoing(cfg.outgoing, creds, daemon_pid=pid):
        _line("outgoing", out.ok, out.name, out.detail)
        ok = ok and out.ok
    # Each step has said what failed and where; the status only sums it up.
    return EX_OK if ok else EX_UNAVAILABLE


def _line(side: str, ok: bool, step: str, detail: str) -> None:
    print(f"{side} {'ok  ' if ok else 'FAIL'} {step}: {detail}")


def _daemon_pid(cfg: Config) -> int | None:
    """The running daemon's pid (0 when it runs but its pid is not recorded), else None."""
    from exactmaild.daemon.control import daemon_running

    try:
        running = daemon_running(cfg.state_dir)
    except PermissionError:
        return None  # cannot know; the outgoing test then says what the server answers
    if not running:
        return None
    from exactmaild.store.state import StateStore

    try:
        state = StateStore(cfg.state_dir, create=False)
    except (OSError, ExactmailError):
        return 0
    try:
        pid = state.get_all().get("pid")
    finally:
        state.close()
    return int(pid) if pid and pid.isdigit() else 0


def cmd_plan(args: argparse.Namespace) -> int:
    from exactmaild.config.load import parse_window
    from exactmaild.core.pacing import describe_rate, plan

    if args.window:
        try:
            hours = parse_window(args.window).hours
        except ValueError as exc:
            raise UsageError(f"--window: {exc}") from None
    else:
        hours = args.hours if args.hours is not None else 8.0
    try:
        p = plan(args.daily_limit, hours, args.reserve)
    except ValueError as exc:
        raise UsageError(f"plan: {exc}") from None
    print(f"daily limit {p.daily_limit}, reserve {p.reserve}, over {p.hours:g} h:")
    if p.per_minute >= 1:
        print(f"  {p.per_minute} email{'s' if p.per_minute != 1 else ''} a minute")
    else:
        print(f"  {describe_rate(p.delay)} (less than 1 email a minute)")
    print(f"  delay: {p.delay:g}s between sends")
    print(
        f"  config: send: {{delay: {p.delay:g}s, daily_limit: {p.daily_limit}, "
        f"reserve: {p.reserve}}}  (or delay: auto)"
    )
    return EX_OK
