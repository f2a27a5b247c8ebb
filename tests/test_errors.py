"""The error tree: each class has its exit code, OSErrors map into it, and no
module returns or exits with a bare number instead of a named constant."""

from __future__ import annotations

import ast
import errno
import importlib
import pkgutil
from pathlib import Path

import pytest

import exactmaild
from exactmaild.auth.authorize import AuthorizationFailed
from exactmaild.auth.secrets import SecretError
from exactmaild.core import errors
from exactmaild.core.errors import (
    EX_CANTCREAT,
    EX_CONFIG,
    EX_DATAERR,
    EX_IOERR,
    EX_NOINPUT,
    EX_NOPERM,
    EX_SOFTWARE,
    EX_TEMPFAIL,
    EX_UNAVAILABLE,
    EX_USAGE,
    AccountFailure,
    BadMessage,
    ConfigError,
    ExactmailError,
    LocalIOFailure,
    MissingFile,
    NoPermission,
    NotAvailable,
    PermanentFailure,
    TemporaryFailure,
    UnknownOutcome,
    UsageError,
    from_os_error,
)
from exactmaild.daemon.control import AlreadyRunning
from exactmaild.daemon.detach import PidFileError, PidFileLocked
from exactmaild.receive.mailbox import LoginFailure, MailboxFailure
from exactmaild.receive.receiver import DeliveryFailure
from tests.fixtures.smtp import SmtpServer
from tests.helpers import exactmaild as run_exactmaild
from tests.helpers import message, write_config

PACKAGE = Path(exactmaild.__file__).parent

EXIT_CODES: list[tuple[type[ExactmailError], int]] = [
    (ExactmailError, EX_SOFTWARE),
    (UsageError, EX_USAGE),
    (ConfigError, EX_CONFIG),
    (TemporaryFailure, EX_TEMPFAIL),
    (AccountFailure, EX_TEMPFAIL),
    (UnknownOutcome, EX_TEMPFAIL),
    (PermanentFailure, EX_UNAVAILABLE),
    (BadMessage, EX_DATAERR),
    (NotAvailable, EX_UNAVAILABLE),
    (LocalIOFailure, EX_IOERR),
    (MissingFile, EX_NOINPUT),
    (NoPermission, EX_NOPERM),
    # Raised elsewhere, on the same tree:
    (SecretError, EX_CONFIG),
    (AuthorizationFailed, EX_UNAVAILABLE),
    (AlreadyRunning, EX_TEMPFAIL),
    (PidFileLocked, EX_TEMPFAIL),
    (PidFileError, EX_CANTCREAT),
    (MailboxFailure, EX_TEMPFAIL),
    (LoginFailure, EX_TEMPFAIL),
    (DeliveryFailure, EX_TEMPFAIL),
]


@pytest.mark.parametrize(("cls", "code"), EXIT_CODES, ids=[c.__name__ for c, _ in EXIT_CODES])
def test_each_error_class_has_its_exit_code(cls: type[ExactmailError], code: int) -> None:
    assert cls.exit_code == code


def _all_subclasses(cls: type[ExactmailError]) -> set[type[ExactmailError]]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | _all_subclasses(sub)
    return found


def test_every_error_class_exits_with_a_named_code() -> None:
    for info in pkgutil.walk_packages([str(PACKAGE)], "exactmaild."):
        if info.name != "exactmaild.__main__":
            importlib.import_module(info.name)
    named = {v for k, v in vars(errors).items() if k.startswith("EX_")}
    classes = _all_subclasses(ExactmailError) | {ExactmailError}
    unnamed = {c.__qualname__: c.exit_code for c in classes if c.exit_code not in named}
    assert not unnamed
    # Every class of the tree itself is in the table above.
    tree = {c for c in classes if c.__module__ == errors.__name__}
    assert tree <= {c for c, _ in EXIT_CODES}


