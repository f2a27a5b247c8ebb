"""Durable file writes: the two primitives every "nothing is lost" promise rests on.

`write_new` creates a file that did not exist (never overwriting, never
through a symlink) and returns only once its data is on disk; `fsync_dir`
makes a rename or a creation in a directory survive a power cut. The spool
and the Maildir delivery both build on them.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_entry(directory: Path, entry: Path) -> None:
    """Make a creation or rename of `entry` in `directory` durable.

    Like fsync_dir, for a caller that may not open the directory: a producer
    has only write and search on the spool's tmp/ and new/ (no listing), so
    it cannot fsync them. It syncs the filesystem instead, through the entry
    it owns: slower, as durable.
    """
    try:
        fsync_dir(directory)
    except PermissionError:
        fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            _syncfs(fd)
        finally:
            os.close(fd)


def _syncfs(fd: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    syncfs = getattr(libc, "syncfs", None)
    if syncfs is None:  # not glibc: every filesystem, then
        os.sync()
        return
    if syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def write_new(path: Path | str, data: bytes, mode: int, *, dir_fd: int | None = None) -> None:
    """Create `path` with `data`, fsync'd; on any failure leave nothing behind.

    With `dir_fd`, `path` is a name in that open directory: the directory is
    the one opened, whatever its path points at by now (no symlink followed).
    """
    fd = os.open(
        path,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        mode,
        dir_fd=dir_fd,
    )
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path, dir_fd=dir_fd)
        raise
    os.close(fd)
