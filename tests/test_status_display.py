"""What `status` and check-config print, as a person reads it: ages and
delays in the unit that fits, the rate in words, a failed check said as one,
and colours only when asked for."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from exactmaild.cli.status import collect, render
from exactmaild.config.load import parse
from exactmaild.outbox.spool import Spool
from exactmaild.store.state import StateStore
from tests.helpers import exactmaild

CONFIG = """\
timezone: Europe/London
account: {{address: reception@practice.example, auth: {{method: none}}}}
incoming: {{host: 127.0.0.1, port: 9, security: none, protocol: imap}}
outgoing: {{host: 127.0.0.1, port: 9, security: none}}
send: {{delay: 68s, daily_limit: 500}}
spool: {{dir: {tmp}/spool}}
state_dir: {tmp}/state
metrics: {{listen: "off"}}
"""

NOW = 1_800_000_000.0


def _setup(tmp_path: Path) -> dict[str, object]:
    path = tmp_path / "exactmaild.yaml"
    path.write_text(CONFIG.format(tmp=tmp_path))
    cfg = parse(path.read_text(), path)
    spool = Spool(cfg.spool.dir)
    qid = spool.submit(b"To: a@example.org\nSubject: x\n\nbody\n")
    os.utime(cfg.spool.dir / "new" / qid, (NOW - 25, NOW - 25))
    state = StateStore(cfg.state_dir)
    state.put(receive_error="login refused", receive_error_at=str(NOW - 120))
    state.close()
    return collect(cfg, now=NOW)


def test_status_says_ages_and_failed_checks_plainly(tmp_path: Path) -> None:
    text = render(_setup(tmp_path), color=False)
    assert "oldest waiting 25 s" in text, text
    assert "last check never, last attempt failed Fri 15 Jan 07:58" in text, text
    assert "\x1b[" not in text


def test_status_colours_what_needs_a_look_when_asked(tmp_path: Path) -> None:
    text = render(_setup(tmp_path), color=True)
    assert "\x1b[31mNOT RUNNING\x1b[0m" in text, text
    assert "\x1b[31mlogin refused\x1b[0m" in text, text


def test_check_config_says_the_rate_in_words(tmp_path: Path) -> None:
    path = tmp_path / "exactmaild.yaml"
    path.write_text(CONFIG.format(tmp=tmp_path))
    r = exactmaild("check-config", "--syntax", "-c", str(path))
    assert r.returncode == 0, r.stderr
    assert "68 s between sends = about 53 an hour" in r.stdout.decode()
    r = exactmaild("plan", "--daily-limit", "350", "--hours", "24")
    assert "about 15 an hour" in r.stdout.decode()


def test_flush_without_a_daemon_names_this_hosts_start_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from exactmaild.cli import paths
    from exactmaild.cli.main import main

    path = tmp_path / "exactmaild.yaml"
    path.write_text(CONFIG.format(tmp=tmp_path))
    for systemd, advice in (
        (False, "start it with `exactmaild run --daemon`"),
        (True, "start it with `systemctl start exactmaild`"),
    ):
        monkeypatch.setattr(paths, "under_systemd", lambda systemd=systemd: systemd)
        assert main(["flush", "-c", str(path)]) == 69
        err = capsys.readouterr().err
        assert advice in err, err
        assert ("systemctl" in err) == systemd, err
