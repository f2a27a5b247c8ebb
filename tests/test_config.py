"""Tests for exactmaild.config.load: defaults, every rule, line numbers, hostile input."""

from __future__ import annotations

import datetime as dt
import os
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exactmaild.cli.summary import summary
from exactmaild.config import load as configload
from exactmaild.config.load import (
    load,
    parse,
    parse_duration,
    parse_hhmm,
    parse_size,
    parse_window,
    system_timezone,
)
from exactmaild.config.model import ALL_DAYS, Config, Window
from exactmaild.core.errors import EX_CONFIG, ConfigError

SRC = Path("/etc/exactmaild/exactmaild.yaml")

# The smallest valid configuration: 8 lines, so a fragment appended below
# starts on line 9.
BASE = """\
timezone: UTC
account:
  address: reception@practice.example
  auth:
    password_file: /etc/exactmaild/password
incoming:
  host: imap.practice.example
outgoing: {host: smtp.practice.example}
"""
BASE_LINES = BASE.count("\n")


def cfg(extra: str = "", base: str = BASE, source: Path = SRC) -> Config:
    return parse(base + textwrap.dedent(extra), source)


def problems(text: str, source: Path = SRC) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(textwrap.dedent(text), source)
    assert info.value.problems, "ConfigError without problems"
    return [str(p) for p in info.value.problems]


