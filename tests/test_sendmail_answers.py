"""The sendmail front answers --help, -bp and the modes it refuses at once,
without waiting for a message on stdin, and says so when it does wait on a
terminal."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exactmaild.outbox.spool import Spool
from tests.fixtures.smtp import SmtpServer
from tests.helpers import REPO, exactmaild, message, write_config


def _without_closing_stdin(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """Run with stdin an open pipe nobody writes to: a command that reads it hangs."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "exactmaild", "sendmail", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, **env},
    )
    try:
        proc.wait(timeout=20)
        assert proc.stdout is not None and proc.stderr is not None
        out, err = proc.stdout.read(), proc.stderr.read()
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"sendmail {' '.join(args)} waited for stdin")
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
    return proc.returncode, out.decode(), err.decode()


def test_help_and_bp_answer_without_reading_stdin(tmp_path: Path, smtp_server: SmtpServer) -> None:
    cfg = write_config(tmp_path, smtp_server)
    env = {"EXACTMAILD_CONFIG": str(cfg)}
    code, out, _ = _without_closing_stdin("--help", env=env)
    assert code == 0 and "usage: exactmaild-sendmail" in out and "-bp" in out
    Spool(tmp_path / "spool")
    qid = exactmaild("submit", "-c", str(cfg), input=message(1)).stdout.decode().strip()
    code, out, err = _without_closing_stdin("-bp", env=env)
    assert code == 0, err
    assert qid in out and "queued" in out
    code, _, err = _without_closing_stdin("-bs", env=env)
    assert code == 64 and "-bs is not supported (SMTP on stdin/stdout" in err


def test_reading_from_a_terminal_says_so(tmp_path: Path, smtp_server: SmtpServer) -> None:
    cfg = write_config(tmp_path, smtp_server)
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "exactmaild", "sendmail", "-t"],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "EXACTMAILD_CONFIG": str(cfg)},
    )
    os.close(slave)
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 20
        seen = b""
        while b"Ctrl-D" not in seen and time.monotonic() < deadline:
            if select.select([proc.stderr], [], [], 0.5)[0]:
                seen += os.read(proc.stderr.fileno(), 4096)
        assert b"reading the message from the terminal" in seen, seen
        os.write(master, b"\x04")  # end of input on an empty message
        assert proc.wait(timeout=20) == 65
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
