"""What the daemon checks before it starts, as located problems: the one list
`run` refuses on and `check-config` prints, so the two cannot disagree.

* Every secret the auth method reads (`auth.credentials.secret_files`):
  present, not empty, readable by the service's user and by nobody else.
  A missing OAuth2 refresh token stops only `check-config` (the daemon
  starts and waits for `exactmaild authorize`), and says to run it.
* The directories the daemon writes (state_dir, spool.dir, receive.maildir
  and the attachments directory): writable by the user the service runs as,
  or, if they do not exist yet, creatable by it.
* `receive.group`: the group exists, the service's user is in it (to give
  the Maildir to it), and its members can reach the Maildir.

Each problem is a `Problem` located at the key that names the file
(`FILE:LINE: key: problem`, exit 78), like a problem of the YAML itself.

The service's user is this process's user, except under root: a package
installs the daemon to run as `exactmaild`, so root checks as that user when
it exists (as `postfix check` checks as the mail owner). `check-config
--user NAME` names another.
"""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from exactmaild.auth.credentials import secret_files
from exactmaild.auth.secrets import SecretError
from exactmaild.config.load import locate
from exactmaild.config.model import Config
from exactmaild.core.errors import ConfigError, Problem

__all__ = [
    "SERVICE_USER",
    "ServiceUser",
    "current_user",
    "problems",
    "refuse_to_start",
    "service_user",
]

# The user the packages create and the systemd units run the daemon as.
SERVICE_USER = "exactmaild"


@dataclass(frozen=True)
class ServiceUser:
    """Who the daemon runs as, and why check-config believes so."""

    name: str
    uid: int
    gids: frozenset[int]
    why: str

    @property
    def is_me(self) -> bool:
        return self.uid == os.geteuid()


def service_user(name: str | None = None) -> ServiceUser:
    """The user `name`, else `exactmaild` when running as root and it exists,
    else the current user. Raises LookupError for a `name` the host lacks."""
    if name is not None:
        return _user(name, "given with --user")
    if os.geteuid() == 0:
        try:
            return _user(SERVICE_USER, "the service's user (running as root)")
        except LookupError:
            pass
    return current_user()


def current_user() -> ServiceUser:
    """This process's user: who `run` checks as."""
    me = os.geteuid()
    try:
        pw_name = pwd.getpwuid(me).pw_name
    except KeyError:  # a uid without a passwd entry (containers)
        return ServiceUser(str(me), me, frozenset(os.getgroups()) | {os.getegid()}, "this user")
    why = "the current user" + ("" if me != 0 else f"; no {SERVICE_USER!r} user on this host")
    return ServiceUser(
        pw_name, me, frozenset(os.getgrouplist(pw_name, os.getegid())) | {os.getegid()}, why
    )


def _user(name: str, why: str) -> ServiceUser:
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise LookupError(f"no user {name!r} on this host") from None
    return ServiceUser(name, pw.pw_uid, frozenset(os.getgrouplist(name, pw.pw_gid)), why)


def problems(
    cfg: Config, *, user: ServiceUser | None = None, at_start: bool = False
) -> list[Problem]:
    """Every problem that stops the daemon (at_start) or that check-config reports."""
    user = user or service_user()
    where = locate(cfg.source)
    found: list[Problem] = []
    for secret in secret_files(cfg.account):
        path = secret.path
        if secret.may_come_later and not (path is not None and path.exists()):
            if not at_start and not _from_systemd(secret.credential):
                found.append(
                    where.problem(
                        secret.key,
                        f"no {secret.what} yet ({path}): run `exactmaild authorize` "
                        "to get one; the daemon cannot log in without it",
                    )
                )
            continue
        try:
            secret.check()
        except SecretError as exc:
            text = str(exc)
            if not user.is_me:
                # The secret was read as this user; the fix is for the service's.
                text = text.replace(f"chown {current_user().name} ", f"chown {user.name} ")
            found.append(where.problem(secret.key, text))
            continue
        if (
            path is not None
            and not user.is_me
            and not _from_systemd(secret.credential)
            and not _allows(path, user, os.R_OK)
        ):
            found.append(
                where.problem(
                    secret.key,
                    f"{secret.what}: {path} cannot be read by user {user.name} "
                    f"({user.why}): run `chown {user.name} {path}` and `chmod 600 {path}`",
                )
            )
    for key, directory in _directories(cfg):
        trouble = _not_writable(directory, user)
        if trouble:
            found.append(where.problem(key, trouble))
    if cfg.receive is not None and cfg.receive.group is not None:
        trouble = _group_trouble(cfg.receive.maildir, cfg.receive.group, user)
        if trouble:
            found.append(where.problem("receive.group", trouble))
    # In the file's order, as the YAML's own problems are.
    return sorted(found, key=lambda p: p.line)


