"""check-config checks what `run` checks before it starts: each case that
stops `run` (exit 78) now stops check-config too, as a `FILE:LINE: key:
problem` line, where it used to say OK."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.helpers import exactmaild

CONFIG = """\
timezone: Europe/London
account:
  address: reception@practice.example
  auth:
    method: password
    password_file: {tmp}/password
incoming: none
outgoing: {{host: 127.0.0.1, port: 2525, security: none}}
spool: {{dir: {tmp}/spool}}
state_dir: {tmp}/state
metrics: {{listen: "off"}}
"""

OAUTH = """\
timezone: Europe/London
account:
  address: reception@practice.example
  auth:
    method: oauth2
    provider: microsoft365
    client_id: app-id
    refresh_token_file: {tmp}/state/refresh_token
incoming: none
spool: {{dir: {tmp}/spool}}
state_dir: {tmp}/state
metrics: {{listen: "off"}}
"""


def _config(tmp: Path, text: str = CONFIG) -> Path:
    path = tmp / "exactmaild.yaml"
    path.write_text(text.format(tmp=tmp))
    return path


def _password(tmp: Path, text: str = "s3cret\n", mode: int = 0o600) -> None:
    path = tmp / "password"
    path.write_text(text)
    path.chmod(mode)


def _problem_line(err: str, cfg: Path, line: int, key: str) -> str:
    match = re.search(rf"^{re.escape(str(cfg))}:{line}: {re.escape(key)}: (.*)$", err, re.M)
    assert match, err
    return match.group(1)


def test_a_good_setup_passes_and_says_as_whom(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    _password(tmp_path)
    r = exactmaild("check-config", "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    assert b"checked: secrets and directories as user " in r.stdout


@pytest.mark.parametrize(
    ("setup", "problem"),
    [
        (lambda tmp: None, "does not exist"),
        (lambda tmp: _password(tmp, mode=0o644), "can be read by other users (mode 0644)"),
        (lambda tmp: _password(tmp, text=""), "is empty"),
    ],
    ids=["missing", "readable-by-others", "empty"],
)
def test_secret_file_problems_stop_check_config_as_they_stop_run(
    tmp_path: Path, setup: object, problem: str
) -> None:
    cfg = _config(tmp_path)
    setup(tmp_path)  # type: ignore[operator]
    checked = exactmaild("check-config", "-c", str(cfg))
    err = checked.stderr.decode()
    assert checked.returncode == 78, err
    assert problem in _problem_line(err, cfg, 6, "account.auth.password_file")
    assert b"checked:" not in checked.stdout
    # run refuses on the same line, before it takes the state directory.
    ran = exactmaild("run", "-c", str(cfg))
    assert ran.returncode == 78, ran.stderr
    assert problem in _problem_line(ran.stderr.decode(), cfg, 6, "account.auth.password_file")


def test_oauth2_without_a_refresh_token_says_to_authorize(tmp_path: Path) -> None:
    cfg = _config(tmp_path, OAUTH)
    r = exactmaild("check-config", "-c", str(cfg))
    err = r.stderr.decode()
    assert r.returncode == 78, err
    assert "run `exactmaild authorize`" in _problem_line(
        err, cfg, 8, "account.auth.refresh_token_file"
    )
    (tmp_path / "state").mkdir()
    token = tmp_path / "state" / "refresh_token"
    token.write_text("token\n")
    token.chmod(0o600)
    r = exactmaild("check-config", "-c", str(cfg))
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="checking as another user needs root")
def test_directories_are_checked_as_the_service_user(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    _password(tmp_path)
    tmp_path.chmod(0o755)  # searchable by nobody, not writable
    (tmp_path / "state").mkdir(mode=0o700)  # root's alone
    r = exactmaild("check-config", "--user", "nobody", "-c", str(cfg))
    err = r.stderr.decode()
    assert r.returncode == 78, err
    state = _problem_line(err, cfg, 10, "state_dir")
    assert "not writable by user nobody" in state and "mode 0700" in state
    spool = _problem_line(err, cfg, 9, "spool.dir")
    assert "does not exist and user nobody" in spool and "install -d -o nobody" in spool
    # The password file is root's: nobody could not read it either.
    assert "cannot be read by user nobody" in _problem_line(
        err, cfg, 6, "account.auth.password_file"
    )
    # As this user (root), the same setup is fine.
    assert exactmaild("check-config", "-c", str(cfg)).returncode == 0


def test_syntax_only_checks_the_file_alone(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    r = exactmaild("check-config", "--syntax", "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    assert b"checked: the file only" in r.stdout