def test_os_errors_map_into_the_tree_with_the_path_and_what_to_do(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "message.eml"
    with pytest.raises(FileNotFoundError) as info:
        missing.read_bytes()
    err = from_os_error(info.value)
    assert type(err) is MissingFile and err.exit_code == EX_NOINPUT
    assert err.path == missing and str(missing) in str(err) and "check the path" in str(err)

    with pytest.raises(IsADirectoryError) as isdir:
        tmp_path.read_bytes()
    err = from_os_error(isdir.value, "cannot read the message")
    assert type(err) is LocalIOFailure and err.exit_code == EX_IOERR
    assert str(err).startswith(f"cannot read the message: {tmp_path}: ")

    denied = from_os_error(PermissionError(errno.EACCES, "Permission denied", "/var/spool/x"))
    assert type(denied) is NoPermission and denied.exit_code == EX_NOPERM
    assert "/var/spool/x" in str(denied) and "exactmaild user" in str(denied)

    full = from_os_error(OSError(errno.ENOSPC, "No space left on device", "/var/spool/x/tmp/1"))
    assert type(full) is LocalIOFailure and "free some space" in str(full)


# -- no bare exit numbers --------------------------------------------------------------

# sysexits.h's range and 130 (Ctrl-C): the numbers a bare literal would be mistaken for.
_EXIT_RANGE = set(range(64, 79)) | {130}
_EXIT_CALLS = {"exit", "_exit", "SystemExit"}


def _bare(node: ast.expr | None, *, any_number: bool) -> int | None:
    """The int literal `node` is (or one branch of it is), if it looks like an exit status."""
    if isinstance(node, ast.IfExp):
        return _bare(node.body, any_number=False) or _bare(node.orelse, any_number=False)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        v = node.value
        if (any_number and 10 <= v <= 255) or v in _EXIT_RANGE:
            return v
    return None


def bare_exit_numbers(source: str, filename: str = "<source>") -> list[str]:
    """`return 75`, `sys.exit(66)`, `exit_code = 77`: each as "FILE:LINE: code"."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        value: int | None = None
        if isinstance(node, ast.Return):
            value = _bare(node.value, any_number=True)
        elif isinstance(node, ast.Call) and node.args:
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name in _EXIT_CALLS:
                value = _bare(node.args[0], any_number=True)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(getattr(t, "id", getattr(t, "attr", "")) == "exit_code" for t in targets):
                value = _bare(node.value, any_number=True)
        if value is not None:
            found.append(f"{filename}:{getattr(node, 'lineno', 0)}: {value}")
    return found


@pytest.mark.parametrize(
    "snippet",
    [
        "def f():\n    return 75\n",
        "def f(ok):\n    return 0 if ok else 69\n",
        "import sys\nsys.exit(66)\n",
        "raise SystemExit(78)\n",
        "class E(Exception):\n    exit_code = 77\n",
        "def f():\n    return 130\n",
    ],
)
def test_the_check_finds_bare_exit_numbers(snippet: str) -> None:
    assert bare_exit_numbers(snippet)


def test_the_check_leaves_named_codes_and_other_numbers_alone() -> None:
    ok = (
        "def f(ok):\n    return EX_OK if ok else EX_UNAVAILABLE\n"
        "def g(tls):\n    return 995 if tls else 110\n"
        "def h():\n    return 0\n"
        "sys.exit(main())\n"
    )
    assert bare_exit_numbers(ok) == []


def test_no_module_returns_or_exits_with_a_bare_number() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "errors.py" and path.parent.name == "core":
            continue  # where the numbers are named
        rel = str(path.relative_to(PACKAGE.parent))
        found += bare_exit_numbers(path.read_text(encoding="utf-8"), rel)
    assert found == [], "name these codes in exactmaild/core/errors.py"


# -- what the user sees ----------------------------------------------------------------


def test_missing_input_file_exits_66_naming_it(tmp_path: Path, smtp_server: SmtpServer) -> None:
    cfg = write_config(tmp_path, smtp_server)
    missing = tmp_path / "no-such-message.eml"
    r = run_exactmaild("submit", str(missing), "-c", str(cfg))
    err = r.stderr.decode()
    assert r.returncode == EX_NOINPUT, err
    assert str(missing) in err and "Traceback" not in err


def test_input_that_is_a_directory_exits_74(tmp_path: Path, smtp_server: SmtpServer) -> None:
    cfg = write_config(tmp_path, smtp_server)
    r = run_exactmaild("submit", str(tmp_path), "-c", str(cfg))
    err = r.stderr.decode()
    assert r.returncode == EX_IOERR, err
    assert str(tmp_path) in err and "Traceback" not in err


def test_unknown_queue_id_says_where_and_what_to_do(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    cfg = write_config(tmp_path, smtp_server)
    r = run_exactmaild("queue", "show", "nosuchid", "-c", str(cfg))
    err = r.stderr.decode()
    assert r.returncode == EX_UNAVAILABLE, err
    assert "nosuchid" in err and str(tmp_path / "spool") in err and "queue list" in err


def test_sendmail_unsupported_mode_is_a_usage_error(tmp_path: Path) -> None:
    r = run_exactmaild("sendmail", "-bs", input=message(1))
    err = r.stderr.decode()
    assert r.returncode == EX_USAGE, err
    assert "-bs is not supported" in err and "-t" in err


def test_sendmail_without_a_spool_is_a_temporary_failure(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    # The spool directory was never created: the caller should try again later.
    cfg = write_config(tmp_path, smtp_server)
    r = run_exactmaild("sendmail", "-t", input=message(1), env={"EXACTMAILD_CONFIG": str(cfg)})
    err = r.stderr.decode()
    assert r.returncode == EX_TEMPFAIL, err
    assert str(tmp_path / "spool") in err and "Traceback" not in err
