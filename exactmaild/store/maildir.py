"""Delivery into a Maildir: the one way a message reaches `receive.maildir`.

Owns the Maildir delivery protocol (https://cr.yp.to/proto/maildir.html):
write the message under `tmp/` with a name no other delivery can produce,
fsync it, rename it into `new/`, and fsync `new/` so the rename itself
survives a power cut. A reader (a mail client, the practice software) never
sees a partial file, and when `deliver` returns the message is on disk: only
then may the caller record it as delivered. Also used for the delivery
status notices the sender writes.

Modes: private to the daemon's user (tmp/, new/ and cur/ 0700, messages
0600; the Maildir itself, if made here, as the umask says: 0750 under the
unit's UMask=0027),
unless `receive.group` shares the Maildir with a group (the practice
software's): `ensure(maildir, group)` then makes the Maildir and its tmp/,
new/ and cur/ belong to that group with mode 2750 (setgid, so every file made in them belongs to
it too), and a message delivered into a setgid Maildir is 0640, whoever
delivers it (a failure notice from the sender included).
"""

from __future__ import annotations

import errno
import grp
import itertools
import os
import secrets
import socket
import stat
import time
from pathlib import Path

from exactmaild.store.durable import fsync_dir, write_new

_counter = itertools.count(1)

_SUBDIRS = ("tmp", "new", "cur")


def ensure(maildir: Path, group: str | None = None) -> None:
    """Create the Maildir (tmp/, new/, cur/) if it is missing, private to the
    daemon's user; with `group`, shared with that group (setgid, 2750)."""
    gid = None if group is None else group_id(group)
    for sub in _SUBDIRS:
        # The Maildir itself, made on the way, gets the umask's mode (0750
        # under the unit's UMask=0027); its three parts are private.
        (maildir / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    if gid is None:
        return
    for path in (maildir, *(maildir / sub for sub in _SUBDIRS)):
        info = path.stat()
        if info.st_gid != gid:
            os.chown(path, -1, gid)
        if stat.S_IMODE(info.st_mode) != 0o2750:
            os.chmod(path, 0o2750)


def group_id(group: str) -> int:
    """The gid of `group` (a name or a number); OSError if the host has no such group."""
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise OSError(errno.EINVAL, f"no group {group!r} on this host (receive.group)") from None


def unique_name(size: int) -> str:
    """time.M<usec>P<pid>Q<n>R<random>.<host>,S=<size>: unique across processes and restarts."""
    now = time.time()
    sec = int(now)
    usec = int((now - sec) * 1_000_000)
    # "/" and ":" may not appear in the host part (the spec's escapes).
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "localhost"
    return f"{sec}.M{usec}P{os.getpid()}Q{next(_counter)}R{secrets.token_hex(8)}.{host},S={size}"


def deliver(maildir: Path, data: bytes, *, group: str | None = None) -> Path:
    """Deliver `data` as one new message; returns its path under new/ once it is durable.

    `group` (receive.group) shares the Maildir with that group first; a
    Maildir already shared (setgid tmp/) gets a message its group can read.
    """
    ensure(maildir, group)
    shared = bool((maildir / "tmp").stat().st_mode & stat.S_ISGID)
    name = unique_name(len(data))
    tmp = maildir / "tmp" / name
    final = maildir / "new" / name
    # O_EXCL: a name collision (which the name makes practically impossible)
    # fails loudly instead of overwriting another delivery.
    write_new(tmp, data, 0o640 if shared else 0o600)
    try:
        os.rename(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(maildir / "new")
    return final
