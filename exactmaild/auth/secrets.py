"""Secrets: the password, OAuth2 client secret and refresh token, read at use time.

This module owns where a secret comes from and how it is kept on disk:

- `$CREDENTIALS_DIRECTORY/<credential>` first (systemd `LoadCredential=`),
  so a unit can hand the daemon its password without a file in /etc;
- else the `*_file` path from the configuration, refused when other users
  could read it;
- `write_secret()` replaces a file atomically with mode 0600 from the moment
  it exists, for OAuth2 providers that rotate the refresh token.

A secret's text never appears in a message, a log line or a repr: every
error names the file and the fix, never the content.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import stat
from pathlib import Path

from exactmaild.core.errors import EX_CONFIG, ExactmailError

# The names a unit passes to LoadCredential=NAME:PATH; the config's
# `password_file`, `refresh_token_file` and `client_secret_file` map onto them.
PASSWORD = "password"
REFRESH_TOKEN = "refresh_token"
CLIENT_SECRET = "client_secret"

# A password or token is a few KiB at most (Microsoft refresh tokens are the
# largest seen, under 4 KiB). Anything much bigger is the wrong file, and
# reading it whole would only waste memory.
MAX_SECRET_BYTES = 64 * 1024


class SecretError(ExactmailError):
    """A secret cannot be read or written. Fix the file (or the unit): exit 78."""

    exit_code = EX_CONFIG

    def __init__(self, message: str, path: Path | None = None) -> None:
        self.path = path
        super().__init__(message)


def _daemon_user() -> str:
    """Name of the user this process runs as, for the `chown` in error messages."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid without a passwd entry (containers)
        return str(os.geteuid())


def _credential_path(credential: str) -> Path | None:
    """`$CREDENTIALS_DIRECTORY/credential` when systemd passed that credential, else None."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return None
    candidate = Path(directory) / credential
    return candidate if candidate.is_file() else None


def _check_credential_name(credential: str) -> None:
    # The name becomes a path component: never let it climb out of the directory.
    if not credential or "/" in credential or credential in (".", ".."):
        raise ValueError(f"bad credential name {credential!r}")


def secret_source(path: Path | None, credential: str) -> str:
    """Where `read_secret(path, credential)` would read from now, for `check-config`."""
    _check_credential_name(credential)
    from_systemd = _credential_path(credential)
    if from_systemd is not None:
        return f"systemd credential {from_systemd}"
    if path is not None:
        return f"{path} (unless $CREDENTIALS_DIRECTORY/{credential} is set at run time)"
    return (
        f"$CREDENTIALS_DIRECTORY/{credential} only "
        f"(the unit must have LoadCredential={credential}:/path/to/file)"
    )


def read_secret(path: Path | None, credential: str, *, what: str) -> str:
    """Read one secret: `$CREDENTIALS_DIRECTORY/credential` if present, else `path`.

    `what` names the secret in messages ("the account password"). One trailing
    newline is stripped (editors add one). Raises `SecretError` naming the file
    and the fix when the secret is missing, unreadable, empty, not UTF-8 or
    readable by other users.
    """
    _check_credential_name(credential)
    from_systemd = _credential_path(credential)
    if from_systemd is not None:
        # systemd creates the credentials directory readable by the service
        # alone (and on a non-swappable file system); the files' own mode
        # is its business, so no permission check here.
        return _read(from_systemd, what, check_mode=False)
    if path is None:
        raise SecretError(
            f"no file for {what}: set its *_file key in the configuration, or give the "
            f"service the systemd credential {credential!r} "
            f"(LoadCredential={credential}:/path/to/file)"
        )
    return _read(path, what, check_mode=True)


def _read(path: Path, what: str, *, check_mode: bool) -> str:
    try:
        # O_NONBLOCK: opening a FIFO put in the secret's place must not hang
        # the daemon; it is refused below as not a regular file.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SecretError(f"{what}: {path} does not exist", path) from None
    except PermissionError:
        raise SecretError(
            f"{what}: {path} cannot be read by user {_daemon_user()}: "
            f"run `chown {_daemon_user()} {path}` and `chmod 600 {path}`",
            path,
        ) from None
    except OSError as exc:
        raise SecretError(f"{what}: cannot open {path}: {exc.strerror}", path) from None
    try:
        # Check the file we actually opened (fstat), not the path, so a swap
        # between check and read cannot slip a wider-readable file in.
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SecretError(f"{what}: {path} is not a regular file", path)
        if check_mode and info.st_mode & 0o077:
            user = _daemon_user()
            raise SecretError(
                f"{what}: {path} can be read by other users "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); a secret must be readable by "
                f"the daemon's user alone: run `chmod 600 {path}` and `chown {user} {path}`",
                path,
            )
        data = _read_all(fd, MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise SecretError(f"{what}: cannot read {path}: {exc.strerror}", path) from None
    finally:
        os.close(fd)
    if len(data) > MAX_SECRET_BYTES:
        raise SecretError(
            f"{what}: {path} is larger than {MAX_SECRET_BYTES // 1024} KiB: is it the right file?",
            path,
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        # Deliberately no detail from the exception: it would quote the bytes.
        raise SecretError(f"{what}: {path} is not UTF-8 text", path) from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise SecretError(f"{what}: {path} is empty", path)
    return text


def _read_all(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(fd, limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def write_secret(path: Path, value: str) -> None:
    """Replace `path` with `value` (plus a newline) atomically, mode 0600.

    Used when an OAuth2 provider rotates the refresh token: a crash at any
    moment leaves either the old token or the new one, never a torn file,
    and the file is never readable by others, not even briefly (it is
    created 0600 rather than chmod-ed afterwards).
    """
    path = Path(path)
    directory = path.parent
    data = (value + "\n").encode("utf-8")
    fd = -1
    tmp = path
    for _attempt in range(10):
        tmp = directory / f".{path.name}.{os.urandom(6).hex()}.tmp"
        try:
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
            )
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise SecretError(
                f"cannot write {path}: cannot create a file in {directory}: {exc.strerror}",
                path,
            ) from None
    if fd < 0:
        raise SecretError(f"cannot write {path}: no free temporary name in {directory}", path)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise SecretError(f"cannot write {path}: {exc.strerror}", path) from None
    # Make the rename itself durable: without this a power cut can bring the
    # old token back, which the provider has already invalidated.
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass  # some file systems refuse fsync on a directory; the data is written
    finally:
        os.close(dir_fd)