def one_problem(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


# ---------------------------------------------------------------- the design's example

DESIGN_EXAMPLE = """\
timezone: Europe/London
account:
  address: reception@practice.example
  display_name: Smiles Dental
  auth:
    method: password
    username: reception@practice.example
    password_file: /etc/exactmaild/password
incoming:
  protocol: imap
  host: imap.practice.example
  port: 993
  security: tls
  folder: INBOX
  leave_on_server: true
outgoing:
  host: smtp.practice.example
  port: 587
  security: starttls
schedule:
  days: [mon, tue, wed, thu, fri]
  window: "08:00-17:00"
  every: 5m
  at: ["07:30", "12:00"]
receive:
  maildir: /var/lib/exactmaild/inbox
  attachments: keep
send:
  immediately: false
  delay: 60s
  daily_limit: 500
  limit_window: calendar_day
  limit_counts: messages
  reserve: 0
  retry_intervals: [1m, 5m, 15m, 1h]
  give_up_after: 4d
  on_unknown_outcome: retry
  count_sent_folder: "Sent Items"
  signature: /etc/exactmaild/signature.txt
spool:
  dir: /var/spool/exactmaild
  max_message_size: 25MB
state_dir: /var/lib/exactmaild
metrics:
  listen: 127.0.0.1:9725
log:
  format: auto
  level: info
"""


def test_design_example_loads_with_every_value() -> None:
    c = parse(DESIGN_EXAMPLE, SRC)
    assert c.timezone == "Europe/London"
    assert c.account.address == "reception@practice.example"
    assert c.account.display_name == "Smiles Dental"
    assert c.account.auth.method == "password"
    assert c.account.auth.password_file == Path("/etc/exactmaild/password")
    assert c.incoming is not None
    assert (c.incoming.protocol, c.incoming.host, c.incoming.port) == (
        "imap",
        "imap.practice.example",
        993,
    )
    assert (c.outgoing.host, c.outgoing.port, c.outgoing.security) == (
        "smtp.practice.example",
        587,
        "starttls",
    )
    assert c.schedule.days == ("mon", "tue", "wed", "thu", "fri")
    assert c.schedule.window == Window(dt.time(8), dt.time(17))
    assert c.schedule.every == 300.0
    assert c.schedule.at == (dt.time(7, 30), dt.time(12, 0))
    assert c.receive is not None and c.receive.maildir == Path("/var/lib/exactmaild/inbox")
    assert c.send.delay == 60.0 and c.send.delay_source == "delay"
    assert c.send.retry_intervals == (60.0, 300.0, 900.0, 3600.0)
    assert c.send.give_up_after == 4 * 86400
    assert c.send.count_sent_folder == "Sent Items"
    assert c.spool.max_message_size == 25_000_000
    assert c.metrics.host == "127.0.0.1" and c.metrics.port == 9725
    assert c.source == SRC


def test_account_pause_is_a_list_of_durations_with_a_default() -> None:
    assert cfg().send.account_pause == (60.0, 120.0, 240.0, 480.0, 960.0, 1800.0)
    c = parse(BASE + "send: {account_pause: [500ms, 30s, 5m]}\n", SRC)
    assert c.send.account_pause == (0.5, 30.0, 300.0)
    assert parse(BASE + "send: {account_pause: 2m}\n", SRC).send.account_pause == (120.0,)


def test_minimal_config_gets_the_documented_defaults() -> None:
    c = cfg()
    assert c.account.auth.username == "reception@practice.example"
    assert c.incoming is not None
    assert (c.incoming.security, c.incoming.port, c.incoming.folder) == ("tls", 993, "INBOX")
    assert (c.outgoing.security, c.outgoing.port) == ("starttls", 587)
    assert c.schedule.days == ALL_DAYS and c.schedule.window is None
    assert c.schedule.every == 300.0 and c.schedule.at == ()
    assert c.send.delay == 60.0 and c.send.daily_limit == 500 and c.send.reserve == 0
    assert c.spool.dir == Path("/var/spool/exactmaild")
    assert c.state_dir == Path("/var/lib/exactmaild")
    assert c.receive is not None and c.receive.maildir == Path("/var/lib/exactmaild/inbox")
    assert c.metrics.host == "127.0.0.1" and c.metrics.port == 9725
    assert (c.log.format, c.log.level, c.log.file) == ("auto", "info", None)


# ---------------------------------------------------------------- the brief's example


def test_misspelt_key_and_bad_duration_both_reported_with_lines() -> None:
    found = problems(
        BASE
        + textwrap.dedent(
            """\
            send:
              dailly_limit: 5
              delay: 5 parsecs
            """
        )
    )
    assert found == [
        f"{SRC}:{BASE_LINES + 2}: send.dailly_limit: unknown key 'dailly_limit' under 'send'; "
        "did you mean 'daily_limit'?",
        f"{SRC}:{BASE_LINES + 3}: send.delay: '5 parsecs' is not a duration: unknown unit "
        "'parsecs'; use a number of seconds or a number with a unit: 500ms, 90s, 5m, 1h, 4d",
    ]


def test_error_exit_code_is_ex_config() -> None:
    with pytest.raises(ConfigError) as info:
        parse("send: {daily_limit: x}\n", SRC)
    assert info.value.exit_code == EX_CONFIG == 78


# ---------------------------------------------------------------- one problem per case

# (fragment appended to BASE, line relative to the fragment's first line, path, substring)
ERRORS = [
    ("send: {daily_limit: abc}", 1, "send.daily_limit", "expected a whole number, got 'abc'"),
    ("send: {daily_limit: 0}", 1, "send.daily_limit", "at least 1"),
    ("send: {daily_limit: 2.5}", 1, "send.daily_limit", "expected a whole number, got '2.5'"),
    ("send: {daily_limit: 10, reserve: 10}", 1, "send.reserve", "below daily_limit (10)"),
    ("send: {reserve: -1}", 1, "send.reserve", "at least 0"),
    (
        "send: {daily_limit: 10, reserve: 2, urgent_reserve: 8}",
        1,
        "send.urgent_reserve",
        "below daily_limit - reserve (8)",
    ),
    ("send: {urgent_reserve: -1}", 1, "send.urgent_reserve", "at least 0"),
    ("send: {urgent_any_time: often}", 1, "send.urgent_any_time", "expected true or false"),
    ("send:\n  delay: 60s\n  per_minute: 2", 3, "send.per_minute", "either delay or per_minute"),
    ("send: {per_minute: 0}", 1, "send.per_minute", "at least 1"),
    ("send: {delay: -5s}", 1, "send.delay", "cannot be negative"),
    ("send: {retry_intervals: []}", 1, "send.retry_intervals", "at least one interval"),
    ("send:\n  retry_intervals: [1m, soon]", 2, "send.retry_intervals[1]", "'soon'"),
    ("send: {give_up_after: 0}", 1, "send.give_up_after", "longer than 0"),
    ("send: {account_pause: []}", 1, "send.account_pause", "at least one pause"),
    ("send:\n  account_pause: [1m, 0s]", 2, "send.account_pause[1]", "longer than 0"),
    ("send: {limit_window: rolling24h}", 1, "send.limit_window", "did you mean 'rolling_24h'?"),
    ("send: {limit_counts: mails}", 1, "send.limit_counts", "one of messages, recipients"),
    ("send: {on_unknown_outcome: maybe}", 1, "send.on_unknown_outcome", "retry, hold"),
    ("send: {immediately: sometimes}", 1, "send.immediately", "expected true or false"),
    ("send: [1, 2]", 1, "send", "expected a mapping"),
    ("schedule: {days: [mon, fry]}", 1, "schedule.days[1]", "did you mean 'fri'?"),
    ("schedule: {days: []}", 1, "schedule.days", "at least one day"),
    ("schedule: {window: '8-17'}", 1, "schedule.window", "HH:MM-HH:MM"),
    ("schedule: {at: ['25:00']}", 1, "schedule.at[0]", "hours go 00-23"),
    ("schedule: {every: 'off'}", 1, "schedule.every", "never checked"),
    ("schedule: {every: 0s}", 1, "schedule.every", "longer than 0"),
    ("receive: {attachments: extract}", 1, "receive.attachments_dir", "required"),
    ("receive: {attachments: zip}", 1, "receive.attachments", "keep, strip, extract"),
    ("receive: {max_attachment_size: 5 parsecs}", 1, "receive.max_attachment_size", "size"),
    ("spool: {max_message_size: 0}", 1, "spool.max_message_size", "more than 0 bytes"),
    ("metrics: {listen: 'localhost'}", 1, "metrics.listen", "HOST:PORT"),
    ("metrics: {listen: '::1:9100'}", 1, "metrics.listen", "in brackets"),
    ("metrics: {listen: '127.0.0.1:99999'}", 1, "metrics.listen", "1 to 65535"),
    ("metrics: {listen: ':9100'}", 1, "metrics.listen", "0.0.0.0 for every interface"),
    ("log: {level: verbose}", 1, "log.level", "debug, info, warning, error"),
    ("log: {format: text}", 1, "log.format", "auto, json, console"),
    ("log: {colour: true}", 1, "log.colour", "unknown key 'colour' under 'log'"),
    ("daily_limit: 5", 1, "daily_limit", "'daily_limit' belongs under 'send'"),
    ("sendd: {}", 1, "sendd", "did you mean 'send'?"),
    ("state_dir: [a]", 1, "state_dir", "expected a text value, got a list"),
    ("state_dir: /x\nstate_dir: /y", 2, "state_dir", "given twice (first on line"),
    ('state_dir: "/var/\\0lib"', 1, "state_dir", "NUL character"),
    ("state_dir: ~nosuchuser/x", 1, "state_dir", "no such user"),
]


@pytest.mark.parametrize(("fragment", "line", "path", "message"), ERRORS)
def test_each_rule_reports_one_located_problem(
    fragment: str, line: int, path: str, message: str
) -> None:
    found = one_problem(BASE + fragment + "\n")
    prefix = f"{SRC}:{BASE_LINES + line}: {path}: "
    assert found.startswith(prefix), found
    assert message in found, found


# Whole documents, for rules about account and servers.
DOC_ERRORS = [
    (
        "account: {address: reception}\noutgoing: {host: smtp.x}\nincoming: none\n",
        1,
        "account.address",
        "does not look like an email address",
    ),
    (
        "account: {address: 'Smiles <a@b.example>'}\noutgoing: {host: smtp.x}\nincoming: none\n",
        1,
        "account.address",
        "display_name",
    ),
    (
        "account: {display_name: X}\noutgoing: {host: smtp.x}\nincoming: none\n",
        1,
        "account.address",
        "required",
    ),
    ("outgoing: {host: smtp.x}\nincoming: none\n", 1, "account", "required"),
    ("account: {address: a@b.example}\nincoming: none\n", 1, "outgoing", "required"),
    (
        "account: {address: a@b.example}\noutgoing: {host: smtp.x}\n",
        1,
        "incoming",
        "`incoming: none`",
    ),
    (
        "account:\n  address: a@b.example\n  auth: {password: hunter2}\n"
        "outgoing: {host: smtp.x}\nincoming: none\n",
        3,
        "account.auth.password",
        "set account.auth.password_file",
    ),
    (
        "account:\n  address: a@b.example\n  auth:\n    refresh_token: abc\n"
        "outgoing: {host: smtp.x}\nincoming: none\n",
        4,
        "account.auth.refresh_token",
        "refresh_token_file",
    ),
    (
        "account: {address: a@b.example}\noutgoing:\n  host: smtp.x\n  security: none\n"
        "incoming: none\n",
        4,
        "outgoing.security",
        "only allowed to a relay on this machine",
    ),
    (
        "account: {address: a@b.example}\noutgoing: {host: 'smtps://smtp.x'}\nincoming: none\n",
        2,
        "outgoing.host",
        "host name only",
    ),
    (
        "account: {address: a@b.example}\noutgoing: {host: 'smtp.x:587'}\nincoming: none\n",
        2,
        "outgoing.host",
        "port goes in port:",
    ),
    (
        "account: {address: a@b.example}\noutgoing: {host: smtp.x, port: 0}\nincoming: none\n",
        2,
        "outgoing.port",
        "1 to 65535",
    ),
    (
        "account: {address: a@b.example}\noutgoing: {host: smtp.x, folder: INBOX}\n"
        "incoming: none\n",
        2,
        "outgoing.folder",
        "unknown key 'folder' under 'outgoing'",
    ),
    (
        "account: {address: a@b.example}\noutgoing: {host: smtp.x}\n"
        "incoming: {host: imap.x, protocol: pop}\n",
        3,
        "incoming.protocol",
        "did you mean 'pop3'?",
    ),
    (
        "account:\n  address: a@b.example\n  auth: {client_id: abc}\n"
        "outgoing: {host: smtp.x}\nincoming: none\n",
        3,
        "account.auth.client_id",
        "only used with method: oauth2",
    ),
    (
        "account:\n  address: a@b.example\n  auth: {method: oauth2, password_file: /p, "
        "provider: google, client_id: x}\nincoming: none\n",
        3,
        "account.auth.password_file",
        "only used with method: password",
    ),
    (
        "account:\n  address: a@b.example\n  auth: {method: oauth2, client_id: x}\n"
        "outgoing: {host: smtp.x}\nincoming: none\n",
        3,
        "account.auth.token_url",
        "required with provider custom",
    ),
    (
        "account:\n  address: a@b.example\n  auth: {method: oauth2, provider: google}\n"
        "incoming: none\n",
        3,
        "account.auth.client_id",
        "required",
    ),
    (
        "account:\n  address: a@b.example\n  auth:\n    method: oauth2\n    client_id: x\n"
        "    token_url: http://login.example/token\noutgoing: {host: smtp.x}\nincoming: none\n",
        6,
        "account.auth.token_url",
        "use https://",
    ),
    (
        "account:\n  address: a@b.example\n  auth: {method: oauth2, provider: google, "
        "client_id: x, token_url: 'https://[::1/token'}\nincoming: none\n",
        3,
        "account.auth.token_url",
        "not an https:// URL",
    ),
    (
        "account:\n  address: a@b.example\n  auth: {method: oauth2, provider: yahoo}\n"
        "incoming: none\n",
        3,
        "account.auth.provider",
        "microsoft365, google, custom",
    ),
    (
        "timezone: Europe/Londn\naccount: {address: a@b.example}\noutgoing: {host: smtp.x}\n"
        "incoming: none\n",
        1,
        "timezone",
        "did you mean 'Europe/London'?",
    ),
]


@pytest.mark.parametrize(("text", "line", "path", "message"), DOC_ERRORS)
def test_account_and_server_rules(text: str, line: int, path: str, message: str) -> None:
    found = [p for p in problems(text) if f": {path}: " in p]
    assert found, problems(text)
    assert found[0].startswith(f"{SRC}:{line}: {path}: "), found
    assert message in found[0], found


def test_every_problem_is_reported_not_just_the_first() -> None:
    text = (
        "account: {address: nope}\n"
        "outgoing: {host: smtp.x, port: x}\n"
        "incoming: none\n"
        "send: {delay: soon, daily_limit: many}\n"
        "log: {level: loud}\n"
    )
    found = problems(text)
    assert [p.split(": ")[1] for p in found] == [
        "account.address",
        "outgoing.port",
        "send.daily_limit",
        "send.delay",
        "log.level",
    ]


def test_inline_secret_is_never_echoed() -> None:
    text = BASE.replace("    password_file:", "    password: s3cret-Value\n    password_file:")
    message = "\n".join(problems(text))
    assert "s3cret-Value" not in message
    assert "password_file" in message


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.1", "::1", "localhost", "[::1]"])
def test_security_none_with_login_is_allowed_to_loopback(host: str) -> None:
    c = cfg(
        base=BASE.replace("{host: smtp.practice.example}", f"{{host: '{host}', security: none}}")
    )
    assert c.outgoing.security == "none" and c.outgoing.port == 25


def test_security_none_without_login_is_allowed_anywhere() -> None:
    text = BASE.replace("    password_file: /etc/exactmaild/password\n", "    method: none\n")
    c = cfg(base=text.replace("{host: smtp.practice.example}", "{host: relay.lan, security: none}"))
    assert c.outgoing.host == "relay.lan" and c.account.auth.method == "none"


# ---------------------------------------------------------------- ports, presets


@pytest.mark.parametrize(
    ("protocol", "security", "port"),
    [
        ("imap", "tls", 993),
        ("imap", "starttls", 143),
        ("pop3", "tls", 995),
        ("pop3", "starttls", 110),
    ],
)
def test_incoming_port_defaults(protocol: str, security: str, port: int) -> None:
    c = cfg(
        base=BASE.replace(
            "  host: imap.practice.example\n",
            f"  host: imap.practice.example\n  protocol: {protocol}\n  security: {security}\n",
        )
    )
    assert c.incoming is not None and c.incoming.port == port


@pytest.mark.parametrize(("security", "port"), [("tls", 465), ("starttls", 587), ("none", 25)])
def test_outgoing_port_defaults(security: str, port: int) -> None:
    text = BASE.replace("    password_file: /etc/exactmaild/password\n", "    method: none\n")
    c = cfg(
        base=text.replace(
            "{host: smtp.practice.example}",
            f"{{host: smtp.practice.example, security: {security}}}",
        )
    )
    assert c.outgoing.port == port


OAUTH = """\
account:
  address: reception@practice.example
  auth:
    method: oauth2
    provider: {provider}
    client_id: app-id
    refresh_token_file: /etc/exactmaild/refresh_token
"""


def test_microsoft365_preset_fills_servers_token_url_and_scope() -> None:
    c = parse(OAUTH.format(provider="microsoft365"), SRC)
    auth = c.account.auth
    assert auth.token_url == "https://login.microsoftonline.com/common/oauth2/v2.0/token"
    assert auth.scope is not None and "https://outlook.office.com/SMTP.Send" in auth.scope
    assert "offline_access" in auth.scope
    assert (c.outgoing.host, c.outgoing.port, c.outgoing.security) == (
        "smtp.office365.com",
        587,
        "starttls",
    )
    assert c.incoming is not None
    assert (c.incoming.protocol, c.incoming.host, c.incoming.port, c.incoming.security) == (
        "imap",
        "outlook.office365.com",
        993,
        "tls",
    )


def test_google_preset_and_explicit_keys_override() -> None:
    text = OAUTH.format(provider="google") + (
        "incoming: {protocol: pop3, leave_on_server: false}\noutgoing: {port: 2525}\n  \n"
    )
    c = parse(text.replace("    client_id", "    scope: custom-scope\n    client_id"), SRC)
    assert c.account.auth.token_url == "https://oauth2.googleapis.com/token"
    assert c.account.auth.scope == "custom-scope"
    assert (c.outgoing.host, c.outgoing.port, c.outgoing.security) == (
        "smtp.gmail.com",
        2525,
        "tls",
    )
    assert c.incoming is not None
    assert (c.incoming.host, c.incoming.port, c.incoming.leave_on_server) == (
        "pop.gmail.com",
        995,
        False,
    )


def test_explicit_host_does_not_inherit_the_presets_security() -> None:
    c = parse(OAUTH.format(provider="google") + "outgoing: {host: smtp.relay.example}\n", SRC)
    assert (c.outgoing.host, c.outgoing.security, c.outgoing.port) == (
        "smtp.relay.example",
        "starttls",
        587,
    )


def test_incoming_none_means_no_receive() -> None:
    c = cfg(base=BASE.replace("incoming:\n  host: imap.practice.example\n", "incoming: none\n"))
    assert c.incoming is None and c.receive is None


# ---------------------------------------------------------------- pacing


@pytest.mark.parametrize(
    ("send", "window", "delay", "source"),
    [
        ("{}", None, 60.0, "delay"),
        ("{delay: 90s}", None, 90.0, "delay"),
        ("{delay: 500ms}", None, 0.5, "delay"),
        ("{delay: 2}", None, 2.0, "delay"),
        ("{per_minute: 2}", None, 30.0, "per_minute"),
        ("{delay: auto, daily_limit: 500}", "08:00-16:00", 60.0, "auto"),
        ("{delay: auto, daily_limit: 1000}", "08:00-16:00", 30.0, "auto"),
        ("{delay: auto, daily_limit: 2000}", "08:00-16:00", 15.0, "auto"),
        ("{delay: auto, daily_limit: 1000, reserve: 500}", "08:00-16:00", 60.0, "auto"),
        ("{delay: auto, daily_limit: 500}", None, 173.0, "auto"),  # ceil(86400 / 500)
    ],
)
def test_send_delay_is_resolved(send: str, window: str | None, delay: float, source: str) -> None:
    extra = f"send: {send}\n" + (f"schedule: {{window: '{window}'}}\n" if window else "")
    c = cfg(extra)
    assert (c.send.delay, c.send.delay_source) == (delay, source)
    if source == "auto" or send == "{}":  # auto never outruns the limit; the default is silent
        assert not [w for w in c.warnings if w.startswith("send: at")]


def test_too_fast_delay_warns_with_the_plan_figure() -> None:
    c = cfg("send: {delay: 1s, daily_limit: 500}\nschedule: {window: '08:00-16:00'}\n")
    (warning,) = [w for w in c.warnings if w.startswith("send: at")]
    assert "used up after 8 min 20 s" in warning
    assert "500 sends over 8 h: 1 email a minute, a delay of 60 s between sends" in warning


def test_immediately_is_summarised_and_not_warned() -> None:
    c = cfg("send: {immediately: true}\n")
    assert c.send.immediately
    assert "immediately" in summary(c)
    assert not [w for w in c.warnings if w.startswith("send: at")]


@pytest.mark.parametrize(
    ("extra", "warning"),
    [
        ("schedule: {every: 30s}", "more often than once a minute"),
        ("metrics: {listen: '0.0.0.0:9725'}", "reachable from other machines"),
        ("send: {count_sent_folder: Sent}", None),
    ],
)
def test_warnings(extra: str, warning: str | None) -> None:
    c = cfg(extra + "\n")
    matching = [w for w in c.warnings if warning and warning in w]
    assert bool(matching) == (warning is not None), c.warnings


# ---------------------------------------------------------------- values and paths


def test_unquoted_times_are_not_base_60_numbers() -> None:
    # YAML 1.1 reads an unquoted 12:00 as 720; the raw text must win.
    c = cfg("schedule: {at: [12:00, 07:30, 12:00], every: off}\n")
    assert c.schedule.at == (dt.time(7, 30), dt.time(12, 0))
    assert c.schedule.every is None


def test_days_accept_full_names_and_come_out_in_week_order() -> None:
    c = cfg("schedule: {days: [Friday, mon, WED]}\n")
    assert c.schedule.days == ("mon", "wed", "fri")


def test_metrics_off_and_ipv6() -> None:
    assert not cfg("metrics: {listen: off}\n").metrics.enabled
    m = cfg("metrics: {listen: '[::1]:9100'}\n").metrics
    assert (m.host, m.port) == ("::1", 9100)


def test_relative_paths_resolve_against_the_config_directory(tmp_path: Path) -> None:
    source = tmp_path / "etc" / "exactmaild.yaml"
    c = cfg(
        "state_dir: state\nspool: {dir: ../spool}\nreceive: {maildir: mail}\n"
        "send: {signature: sig.txt}\n",
        source=source,
    )
    assert c.state_dir == tmp_path / "etc" / "state"
    assert c.spool.dir == tmp_path / "etc" / "../spool"
    assert c.receive is not None and c.receive.maildir == tmp_path / "etc" / "mail"
    assert c.send.signature == tmp_path / "etc" / "sig.txt"


def test_maildir_defaults_under_state_dir() -> None:
    c = cfg("state_dir: /srv/exactmaild\n")
    assert c.receive is not None and c.receive.maildir == Path("/srv/exactmaild/inbox")


def test_yaml_merge_keys_work_with_explicit_keys_winning() -> None:
    text = BASE.replace(
        "outgoing: {host: smtp.practice.example}",
        "x-tls: &tls {security: tls, tls_ca_file: /ca.pem}\n"
        "outgoing: {<<: *tls, host: smtp.practice.example, security: starttls}",
    )
    # x-tls is not a key we know: the anchor has to live somewhere valid.
    assert any("x-tls" in p for p in problems(text))
    text = BASE.replace(
        "incoming:\n  host: imap.practice.example\n",
        "incoming: &srv\n  host: imap.practice.example\n  tls_ca_file: /ca.pem\n",
    ).replace(
        "outgoing: {host: smtp.practice.example}",
        "outgoing:\n  <<: *srv\n  host: smtp.practice.example",
    )
    c = parse(text, SRC)
    assert c.outgoing.tls_ca_file == Path("/ca.pem") and c.outgoing.host == "smtp.practice.example"


def test_timezone_default_is_the_systems(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(configload, "system_timezone", lambda: "Europe/Paris")
    assert cfg(base=BASE.replace("timezone: UTC\n", "")).timezone == "Europe/Paris"


def test_system_timezone_sources(tmp_path: Path) -> None:
    assert system_timezone(tmp_path) == "UTC"
    os.symlink("/usr/share/zoneinfo/Europe/London", tmp_path / "localtime")
    assert system_timezone(tmp_path) == "Europe/London"
    (tmp_path / "timezone").write_text("America/New_York\n")
    assert system_timezone(tmp_path) == "America/New_York"
    (tmp_path / "timezone").write_text("Not/AZone\n")
    assert system_timezone(tmp_path) == "Europe/London"


# ---------------------------------------------------------------- units

DURATIONS = [
    ("500ms", 0.5),
    ("90s", 90.0),
    ("5m", 300.0),
    ("1h", 3600.0),
    ("4d", 345600.0),
    ("1h30m", 5400.0),
    ("1.5h", 5400.0),
    ("2 minutes", 120.0),
    (" 7 ", 7.0),
    (45, 45.0),
    (2.5, 2.5),
    ("0", 0.0),
]


@pytest.mark.parametrize(("text", "seconds"), DURATIONS)
def test_parse_duration(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5 parsecs", "unknown unit 'parsecs'"),
        ("5 mintues", "did you mean 'minutes'?"),
        ("", "empty"),
        ("-1s", "negative"),
        (-1, "negative"),
        ("1h30", "not a duration"),
        ("soon", "not a duration"),
        (True, "expected a duration"),
        (float("inf"), "expected a duration"),
        (float("nan"), "expected a duration"),
    ],
)
def test_parse_duration_errors(text: str | int | float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("64KB", 64_000),
        ("25MB", 25_000_000),
        ("1GB", 1_000_000_000),
        ("512", 512),
        (512, 512),
        ("10KiB", 10_240),
        ("25MiB", 25 * 1024 * 1024),
        ("1.5 mb", 1_500_000),
        ("100 B", 100),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "message"),
    [("3 kbit", "unknown unit"), ("-1", "not a size"), ("lots", "not a size"), (-5, "negative")],
)
def test_parse_size_errors(text: str | int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("07:30", dt.time(7, 30)), ("7:30", dt.time(7, 30)), ("23:59", dt.time(23, 59))],
)
def test_parse_hhmm(text: str, expected: dt.time) -> None:
    assert parse_hhmm(text) == expected


