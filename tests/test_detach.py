"""exactmaild.daemon.detach: a real double-forked daemon guarded by an flock'd pidfile."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from exactmaild.core.errors import EX_CANTCREAT, EX_TEMPFAIL
from exactmaild.daemon.detach import PidFile, PidFileError, PidFileLocked

REPO = Path(__file__).resolve().parent.parent

# A tiny daemon: detaches, then sleeps until SIGTERM (DaemonContext maps it to
# SystemExit, so atexit removes the pidfile). It proves it runs detached by
# writing its pid, session id and working directory to a file (relative
# path: the daemon has chdir()ed to working_dir).
PROGRAM = """
import os, sys, time
from pathlib import Path
from exactmaild.daemon.detach import detach, PidFileLocked

try:
    pid_file = detach(Path(sys.argv[1]), keep_fds=[], working_dir=Path(sys.argv[2]))
except PidFileLocked as exc:
    print(f"exactmaild: {exc}", file=sys.stderr)
    sys.exit(exc.exit_code)
Path("facts.tmp").write_text(f"{os.getpid()} {os.getsid(0)} {os.getcwd()}")
os.rename("facts.tmp", "facts")
while True:
    time.sleep(0.1)
"""


def start(tmp_path: Path, pidfile: Path) -> subprocess.CompletedProcess[str]:
    program = tmp_path / "tinyd.py"
    program.write_text(PROGRAM)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # stdout/stderr are pipes: the daemon must close its copies (DaemonContext
    # redirects them to /dev/null) or run() would wait for it forever.
    return subprocess.run(
        [sys.executable, str(program), str(pidfile), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=20,
    )


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {predicate}")


def alive(pid: int) -> bool:
    """Running and not a zombie (the reaper may be slow in a container)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def read_pid(pidfile: Path) -> int | None:
    try:
        text = pidfile.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text else None


@pytest.mark.slow
def test_detach_refuses_second_start_and_removes_pidfile_on_sigterm(tmp_path: Path) -> None:
    pidfile = tmp_path / "run" / "exactmaild.pid"
    pidfile.parent.mkdir()

    first = start(tmp_path, pidfile)
    assert first.returncode == 0, first.stderr
    wait_for(lambda: read_pid(pidfile) is not None and (tmp_path / "facts").exists())
    pid = read_pid(pidfile)
    assert pid is not None
    facts_pid, sid, cwd = (tmp_path / "facts").read_text().split()
    assert int(facts_pid) == pid  # the pid written is the final daemon's
    # setsid() then a second fork: a session of its own, not its leader (so it
    # can never reacquire a controlling terminal).
    assert int(sid) not in (os.getsid(0), pid)
    assert cwd == str(tmp_path)  # working_dir
    assert alive(pid)

    second = start(tmp_path, pidfile)
    assert second.returncode == EX_TEMPFAIL
    assert "already running" in second.stderr
    assert str(pidfile) in second.stderr
    assert f"pid {pid}" in second.stderr
    assert read_pid(pidfile) == pid  # the refused start left the file alone

    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not pidfile.exists())
    wait_for(lambda: not alive(pid))


@pytest.mark.slow
def test_pidfile_left_by_a_killed_daemon_is_not_stale(tmp_path: Path) -> None:
    pidfile = tmp_path / "exactmaild.pid"
    assert start(tmp_path, pidfile).returncode == 0
    wait_for(lambda: read_pid(pidfile) is not None)
    pid = read_pid(pidfile)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid))
    assert pidfile.exists()  # SIGKILL: no cleanup ...

    third = start(tmp_path, pidfile)  # ... but no lock either: starts fine
    assert third.returncode == 0, third.stderr
    wait_for(lambda: read_pid(pidfile) not in (None, pid))
    new_pid = read_pid(pidfile)
    assert new_pid is not None
    os.kill(new_pid, signal.SIGTERM)
    wait_for(lambda: not pidfile.exists())


def test_pidfile_lock_in_process(tmp_path: Path) -> None:
    path = tmp_path / "p.pid"
    first = PidFile(path)
    with first:
        assert path.read_text() == f"{os.getpid()}\n"
        # flock locks belong to the open file description: a second open in
        # the same process conflicts too.
        with pytest.raises(PidFileLocked) as info:
            PidFile(path).acquire()
        assert info.value.exit_code == EX_TEMPFAIL
        assert info.value.holder == os.getpid()
    assert not path.exists()
    first.release()  # idempotent

    with PidFile(path):
        assert path.exists()
    assert not path.exists()


def test_release_keeps_a_file_that_is_no_longer_ours(tmp_path: Path) -> None:
    path = tmp_path / "p.pid"
    pid_file = PidFile(path)
    pid_file.acquire()
    pid_file.write_pid()
    path.unlink()
    path.write_text("4242\n")  # an admin (or another instance) replaced it
    pid_file.release()
    assert path.read_text() == "4242\n"


def test_unusable_pidfile_location(tmp_path: Path) -> None:
    with pytest.raises(PidFileError) as info:
        PidFile(tmp_path / "missing-dir" / "p.pid").acquire()
    assert info.value.exit_code == EX_CANTCREAT
    assert "missing-dir" in str(info.value)


RUN_CONFIG = """\
timezone: Europe/London
account:
  address: reception@practice.example
  auth: {{method: password, password_file: {tmp}/password}}
incoming: none
outgoing: {{host: 127.0.0.1, port: 9, security: none}}
spool: {{dir: {tmp}/spool}}
state_dir: {tmp}/state
metrics: {{listen: "off"}}
"""


def run_daemon(tmp_path: Path, mode: int = 0o600) -> tuple[subprocess.CompletedProcess[str], Path]:
    cfg = tmp_path / "exactmaild.yaml"
    cfg.write_text(RUN_CONFIG.format(tmp=tmp_path))
    password = tmp_path / "password"
    password.write_text("s3cret\n")
    password.chmod(mode)
    r = subprocess.run(
        [sys.executable, "-m", "exactmaild", "run", "--daemon", "-c", str(cfg)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    return r, tmp_path / "state" / "exactmaild.pid"


def test_run_daemon_exits_with_the_code_of_a_daemon_that_cannot_start(tmp_path: Path) -> None:
    """A 0644 password file: the detached daemon refuses, and `run --daemon`
    says so on the terminal and exits 78 (it used to exit 0)."""
    r, pidfile = run_daemon(tmp_path, mode=0o644)
    assert r.returncode == 78, (r.stdout, r.stderr)
    assert "can be read by other users (mode 0644)" in r.stderr
    assert "account.auth.password_file" in r.stderr
    assert "started" not in r.stdout
    wait_for(lambda: not pidfile.exists())


def test_run_daemon_on_a_state_dir_in_use_exits_75(tmp_path: Path) -> None:
    from exactmaild.daemon.control import StateLock

    (tmp_path / "state").mkdir()
    lock = StateLock(tmp_path / "state")
    lock.acquire()
    try:
        r, _ = run_daemon(tmp_path)
    finally:
        lock.release()
    assert r.returncode == EX_TEMPFAIL, (r.stdout, r.stderr)
    assert "already running on" in r.stderr


def test_run_daemon_returns_once_the_daemon_is_ready(tmp_path: Path) -> None:
    r, pidfile = run_daemon(tmp_path)
    assert r.returncode == 0, (r.stdout, r.stderr)
    pid = read_pid(pidfile)
    assert pid is not None and f"started (pid {pid})" in r.stdout
    assert alive(pid)
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not alive(pid))
