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

`detach()` alone returns exit status 0 in the parent as soon as the first
fork has happened. `run --daemon` uses `detach_and_wait()` instead: the
command line forks once more before detaching and keeps a pipe to the
daemon, which reports through `StartReport` that it is ready (its pid) or
that it failed (its exit code and message). The command line waits for that
word and exits with the daemon's code, so an init script or a person sees a
daemon that could not start (a secret file other users can read, a state
directory already in use) as a failure, on the terminal, as `run` without
`--daemon` would show it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import daemon

from exactmaild.core.errors import EX_CANTCREAT, EX_SOFTWARE, ExactmailError, TemporaryFailure

__all__ = [
    "PidFile",
    "PidFileError",
    "PidFileLocked",
    "StartFailed",
    "StartReport",
    "detach",
    "detach_and_wait",
]

# How long the command line waits for the daemon's word; a start that takes
# longer (a huge spool to recover) goes on, and the command says so.
START_TIMEOUT = 120.0


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

    def forget(self) -> None:
        """Close this process's descriptor, leaving the file and the lock (held
        through the same open file by the daemon) alone: the waiting parent's part."""
        fd, self._fd = self._fd, None
        if fd is not None:
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
    _daemonize(pid_file, keep_fds, working_dir, umask, stdout, stderr)
    return pid_file


def _daemonize(
    pid_file: PidFile,
    keep_fds: Sequence[int],
    working_dir: Path,
    umask: int,
    stdout: IO[Any] | None,
    stderr: IO[Any] | None,
) -> None:
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


class StartFailed(ExactmailError):
    """The detached daemon did not start; carries its exit code and its message."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class StartReport:
    """The daemon's end of the pipe to the command line that waits for it.

    Exactly one word goes through: `ready()` once the daemon serves, or
    `failed()` with the exit code and message of what stopped it. A daemon
    that dies before either closes the pipe, which the command line reads as
    a failure too.
    """

    def __init__(self, fd: int, pid_file: PidFile) -> None:
        self._fd: int | None = fd
        self.pid_file = pid_file

    def ready(self) -> None:
        self._say(f"ready {os.getpid()}")

    def failed(self, exit_code: int, message: str) -> None:
        self._say(f"failed {exit_code} {message}")

    def _say(self, word: str) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):  # the command line was interrupted: nobody waits
            os.write(fd, word.encode("utf-8", "replace")[:60000])
        os.close(fd)


def detach_and_wait(
    pidfile: Path,
    *,
    working_dir: Path = Path("/"),
    umask: int = 0o027,
    timeout: float = START_TIMEOUT,
    log_hint: str = "",
) -> StartReport | int:
    """Detach as `detach()` does, the caller waiting for the daemon's word.

    In the daemon, returns its `StartReport` (call `ready()` or `failed()`).
    In the calling process, returns the daemon's pid once it is ready, or
    raises `StartFailed` with the daemon's exit code and message (or
    EX_SOFTWARE if it died without a word; `log_hint` says where to look),
    or `TemporaryFailure` if it has not answered within `timeout`.
    `PidFileLocked` and `PidFileError` are raised before any fork.
    """
    pid_file = PidFile(pidfile)
    pid_file.acquire()
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:
        os.close(read_end)
        try:
            _daemonize(pid_file, [write_end], working_dir, umask, None, None)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.write(write_end, f"failed {EX_SOFTWARE} cannot detach: {exc}".encode())
            os._exit(EX_SOFTWARE)
        return StartReport(write_end, pid_file)
    os.close(write_end)
    pid_file.forget()
    # The first child exits as soon as it has forked again (python-daemon's
    # double fork): reap it, then wait for the daemon itself.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(child, 0)
    try:
        word = _read_word(read_end, timeout)
    finally:
        os.close(read_end)
    if word is None:
        raise TemporaryFailure(
            f"the daemon has not said it is ready after {timeout:g} s; it may still be "
            f"starting{log_hint}"
        )
    kind, _, rest = word.partition(" ")
    if kind == "ready":
        return int(rest)
    if kind == "failed":
        code, _, message = rest.partition(" ")
        raise StartFailed(message, int(code) if code.isdigit() else EX_SOFTWARE)
    raise StartFailed(f"the daemon exited while starting{log_hint}", EX_SOFTWARE)


def _read_word(fd: int, timeout: float) -> str | None:
    """Everything written to `fd` until it closes, or None at the timeout."""
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        readable, _, _ = select.select([fd], [], [], left)
        if not readable:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks).decode("utf-8", "replace")
        chunks.append(chunk)