@pytest.mark.parametrize("text", ["24:00", "12:60", "noon", "1230", "12:3"])
def test_parse_hhmm_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_hhmm(text)


@pytest.mark.parametrize(
    ("text", "hours"),
    [("08:00-17:00", 9), ("22:00-06:00", 8), ("17:00-24:00", 7), ("00:00-00:00", 24)],
)
def test_parse_window(text: str, hours: float) -> None:
    assert parse_window(text).hours == hours


@pytest.mark.parametrize("text", ["08:00", "8-17", "08:00-25:00", "24:00-08:00"])
def test_parse_window_errors(text: str) -> None:
    with pytest.raises(ValueError, match="HH:MM-HH:MM"):
        parse_window(text)


# ---------------------------------------------------------------- files and hostile YAML


def test_load_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "exactmaild.yaml"
    path.write_text(BASE)
    assert load(path).account.address == "reception@practice.example"
    assert load(str(path)).source == path


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(b"timezone: \xff\xfe\n"), "not UTF-8"),
        (lambda p: p.write_bytes(b"a" * (1024 * 1024 + 1)), "larger than 1024 KiB"),
    ],
)
def test_load_file_problems(tmp_path: Path, setup: object, message: str) -> None:
    path = tmp_path / "exactmaild.yaml"
    setup(path)  # type: ignore[operator]
    with pytest.raises(ConfigError) as info:
        load(path)
    (problem,) = info.value.problems
    assert problem.file == str(path) and message in problem.message


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("account:\n  address: a@b\n outgoing: x\n", 3, "YAML syntax error"),
        ("a: [1, 2\n", 2, "YAML syntax error"),
        ("a: 'unterminated\n", 2, "YAML syntax error"),
        ("a: *nowhere\n", 1, "undefined alias"),
        ("---\na: 1\n---\nb: 2\n", 3, "single document"),
        ("a: !!python/object:os.system x\n", 0, ""),
        ("", 1, "the file is empty"),
        ("- a\n- b\n", 1, "expected a mapping of settings, got a list"),
        ("just text\n", 1, "expected a mapping of settings"),
        ("\x00", 1, "cannot contain character"),
    ],
)
def test_yaml_problems_are_located(text: str, line: int, message: str) -> None:
    found = problems(text)
    assert any(message in p for p in found), found
    if line:
        assert found[0].startswith(f"{SRC}:{line}: "), found


