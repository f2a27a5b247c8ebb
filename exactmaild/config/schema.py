"""The configuration schema: the keys each section accepts, and the defaults.

Also where a key really lives (to say "daily_limit belongs under send"), the
inline-secret keys that are refused with directions, and the names of days.
Plain data only, shared by the loader, the section walkers and the converters.
"""

from __future__ import annotations

from pathlib import Path

from exactmaild.config.model import ALL_DAYS, Weekday

DEFAULT_STATE_DIR = Path("/var/lib/exactmaild")
DEFAULT_SPOOL_DIR = Path("/var/spool/exactmaild")
DEFAULT_METRICS_HOST = "127.0.0.1"
DEFAULT_METRICS_PORT = 9725
DEFAULT_DAILY_LIMIT = 500
DEFAULT_DELAY = 60.0
DEFAULT_HISTORY_DAYS = 30  # how long `history` keeps a finished message
MIN_CHECK_INTERVAL = 60.0  # below this, warn: providers throttle frequent logins

TOP_KEYS = (
    "timezone",
    "account",
    "incoming",
    "outgoing",
    "schedule",
    "receive",
    "send",
    "spool",
    "state_dir",
    "metrics",
    "log",
    "history_days",
)
ACCOUNT_KEYS = ("address", "display_name", "auth")
OAUTH2_KEYS = (
    "provider",
    "token_url",
    "client_id",
    "client_secret_file",
    "refresh_token_file",
    "scope",
    "device_authorization_url",
    "authorization_url",
)
AUTH_KEYS = ("method", "username", "password_file", *OAUTH2_KEYS)
SERVER_KEYS = ("host", "port", "security", "tls_ca_file")
OUTGOING_KEYS = (*SERVER_KEYS, "keepalive", "max_recipients")
INCOMING_KEYS = ("protocol", *SERVER_KEYS, "folder", "leave_on_server", "idle")
SCHEDULE_KEYS = ("days", "window", "every", "at")
RECEIVE_KEYS = ("maildir", "group", "attachments", "attachments_dir", "max_attachment_size")
SEND_KEYS = (
    "immediately",
    "delay",
    "per_minute",
    "daily_limit",
    "limit_window",
    "limit_counts",
    "reserve",
    "urgent_reserve",
    "urgent_any_time",
    "max_per_minute",
    "retry_intervals",
    "give_up_after",
    "on_unknown_outcome",
    "account_pause",
    "count_sent_folder",
    "signature",
    "local_recipients_to",
)
SPOOL_KEYS = ("dir", "max_message_size")
METRICS_KEYS = ("listen",)
LOG_KEYS = ("format", "level", "file")

# Where each key lives, to answer "daily_limit" at the top level with "it
# belongs under send" rather than a bare "unknown key".
SECTIONS: dict[str, tuple[str, ...]] = {
    "account": ACCOUNT_KEYS,
    "account.auth": AUTH_KEYS,
    "incoming": INCOMING_KEYS,
    "outgoing": OUTGOING_KEYS,
    "schedule": SCHEDULE_KEYS,
    "receive": RECEIVE_KEYS,
    "send": SEND_KEYS,
    "spool": SPOOL_KEYS,
    "metrics": METRICS_KEYS,
    "log": LOG_KEYS,
}

# Inline secrets are refused with directions rather than "unknown key": the
# point is to keep them out of a file that is often world-readable and
# copied around.
INLINE_SECRETS = {
    "password": "password_file",
    "pass": "password_file",
    "client_secret": "client_secret_file",
    "refresh_token": "refresh_token_file",
    "access_token": "refresh_token_file",
    "token": "refresh_token_file",
    "secret": "client_secret_file",
}

DAY_NAMES: dict[str, Weekday] = {}
for _short, _long in zip(
    ALL_DAYS,
    ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
    strict=True,
):
    DAY_NAMES[_short] = _short
    DAY_NAMES[_long] = _short
