"""The commands that check a setup before it runs: check-config, test-connection, plan.

None of them changes anything: check-config validates the file, then checks
what `run` checks before it starts (exactmaild.daemon.preflight: the secret
files, the directories, as the service's user) and prints what it means;
test-connection logs in to both servers and sends nothing; plan does the
pacing arithmetic for a daily limit.
"""

from __future__ import annotations

import argparse

from exactmaild.cli.paths import load_config
from exactmaild.core.errors import (
    EX_OK,
    EX_UNAVAILABLE,
    ConfigError,
    ExactmailError,
    UsageError,
)


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
    from exactmaild.auth.credentials import credentials_for
    from exactmaild.send.smtp import test_login

    cfg = load_config(args.config)
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
    # Each step has said what failed and where; the status only sums it up.
    return EX_OK if ok else EX_UNAVAILABLE


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