def test_parse_refuses_text_over_one_mib() -> None:
    (problem,) = problems("a: " + "x" * (1024 * 1024))
    assert "larger than 1024 KiB" in problem


def test_billion_laughs_is_refused_quickly() -> None:
    lines = ['l0: &l0 "lol"']
    for level in range(1, 10):
        refs = ", ".join([f"*l{level - 1}"] * 10)
        lines.append(f"l{level}: &l{level} [{refs}]")
    found = problems("\n".join(lines) + "\n")
    assert len(found) == 1
    # l1 and l2 hold the first 20 aliases; the 21st, on line 4, stops it.
    assert f"{SRC}:4: " in found[0] and "billion laughs" in found[0]


def test_a_few_aliases_are_fine_and_recursive_ones_do_not_hang() -> None:
    text = BASE.replace("incoming:\n", "incoming: &in\n") + "x: &loop [*loop]\n"
    assert "unknown key 'x'" in one_problem(text)


def test_deep_nesting_is_refused_not_a_recursion_error() -> None:
    found = problems("a: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested more than" in found[0]


# ---------------------------------------------------------------- summary


def test_summary_shows_pacing_limits_and_never_a_secret(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("hunter2-secret\n")
    secret.chmod(0o600)
    text = (
        DESIGN_EXAMPLE.replace("/etc/exactmaild/password", str(secret))
        .replace("delay: 60s", "delay: auto")
        .replace("reserve: 0", "reserve: 50")
    )
    out = summary(parse(text, SRC))
    for expected in [
        "Europe/London",
        "Smiles Dental <reception@practice.example>",
        f"password from:  {secret}",
        "imap imap.practice.example:993, tls",
        "smtp smtp.practice.example:587, starttls",
        "mon, tue, wed, thu, fri",
        "08:00-17:00",
        "every 5 min",
        "at 07:30, 12:00",
        "72 s between sends",  # ceil(9 h * 3600 / 450)
        "(from delay: auto)",
        "500 messages per calendar day",
        "450 sends per calendar day",
        "/var/spool/exactmaild",
        "/var/lib/exactmaild",
        "http://127.0.0.1:9725/metrics",
        "warnings:",
    ]:
        assert expected in out, f"{expected!r} missing from:\n{out}"
    assert "hunter2" not in out


def test_summary_names_the_systemd_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "password").write_text("x")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert f"systemd credential {tmp_path / 'password'}" in summary(cfg())


def test_problem_format_is_file_line_path_message() -> None:
    with pytest.raises(ConfigError) as info:
        parse(BASE + "send:\n  delay: x\n", Path("conf.yaml"))
    (problem,) = info.value.problems
    assert (problem.file, problem.line, problem.path) == ("conf.yaml", BASE_LINES + 2, "send.delay")
    assert str(info.value) == f"conf.yaml:{BASE_LINES + 2}: send.delay: {problem.message}"


# ---------------------------------------------------------------- fuzz: ConfigError or a Config

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        ["auto", "off", "none", "5m", "08:00-17:00", "12:00", "tls", "oauth2", "google", "::1"]
    ),
)
_keys = st.sampled_from(
    [
        *configload._TOP_KEYS,
        *configload._SEND_KEYS,
        *configload._AUTH_KEYS,
        *configload._INCOMING_KEYS,
        *configload._SCHEDULE_KEYS,
        "address",
        "listen",
        "bogus",
    ]
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=6),
    max_leaves=25,
)


