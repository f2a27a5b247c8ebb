"""Where the configuration is, and loading it from there; how to start or
reload the service on this host.

`-c PATH`, else $EXACTMAILD_CONFIG, else the default. `may_not_queue` says
what a user refused by the spool should do (join the spool's group). The commands that act
on a running daemon (`status`, `queue list`, `flush`) load it with
`load_running`: when the file on disk is refused and a daemon runs, they use
the configuration that daemon runs (its copy, store/running.py) and say so.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from exactmaild.core.errors import ConfigError

if TYPE_CHECKING:
    from exactmaild.config.model import Config

DEFAULT_CONFIG = "/etc/exactmaild/exactmaild.yaml"


def config_path(arg: str | None) -> Path:
    return Path(arg or os.environ.get("EXACTMAILD_CONFIG") or DEFAULT_CONFIG)


def load_config(arg: str | None) -> Config:
    """Load and validate the configuration `arg` names; raises ConfigError (exit 78).

    The YAML loader is imported here, not at the top: `exactmaild --version`
    and a sendmail call that fails on its flags never need it.
    """
    from exactmaild.config import load

    return load.load(config_path(arg))


def load_running(arg: str | None) -> Config:
    """The configuration `arg` names; when that file is refused and a daemon
    runs on the state directory it names, the configuration that daemon runs,
    with a warning on stderr naming the file's first error."""
    try:
        return load_config(arg)
    except ConfigError as refused:
        from exactmaild.config import load
        from exactmaild.daemon.control import daemon_running
        from exactmaild.store import running

        path = config_path(arg).absolute()
        state_dir = load.state_dir_hint(path)
        copy = running.read(state_dir)
        if copy is None or copy.source != path or not daemon_running(state_dir):
            raise
        try:
            cfg = load.parse(copy.text, copy.source)
        except ConfigError:
            raise refused from None
        first = refused.problems[0] if refused.problems else "?"
        since = dt.datetime.fromtimestamp(copy.recorded_at).astimezone()
        print(
            f"exactmaild: warning: the file on disk is refused, first error: {first}\n"
            f"exactmaild: warning: using the configuration the daemon runs "
            f"(accepted {since:%a %d %b %H:%M}); fix the file, then "
            f"{how_to('reload', state_dir)}",
            file=sys.stderr,
        )
        return cfg


def under_systemd() -> bool:
    """Whether this host runs systemd (sd_booted()'s test)."""
    return Path("/run/systemd/system").is_dir()


def how_to(action: str, state_dir: Path) -> str:
    """The command that does `action` ("start", "reload") to the service on
    this host: systemctl where systemd runs, else the daemon's own way."""
    if under_systemd():
        return f"`systemctl {action} exactmaild`"
    if action == "start":
        return "`exactmaild run --daemon` (or your init system's script)"
    return f"`kill -HUP $(cat {state_dir / 'exactmaild.pid'})`"


def may_not_queue(spool_dir: Path, exc: OSError) -> str:
    """What to tell a user the spool refused: the group to join, read from the
    spool's new/ directory (whatever the package named it), not "run as root"."""
    import grp
    import pwd

    new = spool_dir / "new"
    try:
        me = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        me = str(os.geteuid())
    where = f"{exc.filename}: " if exc.filename else ""
    try:
        info = new.stat()
        group = grp.getgrgid(info.st_gid).gr_name
    except (OSError, KeyError):
        return (
            f"cannot queue the message: {where}permission denied for user {me}: "
            f"check the owner and mode of {spool_dir}"
        )
    if info.st_gid in os.getgroups() or info.st_gid == os.getegid():
        return (
            f"cannot queue the message: {where}permission denied for user {me}, although it "
            f"is in group {group}: the spool must be group-writable (`chmod 2770 {new} "
            f"{spool_dir / 'tmp'}`)"
        )
    return (
        f"cannot queue the message: {where}permission denied: user {me} is not in group "
        f"{group}, which owns {new}: run `usermod -aG {group} {me}`, then restart what runs "
        f"as {me} (php-fpm, the web server, cron) so it has the group"
    )
