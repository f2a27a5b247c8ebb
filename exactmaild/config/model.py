"""Configuration: the typed, frozen objects the rest of the daemon reads.

The YAML is parsed and validated by `exactmaild.config.load`; this module only
defines the shape, so every other module can import it without pulling in the
parser. All times are seconds (float); durations in the YAML ("90s", "5m")
are converted on load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from exactmaild.core.hours import ALL_DAYS, Schedule, Weekday, Window

__all__ = [
    "ALL_DAYS",
    "Account",
    "Auth",
    "Config",
    "Incoming",
    "LogConfig",
    "MetricsConfig",
    "Outgoing",
    "Receive",
    "Schedule",
    "Security",
    "Send",
    "Server",
    "SpoolConfig",
    "Weekday",
    "Window",
]

Security = Literal["tls", "starttls", "none"]


@dataclass(frozen=True)
class Auth:
    method: Literal["password", "oauth2", "none"] = "password"
    username: str = ""  # defaults to account.address on load
    password_file: Path | None = None
    # oauth2
    provider: Literal["microsoft365", "google", "custom"] | None = None
    token_url: str | None = None
    client_id: str | None = None
    client_secret_file: Path | None = None
    refresh_token_file: Path | None = None
    scope: str | None = None
    # RFC 8628 device endpoint for `exactmaild authorize` (preset for microsoft365/google)
    device_authorization_url: str | None = None
    # authorization endpoint for the loopback code flow with PKCE (preset for google)
    authorization_url: str | None = None


@dataclass(frozen=True)
class Account:
    address: str
    display_name: str | None = None
    auth: Auth = field(default_factory=Auth)


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    security: Security = "tls"
    tls_ca_file: Path | None = None


@dataclass(frozen=True)
class Incoming(Server):
    protocol: Literal["imap", "pop3"] = "imap"
    folder: str = "INBOX"
    leave_on_server: bool = True
    # IMAP IDLE (RFC 2177) inside the schedule's window: new mail in seconds.
    idle: bool = False


@dataclass(frozen=True)
class Outgoing(Server):
    # A transaction's recipients at most; larger lists are split (a
    # provider preset fills it). None: as many as the message has.
    max_recipients: int | None = None
    # Keep the SMTP connection open while the next send is due within this
    # long (probed before reuse): a login per message trips providers'
    # "too many login attempts". 4 min stays under common idle timeouts
    # (Postfix's smtpd_timeout is 300 s).
    keepalive: float = 240.0


@dataclass(frozen=True)
class Receive:
    maildir: Path
    attachments: Literal["keep", "strip", "extract"] = "keep"
    attachments_dir: Path | None = None
    max_attachment_size: int = 25 * 1024 * 1024
    # A group that may read the Maildir (the practice software's): the
    # Maildir's directories become setgid to it, messages mode 0640.
    group: str | None = None


@dataclass(frozen=True)
class Send:
    immediately: bool = False
    delay: float = 60.0  # effective seconds between sends (auto / per_minute resolved on load)
    delay_source: Literal["delay", "per_minute", "auto"] = "delay"
    daily_limit: int = 500
    limit_window: Literal["calendar_day", "rolling_24h"] = "calendar_day"
    limit_counts: Literal["messages", "recipients"] = "messages"
    reserve: int = 0
    # The last N sends of the allowance are kept for urgent mail (core.lanes).
    urgent_reserve: int = 0
    urgent_any_time: bool = False  # urgent mail may go outside schedule.window
    # A ceiling on the rate, whatever the pacing (immediately and flush
    # included): at most this many sends in any minute. None: no ceiling.
    max_per_minute: int | None = None
    retry_intervals: tuple[float, ...] = (60.0, 300.0, 900.0, 3600.0)
    give_up_after: float = 4 * 86400.0
    on_unknown_outcome: Literal["retry", "hold"] = "retry"
    # Pauses of the whole queue after an account-level refusal (login, quota,
    # rate limit), one per consecutive refusal; the last repeats.
    account_pause: tuple[float, ...] = (60.0, 120.0, 240.0, 480.0, 960.0, 1800.0)
    count_sent_folder: str | None = None
    signature: Path | None = None
    # Where mail to a bare local name (root, www-data: cron, scripts) goes;
    # None: the account's own address.
    local_recipients_to: str | None = None

    @property
    def min_gap(self) -> float:
        """Seconds between sends that the `max_per_minute` ceiling asks for (0: none)."""
        return 0.0 if not self.max_per_minute else 60.0 / self.max_per_minute

    @property
    def allowance(self) -> int:
        """Sends allowed per limit window once the reserve is kept back."""
        return max(0, self.daily_limit - self.reserve)


@dataclass(frozen=True)
class SpoolConfig:
    dir: Path
    max_message_size: int = 25 * 1000 * 1000


@dataclass(frozen=True)
class MetricsConfig:
    host: str | None = "127.0.0.1"  # None: metrics off
    port: int = 9725

    @property
    def enabled(self) -> bool:
        return self.host is not None


@dataclass(frozen=True)
class LogConfig:
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"
    file: Path | None = None  # for `run --daemon` on hosts without a journal


@dataclass(frozen=True)
class Config:
    source: Path
    timezone: str
    account: Account
    incoming: Incoming | None
    outgoing: Outgoing
    schedule: Schedule
    receive: Receive | None
    send: Send
    spool: SpoolConfig
    state_dir: Path
    metrics: MetricsConfig
    log: LogConfig
    warnings: tuple[str, ...] = ()
    history_days: int = 30  # how long finished messages stay in `history`
    # Where each limit value came from (key path -> "FILE:LINE", "preset
    # NAME" or "built-in default"), for check-config.
    origins: tuple[tuple[str, str], ...] = ()