def _parse_must_not_crash(text: str) -> None:
    try:
        result = parse(text, SRC)
    except ConfigError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert isinstance(problem.line, int) and problem.message
    else:
        assert isinstance(result, Config)
        assert summary(result)  # a valid config must also summarise without crashing


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_keys, _values, max_size=8))
def test_fuzz_structured_documents(document: dict[str, object]) -> None:
    _parse_must_not_crash(yaml.safe_dump(document))


@settings(max_examples=80, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab:- \n[]{}&*!'\"#|>%@`,?<\t0159.")), max_size=60))
def test_fuzz_yaml_syntax(text: str) -> None:
    _parse_must_not_crash(text)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40))
def test_fuzz_any_text_after_a_valid_base(tail: str) -> None:
    _parse_must_not_crash(BASE + tail)


_DESIGN = yaml.safe_load(DESIGN_EXAMPLE)
_LEAVES = [
    (section, key) for section, body in _DESIGN.items() if isinstance(body, dict) for key in body
] + [("account.auth", key) for key in configload._AUTH_KEYS]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_LEAVES), _values), min_size=1, max_size=3))
def test_fuzz_one_bad_value_in_a_valid_config(
    changes: list[tuple[tuple[str, str], object]],
) -> None:
    document = yaml.safe_load(DESIGN_EXAMPLE)
    for (section, key), value in changes:
        target = document
        for part in section.split("."):
            target = target.get(part) if isinstance(target, dict) else None
        if isinstance(target, dict):  # an earlier change may have replaced the section
            target[key] = value
    _parse_must_not_crash(yaml.safe_dump(document))


