"""`run --daemon --pidfile P`: become a classic Unix daemon on hosts without systemd.

Under systemd none of this is used (Type=notify keeps the daemon in the
foreground). Elsewhere (SysV init scripts, a container, cron's @reboot) the
daemon detaches with python-daemon's `daemon.DaemonContext` (PEP 3143) and
guards its single instance with a pidfile of our own.

Why not `daemon.pidfile.TimeoutPIDLockFile`: it is built on the `lockfile`
package, whose lock is the *existence* of a file. After a crash, a SIGKILL
or a power cut the file stays behind and every later start waits, then
fails, until someone deletes it by hand. Here the lock is an
``fcntl.flock(LOCK_EX | LOCK_NB)`` on the pidfile itself: the kernel drops it
when the process dies, however it dies, so a leftover file is harmless (the
next start takes the lock and overwrites the pid) and a live daemon's file
cannot be taken over.

Order of events in `detach()`, and why:

1. the pidfile is opened and locked *before* forking, while stderr is still
   the terminal, so a second start is refused with a readable message
   (`PidFileLocked`, exit code 75, EX_TEMPFAIL) instead of dying silently
   in the background after its parent has already reported success;
2. `DaemonContext.open()` forks twice, setsid()s, chdirs, sets the umask and
   closes every descriptor except ``keep_fds`` and the pidfile's (the flock
   belongs to the open file description, which the forks share, so the lock
   carries over to the final process while the parents exit with os._exit);
3. the final pid is written into the already-locked file;
4. at exit (normal return, SystemExit from the SIGTERM handler, or an
   explicit `PidFile.release()`) the file is unlinked, then closed.

After SIGKILL step 4 does not happen; the file stays with a stale pid but
no lock, and the next start proceeds.

The parent returns exit status 0 as soon as the first fork has happened,
before the daemon wrote its pid; a script that needs the pid should poll the
file (it is written within milliseconds).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import daemon

from exactmaild.core.errors import EX_CANTCREAT, ExactmailError, TemporaryFailure

__all__ = ["PidFile", "PidFileError", "PidFileLocked", "detach"]


class PidFileLocked(TemporaryFailure):
    """Another exactmaild holds the pidfile's lock: it is already running.

    Exit code 75 (EX_TEMPFAIL): trying again after that instance stops works.
    """

    def __init__(self, path: Path, holder: int | None) -> None:
        self.path = path
        self.holder = holder
        who = f"pid {holder}" if holder is not None else "another process"
        super().__init__(
            f"{path}: already locked by {who}: exactmaild is already running "
            "with this pidfile (stop it first, or use another --pidfile)"
        )


class PidFileError(ExactmailError):
    """The pidfile cannot be created or locked at all (directory, permissions)."""

    exit_code = EX_CANTCREAT


class PidFile:
    """An flock'd pidfile; also the ``pidfile`` context manager DaemonContext expects.

    `acquire()` takes the lock (refusing with `PidFileLocked`), `write_pid()`
    records the daemon's pid, `release()` unlinks and closes. Entering the
    context acquires (if not done yet) and writes the current pid; leaving it
    releases. Every step is idempotent.
    """

    def __init__(self, path: Path) -> None:
        # Absolute now: the daemon chdir()s before the file is removed at exit.
        self.path = Path(os.path.abspath(path))
        self._fd: int | None = None
        self._owner: int | None = None

    @property
    def locked(self) -> bool:
        """True while this process holds the lock."""
        return self._fd is not None

    def fileno(self) -> int:
        """The locked descriptor (for DaemonContext's files_preserve)."""
        if self._fd is None:
            raise ValueError(f"{self.path}: pidfile not acquired")
        return self._fd

    def acquire(self) -> None:
        """Open and lock the pidfile, or raise `PidFileLocked` / `PidFileError`."""
        if self._fd is not None:
            return
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise PidFileError(f"{self.path}: cannot open pidfile: {exc.strerror}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_pid(fd)
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise PidFileLocked(self.path, holder) from exc
                raise PidFileError(f"{self.path}: cannot lock pidfile: {exc.strerror}") from exc
            # Between our open() and flock() the previous owner may have
            # unlinked the file on its way out; then we hold a lock on an
            # orphaned inode while a third start could lock a new file at
            # the same path. Only a lock on the file the path names counts.
            if _same_file(fd, self.path):
                self._fd = fd
                return
            os.close(fd)

    def write_pid(self, pid: int | None = None) -> None:
        """Replace the file's content with ``pid`` (default: this process)."""
        fd = self.fileno()
        pid = os.getpid() if pid is None else pid
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{pid}\n".encode("ascii"), 0)
        self._owner = pid

    def release(self) -> None:
        """Unlink the file (if it is still ours) and drop the lock."""
        fd = self._fd
        if fd is None:
            return
        # A child forked by the daemon that runs atexit handlers inherits
        # this object: only the process whose pid is in the file removes it.
        if self._owner is None or self._owner == os.getpid():
            if _same_file(fd, self.path):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
            # Unlink before close: once the lock is gone a new start may
            # already have the (recreated) path.
            self._fd = None
            os.close(fd)

    def __enter__(self) -> PidFile:
        self.acquire()
        self.write_pid()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode("ascii", "replace").strip())
    except (OSError, ValueError):
        return None  # empty (holder not yet detached) or garbage


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def detach(
    pidfile: Path,
    *,
    keep_fds: Sequence[int] = (),
    working_dir: Path = Path("/"),
    umask: int = 0o027,
    stdout: IO[Any] | None = None,
    stderr: IO[Any] | None = None,
) -> PidFile:
    """Lock ``pidfile``, detach into the background, write the daemon's pid.

    Returns in the daemon process (the calling process and its first child
    have exited with status 0) with the pidfile locked and holding the
    daemon's pid; it is removed when the daemon exits (atexit, via
    DaemonContext.close) or on `PidFile.release()`.

    ``keep_fds`` survive the close-everything step (e.g. an already bound
    metrics socket); ``stdout``/``stderr`` default to /dev/null, so pass a
    log file if logs should go somewhere other than syslog/a file handler.
    The umask 0027 matches the systemd unit's UMask=.

    Raises `PidFileLocked` (exit 75) when another process holds the lock and
    `PidFileError` (exit 73) when the file cannot be created, both before
    anything has forked, so the message reaches the caller's terminal.
    """
    pid_file = PidFile(pidfile)
    pid_file.acquire()
    context = daemon.DaemonContext(
        working_directory=str(working_dir),
        umask=umask,
        pidfile=pid_file,
        files_preserve=[*keep_fds, pid_file.fileno()],
        # The user asked for --daemon: detach even when the parent is init
        # (python-daemon's auto-detection would silently stay in the foreground).
        detach_process=True,
        stdout=stdout,
        stderr=stderr,
    )
    try:
        context.open()  # DaemonContext enters pid_file: write_pid() in the daemon
    except BaseException:
        pid_file.release()
        raise
    return pid_file
