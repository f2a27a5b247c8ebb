"""The human summary of a valid configuration, printed by `exactmaild check-config`.

It lives with the command line rather than in exactmaild.config because it
says where each secret will be read from, which is exactmaild.auth's business.
"""

from __future__ import annotations

from exactmaild.auth import secrets
from exactmaild.config.model import ALL_DAYS, Config
from exactmaild.config.values import format_size, span
from exactmaild.core.pacing import describe_rate, format_seconds, plan


def summary(cfg: Config) -> str:
    """What `exactmaild check-config` prints for a valid configuration.

    Everything a sysadmin needs to confirm the daemon will do what they
    meant, above all the effective pacing; never a secret, only where each
    secret will be read from.
    """
    s = cfg.send
    lines = [f"configuration {cfg.source}: OK", ""]

    def row(label: str, text: str) -> None:
        lines.append(f"  {label + ':':<15} {text}")

    row("timezone", cfg.timezone)
    account = cfg.account.address
    if cfg.account.display_name:
        account = f"{cfg.account.display_name} <{account}>"
    row("account", account)
    auth = cfg.account.auth
    if auth.method == "password":
        row("login", f"password for {auth.username}")
        row("password from", secrets.secret_source(auth.password_file, secrets.PASSWORD))
    elif auth.method == "oauth2":
        row("login", f"OAuth2 (XOAUTH2) for {auth.username}, provider {auth.provider}")
        row("token url", auth.token_url or "-")
        row("client id", auth.client_id or "-")
        row("scope", auth.scope or "(none)")
        row(
            "refresh token",
            secrets.secret_source(auth.refresh_token_file, secrets.REFRESH_TOKEN),
        )
        if auth.client_secret_file is not None:
            row(
                "client secret",
                secrets.secret_source(auth.client_secret_file, secrets.CLIENT_SECRET),
            )
    else:
        row("login", "none (a relay that needs no login)")

    if cfg.incoming is None:
        row("incoming", "none (this account only sends)")
    else:
        i = cfg.incoming
        text = f"{i.protocol} {i.host}:{i.port}, {i.security}"
        if i.protocol == "imap":
            text += f", folder {i.folder}"
        if i.idle:
            text += ", IDLE inside the window"
        text += (
            ", mail left on the server" if i.leave_on_server else ", mail deleted after delivery"
        )
        row("incoming", text)
    o = cfg.outgoing
    row("outgoing", f"smtp {o.host}:{o.port}, {o.security}")

    sc = cfg.schedule
    days = "every day" if sc.days == ALL_DAYS else ", ".join(sc.days)
    row("days", days)
    row("window", str(sc.window) if sc.window else "all day")
    if cfg.incoming is not None:
        checks = f"every {span(sc.every)}" if sc.every is not None else "no periodic checks"
        if sc.window and sc.every is not None:
            checks += f" within {sc.window}"
        if sc.at:
            checks += "; at " + ", ".join(f"{t:%H:%M}" for t in sc.at)
        row("mail checks", checks)

    hours = sc.window.hours if sc.window else 24.0
    per = "calendar day" if s.limit_window == "calendar_day" else "rolling 24 h"
    if s.immediately:
        row(
            "pacing",
            "immediately: no delay and no sending window; a queued message cannot be "
            "cancelled before it goes",
        )
    else:
        how = {"delay": "send.delay", "per_minute": "send.per_minute", "auto": "delay: auto"}
        row(
            "pacing",
            f"{format_seconds(s.delay)} between sends = {describe_rate(s.delay)} "
            f"(from {how[s.delay_source]})",
        )
    if s.max_per_minute:
        ceiling = f"at most {s.max_per_minute} a minute, whatever the pacing (flush included)"
        if s.immediately or s.delay < s.min_gap:
            ceiling += f": one every {format_seconds(s.min_gap)} at most"
        row("rate ceiling", ceiling)
    row("daily limit", f"{s.daily_limit} {s.limit_counts} per {per}")
    row("reserve", f"{s.reserve} (kept back for mail sent elsewhere)")
    if s.urgent_reserve or s.urgent_any_time:
        anytime = ", and it may go outside the window" if s.urgent_any_time else ""
        row("urgent", f"the last {s.urgent_reserve} sends kept for urgent mail{anytime}")
    row("allowance", f"{s.allowance} sends per {per}, a hard cap")
    row("safe rate", plan(s.daily_limit, hours, s.reserve).describe())
    row(
        "retries",
        ", ".join(span(r) for r in s.retry_intervals)
        + f" (the last repeats); give up after {span(s.give_up_after)}; "
        f"unknown outcome: {s.on_unknown_outcome}",
    )
    row(
        "account pause",
        ", ".join(span(r) for r in s.account_pause)
        + " (login refused or quota reached: the whole queue waits; the last repeats)",
    )
    lines += _limits(cfg)
    if s.count_sent_folder:
        row("sent folder", f"{s.count_sent_folder!r} counted against the limit")
    row("signature", str(s.signature) if s.signature else "none")

    row("spool", f"{cfg.spool.dir} (messages up to {format_size(cfg.spool.max_message_size)})")
    row("state dir", str(cfg.state_dir))
    if cfg.receive is not None:
        r = cfg.receive
        text = f"{r.maildir}, attachments {r.attachments}"
        if r.attachments == "extract":
            text += f" to {r.attachments_dir}"
        text += f" (up to {format_size(r.max_attachment_size)})"
        row("maildir", text)
    m = cfg.metrics
    if m.host is None:
        row("metrics", "off")
    else:
        host = f"[{m.host}]" if ":" in m.host else m.host
        row("metrics", f"http://{host}:{m.port}/metrics")
    row(
        "log",
        f"{cfg.log.format}, level {cfg.log.level}"
        + (f", to {cfg.log.file}" if cfg.log.file else ""),
    )

    if cfg.warnings:
        lines += ["", "warnings:"]
        lines += [f"  - {w}" for w in cfg.warnings]
    return "\n".join(lines)


def _limits(cfg: Config) -> list[str]:
    """The limit keys, each with its value and where that came from (the
    file and line, the provider preset, or the built-in default)."""
    values: dict[str, object] = {
        "send.daily_limit": cfg.send.daily_limit,
        "send.limit_window": cfg.send.limit_window,
        "send.limit_counts": cfg.send.limit_counts,
        "send.reserve": cfg.send.reserve,
        "send.max_per_minute": cfg.send.max_per_minute or "none",
        "outgoing.max_recipients": cfg.outgoing.max_recipients or "none",
    }
    out = [f"  {'limits:':<15} (value, and where it comes from)"]
    for key, origin in cfg.origins:
        out.append(f"    {key:<24} {values[key]!s:<13} {origin}")
    return out
