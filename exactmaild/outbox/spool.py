"""The spool directory: the only module that renames or unlinks spool files.

Layout (Maildir-style, so nobody ever sees half a file)::

    SPOOL/tmp/        producers write here ...
    SPOOL/new/        ... and rename here: the queue
    SPOOL/active/     claimed for sending (a message here cannot be cancelled)
    SPOOL/deferred/   waiting for a retry after a temporary failure
    SPOOL/later/      scheduled: waiting for its Deferred-Delivery time
    SPOOL/hold/       parked for a person (unknown outcome with on_unknown_outcome: hold)
    SPOOL/failed/     failed for good, each with NAME.reason beside it
    SPOOL/cancelled/  cancelled by `exactmaild queue cancel`

Every state change is a rename within the spool followed by an fsync of the
directories involved, so a crash leaves each message in exactly one state
(the states are `exactmaild.core.states`). This module only does the file
operations: which message moves when is the Outbox's to decide, and the
queue's order in memory is `exactmaild.outbox.index`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from exactmaild.core.lanes import HEAD_BYTES, Lane, lane_of
from exactmaild.core.states import (
    CANCELLABLE,
    DEFERRED,
    HOLD,
    LATER,
    NEW,
    RETRYABLE,
    STATES,
    TMP,
    State,
)
from exactmaild.outbox.stamp import Born
from exactmaild.store.durable import fsync_dir as _fsync_dir
from exactmaild.store.durable import fsync_entry, write_new

DIRS = (TMP, *STATES)
# Where `queue hold` takes a message from: the states the daemon sends from.
HOLDABLE: tuple[State, ...] = (NEW, DEFERRED, LATER)
REASON_SUFFIX = ".reason"
# A dot-file: producers' and the daemon's scans never take it for a message.
_PROBE_NAME = ".exactmaild-storage-probe"


@dataclass(frozen=True)
class Entry:
    """A message in the spool, as `queue list` shows it."""

    queue_id: str
    state: State
    path: Path
    size: int
    mtime: float


def valid_name(name: str) -> bool:
    """Names the daemon takes: no dot-files (editors' and producers' temporaries),
    no reason files, nothing that could climb out of the directory."""
    return (
        bool(name)
        and not name.startswith(".")
        and "/" not in name
        and "\0" not in name
        and not name.endswith(REASON_SUFFIX)
        and len(name.encode("utf-8", "surrogateescape")) <= 200
    )


def _write_durable(path: Path, data: bytes, mode: int = 0o640) -> None:
    """Write a new file and make it durable (file and directory), or leave nothing."""
    write_new(path, data, mode)
    _fsync_dir(path.parent)


class Spool:
    def __init__(self, root: Path, *, create: bool = True) -> None:
        self.root = root
        # The directories as strings: the send path joins names to them per message.
        self._paths = {d: os.path.join(root, d) for d in DIRS}
        if create:
            self.ensure_dirs()

    def ensure_dirs(self) -> None:
        """Create what is missing; existing directories keep their modes.

        The packaged layout comes from tmpfiles.d/exactmaild.conf, made by
        root: the root 0710 with the group exactmaild-submit, tmp/ and new/
        3733 (setgid, sticky, write-and-search only), the rest 0750. Made here
        (no package, or a fresh spool.dir), the daemon cannot give away a
        group or set setgid (RestrictSUIDSGID), so only its own user and root
        can submit until `systemd-tmpfiles --create` or a chgrp/chmod by root.
        tmp/ and new/ are still sticky and unlistable; modes are set
        explicitly, whatever the umask.
        """
        if not self.root.is_dir():
            self.root.mkdir(parents=True, exist_ok=True)
            os.chmod(self.root, 0o750)
        for name in DIRS:
            d = self.root / name
            if not d.is_dir():
                d.mkdir(exist_ok=True)
                os.chmod(d, 0o1733 if name in (TMP, NEW) else 0o750)

    def dir(self, state: str) -> Path:
        """A state's directory, for listing (the send path never builds paths)."""
        return self.root / state

    def queued_oldest_first(self) -> list[str]:
        """The names in `new/`, oldest first: the queue's order at start-up."""
        found = sorted((e.mtime, e.queue_id) for e in self.entries((NEW,)))
        return [name for _, name in found]

    # -- state changes: every one is a rename ----------------------------------

    def move(self, name: str, src: str, dst: str, *, durable: bool = True) -> Path:
        """Rename SPOOL/src/name to SPOOL/dst/name and make the rename durable.

        Raises FileNotFoundError when the message is not in `src` (someone
        else moved it: a cancel raced a claim, say) and FileExistsError when
        `dst` already holds that name (we never overwrite a message).
        """
        a, b = os.path.join(self._paths[src], name), os.path.join(self._paths[dst], name)
        if not os.path.lexists(a):
            raise FileNotFoundError(errno.ENOENT, f"{a} does not exist", str(a))
        if os.path.lexists(b):
            raise FileExistsError(errno.EEXIST, f"{b} already exists", str(b))
        os.rename(a, b)
        if durable:
            _fsync_dir(self.dir(dst))
            if src != dst:
                _fsync_dir(self.dir(src))
        return Path(b)

    def claim(self, name: str, src: str = "new") -> Path | None:
        """Take a message for sending. None if it vanished (cancelled) or is not
        a regular file (symlinks and directories are never followed: they are
        moved aside to failed/ with a reason if they sit in new/)."""
        path = os.path.join(self._paths[src], name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        try:
            # Not synced: if a crash undoes the claim, the message is simply
            # back in the queue, and the send reserved in the state store
            # right after stays counted. Saves a directory sync per send.
            return self.move(name, src, "active", durable=False)
        except FileNotFoundError:
            return None

    def exists(self, state: str, name: str) -> bool:
        """Whether `state` holds `name` (a symlink counts: it is never followed)."""
        return os.path.lexists(os.path.join(self._paths[state], name))

    def mtime(self, state: str, name: str) -> float:
        """When the file last changed (a queued message: when it was queued)."""
        return os.lstat(os.path.join(self._paths[state], name)).st_mtime

    def owner(self, state: str, name: str) -> tuple[int, float]:
        """(uid, mtime) of a message's file: who queued it, and when."""
        st = os.lstat(os.path.join(self._paths[state], name))
        return st.st_uid, st.st_mtime

    def is_regular(self, state: str, name: str) -> bool:
        try:
            return stat.S_ISREG(os.lstat(os.path.join(self._paths[state], name)).st_mode)
        except FileNotFoundError:
            return False

    def read(self, state: str, name: str, limit: int) -> bytes:
        """Read a message without following symlinks; at most limit+1 bytes so an
        oversize file is detected without reading all of it."""
        return self.read_born(state, name, limit)[0]

    def read_born(self, state: str, name: str, limit: int) -> tuple[bytes, Born]:
        """`read()`, and what identifies the file for good (its Message-ID and
        Date are derived from it: outbox/stamp.py), from the same open."""
        fd = os.open(
            os.path.join(self._paths[state], name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
        )
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, "not a regular file", name)
            chunks = []
            left = limit + 1
            while left > 0:
                chunk = os.read(fd, min(left, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            return b"".join(chunks), Born(name, st.st_ino, st.st_mtime_ns)
        finally:
            os.close(fd)

    def lane(self, name: str, state: str) -> Lane:
        """The priority lane a queued message's headers ask for, from its first
        HEAD_BYTES (one read, no symlink followed): what the queue index files
        it under when it is taken in. Unreadable: "normal", and the send path
        meets the problem itself."""
        try:
            fd = os.open(
                os.path.join(self._paths[state], name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
            )
        except OSError:
            return "normal"
        try:
            return lane_of(os.read(fd, HEAD_BYTES))
        except OSError:
            return "normal"
        finally:
            os.close(fd)

    def fail(self, name: str, src: str, reason: str) -> Path:
        """Move a message to failed/ keeping its name, with a readable reason beside it.

        The reason is written first, so a failed message is never without one.
        """
        reason_path = self.dir("failed") / (name + REASON_SUFFIX)
        text = reason.rstrip("\n") + "\n"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(reason_path)
        _write_durable(reason_path, text.encode("utf-8", "replace"), 0o640)
        return self.move(name, src, "failed")

    def remove_sent(self, name: str) -> None:
        """The send is recorded in the state store: the file may go.

        Not synced: should a crash undo the unlink, start-up recovery finds the
        file in active/ with its send recorded and removes it without sending.
        """
        os.unlink(os.path.join(self._paths["active"], name))

    def cancel(self, name: str) -> State:
        """Cancel a queued, deferred, scheduled or held message. Returns the state it was in.

        The rename is the arbiter: if the daemon claims the message at the same
        moment, exactly one of the two renames wins, and a claimed message is
        never cancelled.
        """
        for src in CANCELLABLE:
            try:
                self.move(name, src, "cancelled")
            except FileNotFoundError:
                continue
            return src
        raise FileNotFoundError(errno.ENOENT, f"no queued message {name}", name)

    def retry(self, name: str) -> State:
        """Put a failed, deferred, held or cancelled message back in the queue."""
        for src in RETRYABLE:
            try:
                self.move(name, src, "new")
            except FileNotFoundError:
                continue
            if src == "failed":
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.dir("failed") / (name + REASON_SUFFIX))
            return src
        raise FileNotFoundError(errno.ENOENT, f"no such message {name}", name)

    def hold(self, name: str) -> State:
        """Park a queued, deferred or scheduled message in hold/ for a person (`queue
        hold`); returns the state it was in. Like cancel, the rename decides
        a race with the daemon's claim."""
        for src in HOLDABLE:
            try:
                self.move(name, src, HOLD)
            except FileNotFoundError:
                continue
            return src
        raise FileNotFoundError(
            errno.ENOENT, f"no queued, deferred or scheduled message {name}", name
        )

    def release(self, name: str) -> State:
        """Put a held message back in the queue (hold/ -> new/: the daemon sees
        it at once)."""
        self.move(name, HOLD, NEW)
        return HOLD

    def probe_writable(self) -> None:
        """Raise unless the spool takes a small durable write (after ENOSPC, say).

        4 KiB, not one byte: a nearly full filesystem can take a tiny write and
        still fail the next message.
        """
        path = self.dir("tmp") / _PROBE_NAME
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        try:
            write_new(path, b"x" * 4096, 0o600)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)

    # -- producers ----------------------------------------------------------------

    def submit(self, data: bytes, name: str | None = None) -> str:
        """Queue a message as producers must: write tmp/NAME, fsync, rename to new/NAME."""
        if name is None:
            name = new_queue_id()
        tmp = self.dir("tmp") / name
        write_new(tmp, data, 0o640)
        # 0640 whatever the caller's umask: in the setgid tmp/ the file's
        # group is exactmaild, which is how the daemon (and nobody else) reads it.
        os.chmod(tmp, 0o640)
        target = self.dir("new") / name
        os.rename(tmp, target)
        # tmp/ needs no fsync: the entry that must survive is the one in new/.
        fsync_entry(self.dir("new"), target)
        return name

    # -- listing ---------------------------------------------------------------------

    def entries(self, states: tuple[State, ...] = STATES) -> Iterator[Entry]:
        for state in states:
            try:
                it = os.scandir(self.dir(state))
            except FileNotFoundError:
                continue  # a fresh install: the daemon creates the state dirs at start
            with it:
                for e in it:
                    if not valid_name(e.name):
                        continue
                    try:
                        st = e.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    yield Entry(e.name, state, Path(e.path), st.st_size, st.st_mtime)

    def find(self, name: str) -> Entry | None:
        if not valid_name(name):
            return None
        for state in STATES:
            p = self.dir(state) / name
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                continue
            return Entry(name, state, p, st.st_size, st.st_mtime)
        return None

    def reason(self, name: str) -> str | None:
        try:
            return (self.dir("failed") / (name + REASON_SUFFIX)).read_text("utf-8", "replace")
        except FileNotFoundError:
            return None

    def count(self, state: str) -> int:
        n = 0
        with os.scandir(self.dir(state)) as it:
            for e in it:
                if valid_name(e.name):
                    n += 1
        return n

    def names(self, state: str) -> list[str]:
        with os.scandir(self.dir(state)) as it:
            return sorted(e.name for e in it if valid_name(e.name))


def new_queue_id(now: float | None = None) -> str:
    """A sortable, unique queue id: UTC time, then pid and random bits."""
    t = time.time() if now is None else now
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(t))
    return f"{stamp}.{int((t % 1) * 1e6):06d}.{os.getpid()}.{os.urandom(4).hex()}"
