"""The section walkers: account (and auth), incoming/outgoing, schedule, receive, send.

Each checks one section of the document with a `Checker`, applies the
design's defaults, provider presets and cross-key rules (secrets only over
encryption, one of delay or per_minute, a reserve below the limit ...), and
returns the typed section. The top-level walk that calls them is
`exactmaild.config.load`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, cast
from urllib.parse import urlsplit

from yaml.nodes import MappingNode, ScalarNode

from exactmaild.config import convert as conv
from exactmaild.config.model import (
    ALL_DAYS,
    Account,
    Auth,
    Incoming,
    Receive,
    Schedule,
    Security,
    Send,
    Server,
)
from exactmaild.config.providers import PRESETS
from exactmaild.config.schema import (
    ACCOUNT_KEYS,
    AUTH_KEYS,
    DEFAULT_DAILY_LIMIT,
    DEFAULT_DELAY,
    INCOMING_KEYS,
    MIN_CHECK_INTERVAL,
    OAUTH2_KEYS,
    RECEIVE_KEYS,
    SCHEDULE_KEYS,
    SEND_KEYS,
    SERVER_KEYS,
)
from exactmaild.config.values import default_port, is_loopback, span
from exactmaild.config.yamlnodes import Checker, Map, as_str, is_null
from exactmaild.core.pacing import format_seconds, plan


def account(c: Checker, top: Map) -> Account:
    m = c.mapping(top.get("account"), "account", ACCOUNT_KEYS, line=top.line)
    if top.given("account") and not isinstance(top.get("account"), MappingNode):
        address = ""  # mapping() has said what is wrong; "address: required" would be noise
    elif not top.given("account"):
        c.problem(
            top.key_line("account"),
            "account",
            "required: a mapping with at least `address:` (the practice's email address)",
        )
        address = ""
    else:
        address = c.require(m, "address", conv.address, "the practice's email address") or ""
    display_name = c.get(m, "display_name", as_str, None)
    auth = _auth(c, c.mapping(m.get("auth"), "account.auth", AUTH_KEYS, line=m.line), address)
    return Account(address=address, display_name=display_name, auth=auth)


def _auth(c: Checker, m: Map, address: str) -> Auth:
    method = cast(
        Literal["password", "oauth2", "none"],
        c.get(m, "method", conv.choice("password", "oauth2", "none"), "password"),
    )
    username = c.get(m, "username", as_str, address)
    password_file = c.get(m, "password_file", c.path, None)
    if method != "password" and m.given("password_file"):
        c.problem(
            m.key_line("password_file"),
            m.sub("password_file"),
            f"only used with method: password (method is {method}); remove it",
        )
        password_file = None
    if method != "oauth2":
        for key in OAUTH2_KEYS:
            if m.given(key):
                c.problem(
                    m.key_line(key),
                    m.sub(key),
                    f"only used with method: oauth2 (method is {method}); "
                    "set `method: oauth2` or remove it",
                )
        if method == "password" and password_file is None:
            c.warn(
                "account.auth.password_file is not set: the password must come from "
                "$CREDENTIALS_DIRECTORY/password (systemd LoadCredential=password:/path) "
                "at run time"
            )
        return Auth(method=method, username=username, password_file=password_file)

    provider = cast(
        Literal["microsoft365", "google", "custom"],
        c.get(m, "provider", conv.choice("microsoft365", "google", "custom"), "custom"),
    )
    preset = PRESETS.get(provider)
    token_url = c.get(m, "token_url", conv.url, None)
    if token_url is None and not m.given("token_url"):
        if preset is not None:
            token_url = preset.token_url
        else:
            c.problem(
                m.line,
                m.sub("token_url"),
                "required with provider custom (or set provider: microsoft365 or google)",
            )
    device_url = c.get(m, "device_authorization_url", conv.url, None)
    if device_url is None and not m.given("device_authorization_url") and preset is not None:
        device_url = preset.device_authorization_url
    for key, url in (("token_url", token_url), ("device_authorization_url", device_url)):
        if url is not None and urlsplit(url).scheme == "http":
            host = urlsplit(url).hostname or ""
            if not is_loopback(host):
                c.problem(
                    m.key_line(key),
                    m.sub(key),
                    f"http:// would send the client secret and refresh token unencrypted to "
                    f"{host}; plain http is only allowed to this machine (localhost, 127.0.0.1, "
                    "::1): use https://",
                )
    client_id = c.require(m, "client_id", as_str, "the OAuth2 application (client) id")
    scope = c.get(m, "scope", conv.scope, preset.scope if preset else None)
    refresh_token_file = c.get(m, "refresh_token_file", c.path, None)
    if refresh_token_file is None:
        c.warn(
            "account.auth.refresh_token_file is not set: the refresh token must come from "
            "$CREDENTIALS_DIRECTORY/refresh_token, and a rotated token cannot be saved"
        )
    return Auth(
        method="oauth2",
        username=username,
        provider=provider,
        token_url=token_url,
        client_id=client_id,
        client_secret_file=c.get(m, "client_secret_file", c.path, None),
        refresh_token_file=refresh_token_file,
        scope=scope,
        device_authorization_url=device_url,
    )


def server(
    c: Checker,
    top: Map,
    name: Literal["incoming", "outgoing"],
    auth: Auth,
) -> Server | Incoming | None:
    node = top.get(name)
    preset = PRESETS.get(auth.provider or "") if auth.method == "oauth2" else None
    if (
        name == "incoming"
        and isinstance(node, ScalarNode)
        and not is_null(node)
        and str(node.value).strip().lower() in ("none", "false", "off", "no")
    ):
        return None
    if (node is None or is_null(node)) and preset is None:
        what = (
            "the mailbox server (protocol, host, ...), or `incoming: none` "
            "if this account only sends"
            if name == "incoming"
            else "the SMTP server (host, port, security)"
        )
        c.problem(top.key_line(name), name, f"required: {what}")
        return None
    keys = INCOMING_KEYS if name == "incoming" else SERVER_KEYS
    m = c.mapping(node, name, keys, line=top.line)
    if node is not None and not is_null(node) and not isinstance(node, MappingNode):
        return None  # already reported by mapping()

    protocol = "smtp"
    if name == "incoming":
        protocol = c.get(m, "protocol", conv.choice("imap", "pop3"), "imap")
    preset_host: tuple[str, Security] | None = None
    if preset is not None:
        preset_host = {"smtp": preset.smtp, "imap": preset.imap, "pop3": preset.pop3}[protocol]

    if m.given("host"):
        host = c.get(m, "host", conv.host, "")
        default_security: str = "tls" if name == "incoming" else "starttls"
    elif preset_host is not None:
        # The preset's encryption belongs to the preset's host: only used
        # together, so an explicit host never inherits it by accident.
        host, default_security = preset_host
    else:
        c.problem(m.key_line("host"), m.sub("host"), "required: the server's host name")
        host, default_security = "", "tls"
    security = cast(
        Security, c.get(m, "security", conv.choice("tls", "starttls", "none"), default_security)
    )
    port = c.get(m, "port", conv.port, default_port(protocol, security))
    tls_ca_file = c.get(m, "tls_ca_file", c.path, None)

    if security == "none" and host:
        if auth.method != "none" and not is_loopback(host):
            c.problem(
                m.key_line("security"),
                m.sub("security"),
                f"security: none would send the login for {auth.username or 'the account'} "
                f"unencrypted to {host}; unencrypted logins are only allowed to a relay on this "
                "machine (localhost, 127.0.0.1, ::1): use security: tls or starttls",
            )
        if tls_ca_file is not None:
            c.warn(f"{name}.tls_ca_file is ignored with security: none")
    if tls_ca_file is not None and not tls_ca_file.exists():
        c.warn(f"{name}.tls_ca_file {tls_ca_file} does not exist (yet)")

    if name == "outgoing":
        return Server(host=host, port=port, security=security, tls_ca_file=tls_ca_file)
    if protocol == "pop3" and m.given("folder"):
        c.warn("incoming.folder is ignored with protocol: pop3 (POP3 has only the inbox)")
    return Incoming(
        host=host,
        port=port,
        security=security,
        tls_ca_file=tls_ca_file,
        protocol=cast(Literal["imap", "pop3"], protocol),
        folder=c.get(m, "folder", as_str, "INBOX"),
        leave_on_server=c.get(m, "leave_on_server", conv.as_bool, True),
    )


def schedule(c: Checker, top: Map, receiving: bool) -> Schedule:
    m = c.mapping(top.get("schedule"), "schedule", SCHEDULE_KEYS, line=top.line)
    days = c.items(m, "days", conv.day, ALL_DAYS)
    if days is not None and not days:
        c.problem(m.key_line("days"), m.sub("days"), "empty: list at least one day, or omit it")
    days = tuple(d for d in ALL_DAYS if d in (days or ALL_DAYS))
    window = c.get(m, "window", conv.window, None)

    every: float | None = 300.0
    node = m.get("every")
    if node is not None:
        if is_null(node) or (
            isinstance(node, ScalarNode)
            and str(node.value).strip().lower() in ("off", "false", "none")
        ):
            every = None
        else:
            every = c.get(m, "every", conv.positive_duration, 300.0)
    at = tuple(sorted(set(c.items(m, "at", conv.hhmm, ()) or ())))
    if every is None and not at and receiving:
        c.problem(
            m.key_line("every"),
            m.sub("every"),
            "with every: off the mailbox is never checked: give every: (e.g. 5m) or at: times",
        )
    if every is not None and every < MIN_CHECK_INTERVAL and receiving:
        c.warn(
            f"schedule.every is {format_seconds(every)}: providers may object to checks more "
            "often than once a minute (throttling or blocking the account)"
        )
    return Schedule(days=days, window=window, every=every, at=at)


def receive(c: Checker, top: Map, incoming: Incoming | None, state_dir: Path) -> Receive | None:
    m = c.mapping(top.get("receive"), "receive", RECEIVE_KEYS, line=top.line)
    maildir = c.get(m, "maildir", c.path, state_dir / "inbox")
    attachments = cast(
        Literal["keep", "strip", "extract"],
        c.get(m, "attachments", conv.choice("keep", "strip", "extract"), "keep"),
    )
    attachments_dir = c.get(m, "attachments_dir", c.path, None)
    if attachments == "extract" and attachments_dir is None and not m.given("attachments_dir"):
        c.problem(
            m.key_line("attachments"),
            m.sub("attachments_dir"),
            "required with attachments: extract (the directory attachments are saved to)",
        )
    sizes: dict[str, int] = {}
    if m.given("max_attachment_size"):
        sizes["max_attachment_size"] = c.get(m, "max_attachment_size", conv.positive_size, 1)
    if incoming is None:
        if m.entries:
            c.warn("the receive: section is ignored with incoming: none")
        return None
    return Receive(
        maildir=maildir, attachments=attachments, attachments_dir=attachments_dir, **sizes
    )


def send(c: Checker, top: Map, schedule: Schedule, incoming: Incoming | None) -> Send:
    m = c.mapping(top.get("send"), "send", SEND_KEYS, line=top.line)
    immediately = c.get(m, "immediately", conv.as_bool, False)
    daily_limit = c.get(m, "daily_limit", conv.positive_int, None)
    reserve = c.get(m, "reserve", conv.as_int, 0)
    limit_ok = daily_limit is not None or not m.given("daily_limit")
    limit = daily_limit or DEFAULT_DAILY_LIMIT
    reserve_ok = True
    if reserve < 0 or (limit_ok and reserve >= limit):
        c.problem(
            m.key_line("reserve"),
            m.sub("reserve"),
            f"must be at least 0 and below daily_limit ({limit}), got {reserve}",
        )
        reserve_ok = False
    hours = schedule.window.hours if schedule.window else 24.0

    delay = DEFAULT_DELAY
    source: Literal["delay", "per_minute", "auto"] = "delay"
    if m.given("delay") and m.given("per_minute"):
        c.problem(
            m.key_line("per_minute"),
            m.sub("per_minute"),
            "give either delay or per_minute, not both",
        )
    elif m.given("per_minute"):
        per_minute = c.get(m, "per_minute", conv.positive_int, None)
        if per_minute is not None:
            delay, source = 60.0 / per_minute, "per_minute"
    elif m.given("delay"):
        node = m.get("delay")
        assert node is not None
        if isinstance(node, ScalarNode) and str(node.value).strip().lower() == "auto":
            source = "auto"
            if limit_ok and reserve_ok:
                delay = plan(limit, hours, reserve).delay
        else:
            delay = c.get(m, "delay", conv.duration, DEFAULT_DELAY)

    retry_intervals = c.items(m, "retry_intervals", conv.positive_duration, Send.retry_intervals)
    if retry_intervals is not None and not retry_intervals:
        c.problem(
            m.key_line("retry_intervals"),
            m.sub("retry_intervals"),
            "empty: give at least one interval, e.g. [1m, 5m, 15m, 1h]",
        )
    account_pause = c.items(m, "account_pause", conv.positive_duration, Send.account_pause)
    if account_pause is not None and not account_pause:
        c.problem(
            m.key_line("account_pause"),
            m.sub("account_pause"),
            "empty: give at least one pause, e.g. [1m, 5m, 30m]",
        )
    count_sent_folder = c.get(m, "count_sent_folder", as_str, None)
    if count_sent_folder is not None and (incoming is None or incoming.protocol != "imap"):
        c.warn(
            "send.count_sent_folder needs an imap incoming server: mail sent from webmail "
            "will not be counted against the limit"
        )
    signature = c.get(m, "signature", c.path, None)
    if signature is not None and not signature.is_file():
        c.warn(f"send.signature {signature} does not exist (yet): sending will fail without it")

    if immediately and (m.given("delay") or m.given("per_minute")):
        c.warn("send.delay / send.per_minute are ignored while send.immediately is true")
    # Only a delay the user chose: the built-in 60 s default fits the design's
    # 500 a day over 8 h, and warning about a value nobody wrote is noise.
    explicit = m.given("delay") or m.given("per_minute")
    if not immediately and explicit and limit_ok and reserve_ok:
        _warn_fast(c, delay, limit, reserve, hours, schedule)

    return Send(
        immediately=immediately,
        delay=delay,
        delay_source=source,
        daily_limit=limit,
        limit_window=cast(
            Literal["calendar_day", "rolling_24h"],
            c.get(m, "limit_window", conv.choice("calendar_day", "rolling_24h"), "calendar_day"),
        ),
        limit_counts=cast(
            Literal["messages", "recipients"],
            c.get(m, "limit_counts", conv.choice("messages", "recipients"), "messages"),
        ),
        reserve=reserve,
        retry_intervals=retry_intervals or Send.retry_intervals,
        give_up_after=c.get(m, "give_up_after", conv.positive_duration, Send.give_up_after),
        on_unknown_outcome=cast(
            Literal["retry", "hold"],
            c.get(m, "on_unknown_outcome", conv.choice("retry", "hold"), "retry"),
        ),
        account_pause=account_pause or Send.account_pause,
        count_sent_folder=count_sent_folder,
        signature=signature,
    )


def _warn_fast(
    c: Checker, delay: float, limit: int, reserve: int, hours: float, schedule: Schedule
) -> None:
    """Warn when the pacing would spend the allowance before the sending window ends.

    Not an error: the hard cap still holds; but the practice would find its
    mail stuck in the afternoon, which is what the delay exists to prevent.
    """
    allowance = limit - reserve
    window_seconds = hours * 3600
    # Sends that fit in the window at this pacing. `plan()` rounds so that its
    # own delay never exceeds the allowance, so `delay: auto` never warns.
    fits = math.inf if delay <= 0 else math.floor(window_seconds / delay)
    if fits <= allowance:
        return
    where = f"the {hours:g} h sending window {schedule.window}" if schedule.window else "the day"
    c.warn(
        f"send: at {format_seconds(delay)} between sends, the {allowance} allowed sends "
        f"(daily_limit {limit} - reserve {reserve}) are used up after "
        f"{span(allowance * delay)} of {where}; then the hard cap stops sending until the "
        f"limit window resets. The safe steady rate is {plan(limit, hours, reserve).describe()} "
        "(delay: auto)"
    )
