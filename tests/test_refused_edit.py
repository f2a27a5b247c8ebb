"""A refused edit does not blind the running daemon: after an edit the daemon
refused (SIGHUP), `status`, `queue list` and `flush` work from the
configuration it runs, and say the file on disk is refused, with its first
error. Without a daemon, the file's errors stop them as before (exit 78)."""

from __future__ import annotations

import signal
from pathlib import Path

import yaml

from tests.fixtures.smtp import SmtpServer
from tests.helpers import Daemon, exactmaild, wait_until, write_config


def test_commands_use_the_running_configuration_after_a_refused_edit(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    cfg = write_config(tmp_path, smtp_server)
    port = int(yaml.safe_load(cfg.read_text())["metrics"]["listen"].rsplit(":", 1)[1])
    d = Daemon(cfg)
    try:
        d.wait_ready(port)
        good = cfg.read_text()
        cfg.write_text(good.replace("daily_limit: 500", "daily_limit: many"))
        d.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "reload_failed" in d.log(), timeout=15), d.log()
        for command in (["status"], ["queue", "list"], ["flush"]):
            r = exactmaild(*command, "-c", str(cfg))
            err = r.stderr.decode()
            assert r.returncode == 0, (command, err)
            assert "the file on disk is refused, first error: " in err, err
            assert f"{cfg}:" in err and "send.daily_limit" in err, err
            assert "using the configuration the daemon runs" in err, err
        assert b"running" in exactmaild("status", "-c", str(cfg)).stdout
        assert d.stop() == 0, d.log()
        # No daemon: nothing runs that configuration any more; the file's errors stand.
        # `status` says so as a monitoring check does: 3, UNKNOWN, with the error.
        r = exactmaild("status", "-c", str(cfg))
        assert r.returncode == 3, r.stderr
        assert b"send.daily_limit" in r.stderr and b"UNKNOWN" in r.stderr, r.stderr
        assert b"using the configuration" not in r.stderr
        assert exactmaild("queue", "list", "-c", str(cfg)).returncode == 78
    finally:
        if d.proc.poll() is None:
            d.kill()