def refuse_to_start(cfg: Config) -> None:
    """Raise ConfigError (exit 78) with every problem that stops `run`."""
    found = problems(cfg, user=current_user(), at_start=True)
    if found:
        raise ConfigError(found)


def _from_systemd(credential: str) -> bool:
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    return directory is not None and (Path(directory) / credential).is_file()


def _directories(cfg: Config) -> list[tuple[str, Path]]:
    dirs = [("state_dir", cfg.state_dir), ("spool.dir", cfg.spool.dir)]
    if cfg.receive is not None:
        dirs.append(("receive.maildir", cfg.receive.maildir))
        if cfg.receive.attachments == "extract" and cfg.receive.attachments_dir is not None:
            dirs.append(("receive.attachments_dir", cfg.receive.attachments_dir))
    return dirs


def _group_trouble(maildir: Path, group: str, user: ServiceUser) -> str:
    """Why the Maildir cannot be shared with `group`, or "" if it can."""
    import grp

    try:
        entry = grp.getgrgid(int(group)) if group.isdigit() else grp.getgrnam(group)
    except KeyError:
        return f"no group {group!r} on this host: create it, or name the practice software's"
    if user.uid != 0 and entry.gr_gid not in user.gids:
        return (
            f"user {user.name} ({user.why}) is not in group {entry.gr_name}, so it cannot "
            f"give the Maildir to it: run `usermod -aG {entry.gr_name} {user.name}`"
        )
    # Members of the group must reach the Maildir through its parents.
    members = ServiceUser(f"group {entry.gr_name}", -1, frozenset({entry.gr_gid}), "")
    for parent in reversed(maildir.absolute().parents):
        if parent.exists() and not _allows(parent, members, os.X_OK):
            info = parent.stat()
            return (
                f"members of group {entry.gr_name} cannot reach {maildir}: {parent} is closed "
                f"to them (mode {stat.S_IMODE(info.st_mode):04o}, group {_group(info.st_gid)}); "
                "put the Maildir outside the state directory (e.g. /var/lib/exactmaild-inbox)"
            )
    return ""


def _group(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _not_writable(directory: Path, user: ServiceUser) -> str:
    """Why `user` cannot write `directory` (or create it), or "" if it can."""
    target = directory
    while not target.exists():
        if target.parent == target:
            break
        target = target.parent
    if not target.is_dir():
        return f"{target} is not a directory"
    if _allows(target, user, os.W_OK | os.X_OK):
        return ""
    info = target.stat()
    mode = f"mode {stat.S_IMODE(info.st_mode):04o}, owner {_name(info.st_uid)}"
    if target == directory:
        fix = f"run `chown {user.name} {directory}`"
        return f"{directory} is not writable by user {user.name} ({user.why}; {mode}): {fix}"
    return (
        f"{directory} does not exist and user {user.name} ({user.why}) cannot create it "
        f"in {target} ({mode}): run `install -d -o {user.name} -m 750 {directory}`"
    )


def _allows(path: Path, user: ServiceUser, want: int) -> bool:
    """Whether `user` may access `path` as `want` (os.R_OK, os.W_OK, os.X_OK).

    For this process's own user the kernel answers (ACLs, read-only mounts);
    for another user the mode bits do, path component by component.
    """
    if user.is_me:
        return os.access(path, want)
    if user.uid == 0:
        return True
    try:
        for parent in reversed(path.absolute().parents):
            if not _bits(parent.stat(), user) & os.X_OK:
                return False
        return _bits(path.stat(), user) & want == want
    except OSError:
        return False


def _bits(info: os.stat_result, user: ServiceUser) -> int:
    mode = info.st_mode
    if info.st_uid == user.uid:
        return (mode >> 6) & 7
    if info.st_gid in user.gids:
        return (mode >> 3) & 7
    return mode & 7


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