def test_device_authorization_url_from_presets_custom_and_http_refused() -> None:
    ms = parse(OAUTH.format(provider="microsoft365"), SRC).account.auth
    assert ms.device_authorization_url == (
        "https://login.microsoftonline.com/common/oauth2/v2.0/devicecode"
    )
    google = parse(OAUTH.format(provider="google"), SRC).account.auth
    assert google.device_authorization_url == "https://oauth2.googleapis.com/device/code"
    base = (
        OAUTH.format(provider="custom")
        + "    token_url: https://login.example/token\n"
        + "outgoing: {host: smtp.example}\nincoming: none\n"
    )

    def custom(url: str) -> str:
        return base.replace(
            "    token_url:", f"    device_authorization_url: {url}\n    token_url:"
        )

    auth = parse(custom("https://login.example/device"), SRC).account.auth
    assert auth.device_authorization_url == "https://login.example/device"
    loopback = parse(custom("http://127.0.0.1:8080/device"), SRC).account.auth
    assert loopback.device_authorization_url == "http://127.0.0.1:8080/device"
    assert parse(base, SRC).account.auth.device_authorization_url is None
    found = problems(custom("http://login.example/device"))
    assert any(
        "account.auth.device_authorization_url" in p and "use https://" in p for p in found
    ), found
    found = problems(custom("not a url"))
    assert any("account.auth.device_authorization_url" in p for p in found), found


def _outgoing(keys: str) -> str:
    return BASE.replace("{host: smtp.practice.example}", f"{{host: smtp.practice.example, {keys}}}")


def test_outgoing_keepalive_and_max_recipients() -> None:
    c = cfg()
    assert (c.outgoing.keepalive, c.outgoing.max_recipients) == (240.0, None)
    c = parse(_outgoing("keepalive: 90s, max_recipients: 100"), SRC)
    assert (c.outgoing.keepalive, c.outgoing.max_recipients) == (90.0, 100)
    assert parse(_outgoing("keepalive: 0s"), SRC).outgoing.keepalive == 0.0
    long = parse(_outgoing("keepalive: 10m"), SRC)
    assert any("outgoing.keepalive 600s" in w for w in long.warnings), long.warnings
    for keys, path, message in [
        ("max_recipients: 0", "outgoing.max_recipients", "at least 1"),
        ("max_recipients: many", "outgoing.max_recipients", "whole number"),
        ("keepalive: soon", "outgoing.keepalive", "'soon'"),
        ("keep_alive: 4m", "outgoing.keep_alive", "did you mean 'keepalive'?"),
    ]:
        (found,) = problems(_outgoing(keys))
        assert f"{SRC}:8: {path}: " in found and message in found, found
