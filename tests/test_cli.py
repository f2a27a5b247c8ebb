"""The command line as users call it: plan, check-config, run with a bad
config, submit and sendmail refusing bad messages, queue cancel/retry."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from exactmaild.outbox.spool import Spool
from tests.fixtures.smtp import SmtpServer
from tests.helpers import exactmaild, message, write_config


@pytest.mark.parametrize(
    ("limit", "per_minute", "delay"),
    [(500, 1, 60), (1000, 2, 30), (1500, 3, 20), (2000, 4, 15)],
)
def test_plan(limit: int, per_minute: int, delay: int) -> None:
    r = exactmaild("plan", "--daily-limit", str(limit), "--hours", "8")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert f"{per_minute} email{'s' if per_minute > 1 else ''} a minute" in out
    assert f"delay: {delay}s between sends" in out


def test_plan_window_and_reserve() -> None:
    out = exactmaild(
        "plan", "--daily-limit", "520", "--window", "08:00-16:00", "--reserve", "20"
    ).stdout.decode()
    assert "1 email a minute" in out and "delay: 60s" in out


BAD = """\
timezone: Europe/London
account:
  address: reception@practice.example
  auth: {method: none}
incoming: none
outgoing: {host: 127.0.0.1, port: 2525, security: none}
send:
  dailly_limit: 5
  delay: 5 parsecs
"""


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_bad_config_exit_78_with_lines(tmp_path: Path, command: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(BAD)
    r = exactmaild(command, "-c", str(cfg))
    err = r.stderr.decode()
    assert r.returncode == 78, err
    assert "Traceback" not in err
    assert re.search(
        rf"{re.escape(str(cfg))}:8: send\.dailly_limit: .*did you mean 'daily_limit'", err
    ), err
    assert re.search(rf"{re.escape(str(cfg))}:9: send\.delay: ", err), err


def test_check_config_summary_has_pacing(tmp_path: Path, smtp_server: SmtpServer) -> None:
    cfg = write_config(
        tmp_path,
        smtp_server,
        send={"immediately": False, "delay": "auto", "daily_limit": 1000},
        schedule={"window": "09:00-17:00"},
    )
    r = exactmaild("check-config", "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "30 s between sends" in r.stdout.decode()


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty"),
        (b"this is not a mail at all\nreally\n", "RFC 5322"),
        (b"Subject: nobody\n\nbody\n", "no recipient"),
        (b"To: a@example.org\nSubject: x\0y\n\nbody\n", "NUL"),
    ],
)
def test_submit_refuses_bad_messages(
    tmp_path: Path, smtp_server: SmtpServer, data: bytes, why: str
) -> None:
    cfg = write_config(tmp_path, smtp_server)
    Spool(tmp_path / "spool")
    r = exactmaild("submit", "-c", str(cfg), input=data)
    assert r.returncode == 65, r.stderr
    assert why in r.stderr.decode()
    assert not list((tmp_path / "spool" / "new").iterdir())


def test_sendmail_front(tmp_path: Path, smtp_server: SmtpServer) -> None:
    cfg = write_config(tmp_path, smtp_server)
    spool = Spool(tmp_path / "spool")
    # As PHP's mail() calls it: -t -i, plus flags we accept and ignore.
    r = exactmaild(
        "sendmail",
        "-t",
        "-i",
        "-f",
        "web@practice.example",
        "-odi",
        "-oem",
        input=message(1),
        env={"EXACTMAILD_CONFIG": str(cfg)},
    )
    assert r.returncode == 0, r.stderr
    # As cron calls it: recipients as arguments, which travel as Bcc.
    r = exactmaild(
        "sendmail",
        "-i",
        "-FCron Daemon",
        "--",
        "admin@practice.example",
        input=b"Subject: cron output\n\nall fine\n",
        env={"EXACTMAILD_CONFIG": str(cfg)},
    )
    assert r.returncode == 0, r.stderr
    names = spool.names("new")
    assert len(names) == 2
    texts = [(tmp_path / "spool" / "new" / n).read_bytes() for n in names]
    assert any(b"Bcc: admin@practice.example" in t and b"From: Cron Daemon" in t for t in texts)
    r = exactmaild(
        "sendmail", "-t", input=b"garbage without headers", env={"EXACTMAILD_CONFIG": str(cfg)}
    )
    assert r.returncode == 65


def test_queue_cancel_and_retry(tmp_path: Path, smtp_server: SmtpServer) -> None:
    cfg = write_config(tmp_path, smtp_server)
    spool = Spool(tmp_path / "spool")
    qid = exactmaild("submit", "-c", str(cfg), input=message(1)).stdout.decode().strip()
    assert spool.names("new") == [qid]
    listing = exactmaild("queue", "list", "-c", str(cfg)).stdout.decode()
    assert qid in listing and "queued" in listing
    assert (
        "appointment reminder 1"
        in exactmaild("queue", "show", qid, "-c", str(cfg)).stdout.decode().lower()
    )
    r = exactmaild("queue", "cancel", qid, "-c", str(cfg))
    assert r.returncode == 0 and spool.names("new") == [] and spool.names("cancelled") == [qid]
    assert exactmaild("queue", "cancel", qid, "-c", str(cfg)).returncode == 69
    r = exactmaild("queue", "retry", qid, "-c", str(cfg))
    assert r.returncode == 0 and spool.names("new") == [qid]


def test_version() -> None:
    r = exactmaild("--version")
    assert r.returncode == 0 and r.stdout.decode().startswith("exactmaild ")


@pytest.mark.parametrize("argv", [["queue"], ["--bogus"], ["plan"], ["nonsense-command"]])
def test_usage_errors_exit_64(argv: list[str]) -> None:
    r = exactmaild(*argv)
    assert r.returncode == 64, (r.returncode, r.stderr)


def test_metrics_port_in_use_is_a_clear_temporary_failure(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cfg = write_config(tmp_path, smtp_server, metrics={"listen": f"127.0.0.1:{port}"})
        r = exactmaild("run", "-c", str(cfg))
    err = r.stderr.decode()
    assert r.returncode == 75, err
    assert f"cannot serve metrics on 127.0.0.1:{port}" in err and "Traceback" not in err
