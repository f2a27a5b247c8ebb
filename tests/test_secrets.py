"""Tests for exactmaild.auth.secrets: where secrets come from, refusals, atomic writes."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from exactmaild.auth import secrets
from exactmaild.auth.secrets import SecretError, read_secret, secret_source, write_secret
from exactmaild.core.errors import EX_CONFIG

SECRET = "s3cret-Value"
IS_ROOT = os.geteuid() == 0


@pytest.fixture(autouse=True)
def no_credentials_directory(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    yield


def make(path: Path, content: str | bytes, mode: int = 0o600) -> Path:
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("abc", "abc"),
        ("abc\n", "abc"),
        ("abc\r\n", "abc"),
        ("abc\n\n", "abc\n"),  # only one newline is the editor's
        (" spaced pass \n", " spaced pass "),
        ("pässwörd\n", "pässwörd"),
    ],
)
def test_read_strips_one_trailing_newline(tmp_path: Path, content: str, expected: str) -> None:
    path = make(tmp_path / "password", content)
    assert read_secret(path, "password", what="the password") == expected


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o606, 0o610])
def test_group_or_world_access_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = make(tmp_path / "password", SECRET, mode)
    with pytest.raises(SecretError) as info:
        read_secret(path, "password", what="the password")
    message = str(info.value)
    assert f"chmod 600 {path}" in message and "chown " in message
    assert f"{mode:04o}" in message and "the password" in message
    assert SECRET not in message and SECRET not in repr(info.value)
    assert info.value.exit_code == EX_CONFIG
    assert info.value.path == path


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_owner_only_modes_are_accepted(tmp_path: Path, mode: int) -> None:
    path = make(tmp_path / "password", SECRET, mode)
    assert read_secret(path, "password", what="the password") == SECRET


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: make(p, ""), "is empty"),
        (lambda p: make(p, "\n"), "is empty"),
        (lambda p: make(p, b"\xff\xfe" + SECRET.encode()), "not UTF-8"),
        (lambda p: make(p, "x" * (secrets.MAX_SECRET_BYTES + 1)), "larger than"),
        (lambda p: p.mkdir(), "not a regular file"),
        (lambda p: os.mkfifo(p, 0o600), "not a regular file"),  # must not block
    ],
)
def test_unusable_files_give_clear_messages(tmp_path: Path, setup: object, message: str) -> None:
    path = tmp_path / "refresh_token"
    setup(path)  # type: ignore[operator]
    with pytest.raises(SecretError) as info:
        read_secret(path, "refresh_token", what="the OAuth2 refresh token")
    text = str(info.value)
    assert message in text and str(path) in text and "the OAuth2 refresh token" in text
    assert SECRET not in text


@pytest.mark.skipif(IS_ROOT, reason="root reads any file")
def test_unreadable_file_names_the_user_and_fix(tmp_path: Path) -> None:
    path = make(tmp_path / "password", SECRET, 0o000)
    with pytest.raises(SecretError, match="cannot be read by user"):
        read_secret(path, "password", what="the password")


def test_credentials_directory_wins_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    # systemd owns the credential's protection: its mode is not checked.
    make(creds / "password", "from-systemd\n", 0o440)
    path = make(tmp_path / "password", "from-file")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert read_secret(path, "password", what="the password") == "from-systemd"
    assert read_secret(None, "password", what="the password") == "from-systemd"
    assert secret_source(path, "password") == f"systemd credential {creds / 'password'}"
    # A credential the unit did not pass falls back to the file.
    token = make(tmp_path / "token", "from-token-file")
    assert read_secret(token, "refresh_token", what="the token") == "from-token-file"


def test_no_file_and_no_credential_says_how_to_provide_one() -> None:
    with pytest.raises(SecretError) as info:
        read_secret(None, "client_secret", what="the OAuth2 client secret")
    assert "LoadCredential=client_secret:" in str(info.value)
    assert "client_secret" in secret_source(None, "client_secret")


@pytest.mark.parametrize("name", ["", "../password", "a/b", ".."])
def test_credential_names_cannot_leave_the_directory(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError):
        read_secret(tmp_path / "x", name, what="x")


# ---------------------------------------------------------------- write_secret


@pytest.mark.parametrize("value", ["new-token", "ends-with-newline\n", "ünïcode"])
def test_write_then_read_round_trips_with_mode_0600(tmp_path: Path, value: str) -> None:
    path = tmp_path / "refresh_token"
    old_umask = os.umask(0)  # even a permissive umask must not widen the mode
    try:
        write_secret(path, value)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_secret(path, "refresh_token", what="token") == value
    assert sorted(p.name for p in tmp_path.iterdir()) == ["refresh_token"]


def test_write_replaces_a_wider_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = make(tmp_path / "refresh_token", "old", 0o644)
    inode = path.stat().st_ino
    write_secret(path, "new")
    assert path.read_text() == "new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_ino != inode  # replaced by rename, not rewritten in place
    assert [p.name for p in tmp_path.iterdir()] == ["refresh_token"]


def test_temporary_is_created_exclusively_with_mode_0600(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, int, int]] = []
    real_open = os.open

    def spy(path: str | os.PathLike[str], flags: int, mode: int = 0o777, **kw: object) -> int:
        calls.append((os.fspath(path), flags, mode))
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", spy)
    write_secret(tmp_path / "token", "value")
    created = [(p, f, m) for p, f, m in calls if f & os.O_CREAT]
    assert len(created) == 1
    _, flags, mode = created[0]
    assert flags & os.O_EXCL and mode == 0o600
    assert Path(created[0][0]).parent == tmp_path  # same directory: rename stays atomic


def test_failed_rename_keeps_the_old_secret_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make(tmp_path / "refresh_token", "old-token")

    def broken_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(SecretError) as info:
        write_secret(path, "new-token")
    assert "No space left on device" in str(info.value) and "new-token" not in str(info.value)
    assert path.read_text() == "old-token"
    assert [p.name for p in tmp_path.iterdir()] == ["refresh_token"]


def test_write_into_a_missing_directory_is_a_secret_error(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="cannot write"):
        write_secret(tmp_path / "missing" / "token", "value")
