"""Issue 7 acceptance: the real `exactmaild run` process as systemd, Prometheus
and a sysadmin without systemd see it.

* the notify protocol, played from systemd's side of an AF_UNIX datagram
  socket: READY=1, WATCHDOG=1 pings, RELOADING=1 + MONOTONIC_USEC then
  READY=1 on SIGHUP (also when the new config is refused), STOPPING=1;
* reloads: a valid edit applies at once, a broken one is refused whole and
  the daemon keeps sending under the old configuration;
* `promtool check metrics` on a live scrape;
* `run --daemon --pidfile P` with the real command line;
* logs: JSON lines on a non-TTY stdout, `log.level`, no secrets.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from exactmaild.outbox.spool import Spool
from tests.fixtures.smtp import SMTP_PASSWORD, SMTP_USER, SmtpServer, start_smtp
from tests.helpers import Daemon, exactmaild, message, metric, scrape, wait_until, write_config

TIMEOUT = 20.0  # generous: a loaded 2-core machine


# -- systemd's side of the notify socket ---------------------------------------------------


class NotifyListener:
    """Binds NOTIFY_SOCKET and records every datagram with its arrival time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.messages.append((time.monotonic(), fields))

    def snapshot(self) -> list[tuple[float, dict[str, str]]]:
        with self._lock:
            return list(self.messages)

    def mark(self) -> int:
        return len(self.snapshot())

    def since(self, mark: int) -> list[dict[str, str]]:
        return [f for _, f in self.snapshot()[mark:]]

    def wait(self, pred: Any, mark: int = 0, timeout: float = TIMEOUT) -> int:
        """Index (absolute) of the first datagram after `mark` that satisfies `pred`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, (_, f) in enumerate(self.snapshot()[mark:], start=mark):
                if pred(f):
                    return i
            time.sleep(0.02)
        raise AssertionError(f"no matching notify datagram; got {self.since(mark)}")

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifyListener]:
    listener = NotifyListener(tmp_path / "notify.sock")
    yield listener
    listener.close()


def _systemd_env(notify: NotifyListener, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    # WATCHDOG_PID must be unset (Daemon merges os.environ): the child pings for itself.
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    return {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"}


def _port(cfg: Path) -> int:
    return int(yaml.safe_load(cfg.read_text())["metrics"]["listen"].rsplit(":", 1)[1])


def _edit(cfg: Path, change: Any) -> None:
    data = yaml.safe_load(cfg.read_text())
    change(data)
    cfg.write_text(yaml.safe_dump(data))


def _drop(spool_dir: Path, n: int) -> str:
    """Queue a message as a producer app does (tmp/ then rename into new/)."""
    return Spool(spool_dir, create=False).submit(message(n))


def _reload(d: Daemon, notify: NotifyListener) -> tuple[dict[str, str], dict[str, str]]:
    """SIGHUP; the RELOADING datagram and the READY=1 that must follow it."""
    mark = notify.mark()
    d.proc.send_signal(signal.SIGHUP)
    i = notify.wait(lambda f: f.get("RELOADING") == "1", mark)
    j = notify.wait(lambda f: f.get("READY") == "1", i + 1)
    msgs = notify.snapshot()
    return msgs[i][1], msgs[j][1]


def _log_events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- the notify protocol, reloads and stop -----------------------------------------------


def test_notify_protocol_reload_and_stop(
    tmp_path: Path,
    smtp_server: SmtpServer,
    notify_socket: NotifyListener,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    notify = notify_socket
    cfg = write_config(
        tmp_path,
        smtp_server,
        send={"daily_limit": 500, "delay": "0s", "immediately": True},
        log={"format": "auto", "level": "info"},
    )
    port = _port(cfg)
    d = Daemon(cfg, env=_systemd_env(notify, monkeypatch))
    try:
        # READY=1 once serving, with a one-line STATUS=.
        ready = notify.wait(lambda f: f.get("READY") == "1")
        t_ready = notify.snapshot()[ready][0]
        first = notify.snapshot()[ready][1]
        assert first.get("STATUS"), first
        assert "500" in first["STATUS"], first
        d.wait_ready(port)  # metrics answer too

        # WATCHDOG=1 at half of WATCHDOG_USEC (1 s): at least 3 within 3 s.
        deadline = time.monotonic() + 3.0 + 1.0  # +1 s slack for a loaded machine
        pings: list[float] = []
        while time.monotonic() < deadline:
            pings = [t for t, f in notify.snapshot() if f.get("WATCHDOG") == "1" and t >= t_ready]
            if len(pings) >= 4:
                break
            time.sleep(0.05)
        assert len(pings) >= 3, notify.since(0)
        gaps = sorted(b - a for a, b in itertools.pairwise(pings))
        assert 0.3 < gaps[len(gaps) // 2] < 0.8, gaps  # about every 0.5 s, half the timeout

        # A valid edit + SIGHUP: RELOADING=1 with MONOTONIC_USEC, READY=1, new limit at once.
        _edit(cfg, lambda c: c["send"].update(daily_limit=7))
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        reloading, ready_again = _reload(d, notify)
        assert re.fullmatch(r"\d+", reloading.get("MONOTONIC_USEC", "")), reloading
        usec = int(reloading["MONOTONIC_USEC"])
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert before <= usec <= after, (before, usec, after)  # CLOCK_MONOTONIC, in µs
        assert "/7" in ready_again.get("STATUS", ""), ready_again
        text = scrape(port)
        assert metric(text, "exactmaild_daily_limit") == 7
        assert metric(text, "exactmaild_config_reloads_total", 'result="success"') == 1
        assert metric(text, "exactmaild_config_reloads_total", 'result="failure"') == 0
        assert metric(text, "exactmaild_config_last_reload_successful") == 1

        # A broken edit + SIGHUP: refused whole, READY=1 all the same, still sending.
        _edit(cfg, lambda c: c["send"].update(daily_limit=-3))
        _reload(d, notify)
        assert d.proc.poll() is None, d.log()
        text = scrape(port)
        assert metric(text, "exactmaild_config_reloads_total", 'result="failure"') == 1
        assert metric(text, "exactmaild_config_reloads_total", 'result="success"') == 1
        assert metric(text, "exactmaild_config_last_reload_successful") == 0
        assert metric(text, "exactmaild_daily_limit") == 7  # the old config, whole
        events = _log_events(d.log())
        refused = [e for e in events if e["event"] == "reload_refused"]
        assert refused and any("daily_limit" in e["problem"] for e in refused), refused
        assert any(e["event"] == "reload_failed" for e in events)

        _drop(tmp_path / "spool", 1)
        got = smtp_server.sink.wait_for(1, TIMEOUT)
        assert len(got) == 1, d.log()
        assert b"Dear patient 1" in got[0].data
        assert wait_until(lambda: metric(scrape(port), "exactmaild_sent_in_window") == 1, TIMEOUT)
        assert metric(scrape(port), "exactmaild_daily_limit_remaining") == 6  # 7 - 1: old config

        # Invalid YAML is refused the same way, and named in the log.
        cfg.write_text(cfg.read_text() + "send: [unclosed\n")
        _reload(d, notify)
        assert d.proc.poll() is None, d.log()
        text = scrape(port)
        assert metric(text, "exactmaild_config_reloads_total", 'result="failure"') == 2
        assert metric(text, "exactmaild_config_last_reload_successful") == 0
        refused = [e for e in _log_events(d.log()) if e["event"] == "reload_refused"]
        assert len(refused) >= 2 and str(cfg) in refused[-1]["problem"], refused

        # A reload that changes spool.dir: applied otherwise, the spool says "restart".
        def move_spool(c: dict[str, Any]) -> None:
            c["send"]["daily_limit"] = 9
            c["spool"]["dir"] = str(tmp_path / "spool2")

        write_config(
            tmp_path,
            smtp_server,
            send={"daily_limit": 7, "delay": "0s", "immediately": True},
            log={"format": "auto", "level": "info"},
            metrics={"listen": f"127.0.0.1:{port}"},
        )
        _edit(cfg, move_spool)
        _reload(d, notify)
        text = scrape(port)
        assert metric(text, "exactmaild_config_reloads_total", 'result="success"') == 2
        assert metric(text, "exactmaild_config_last_reload_successful") == 1
        assert metric(text, "exactmaild_daily_limit") == 9
        restart = [e for e in _log_events(d.log()) if e["event"] == "reload_needs_restart"]
        assert restart and "spool" in json.dumps(restart[-1]), restart
        _drop(tmp_path / "spool", 2)  # still the running spool
        assert len(smtp_server.sink.wait_for(2, TIMEOUT)) == 2, d.log()

        # SIGTERM: STOPPING=1, exit 0.
        mark = notify.mark()
        assert d.stop(TIMEOUT) == 0, d.log()
        notify.wait(lambda f: f.get("STOPPING") == "1", mark, timeout=5)
    finally:
        if d.proc.poll() is None:
            d.kill()


# -- promtool on a live scrape ------------------------------------------------------------


def test_promtool_check_metrics_live(tmp_path: Path, smtp_server: SmtpServer) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package `prometheus`): live scrape unchecked")
    cfg = write_config(tmp_path, smtp_server)
    port = _port(cfg)
    d = Daemon(cfg)
    try:
        d.wait_ready(port, TIMEOUT)
        _drop(tmp_path / "spool", 1)  # a send, so the send-time gauges exist too
        smtp_server.sink.wait_for(1, TIMEOUT)
        assert wait_until(lambda: metric(scrape(port), "exactmaild_sent_total") == 1, TIMEOUT)
        text = scrape(port)
        r = subprocess.run(
            [promtool, "check", "metrics"],
            input=text.encode(),
            capture_output=True,
            timeout=60,
        )
        assert r.returncode == 0, (r.stdout + r.stderr).decode() + "\n" + text
        # The contract's table, all present in one scrape.
        for name in (
            "exactmaild_sent_total",
            "exactmaild_sent_in_window",
            "exactmaild_daily_limit",
            "exactmaild_daily_limit_remaining",
            "exactmaild_queue_messages",
            "exactmaild_send_failures_total",
            "exactmaild_received_total",
            "exactmaild_receive_checks_total",
            "exactmaild_config_reloads_total",
            "exactmaild_config_last_reload_successful",
            "exactmaild_build_info",
            "exactmaild_oldest_queued_age_seconds",
            "exactmaild_limit_window_reset_seconds",
            "exactmaild_last_send_timestamp_seconds",
        ):
            assert re.search(rf"^{name}[{{ ]", text, re.M), name
        assert d.stop(TIMEOUT) == 0
    finally:
        if d.proc.poll() is None:
            d.kill()


# -- run --daemon on hosts without systemd ------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_run_daemon_pidfile(tmp_path: Path, smtp_server: SmtpServer) -> None:
    cfg = write_config(tmp_path, smtp_server, log={"format": "auto", "level": "info"})
    port = _port(cfg)
    pidfile = tmp_path / "run" / "exactmaild.pid"
    pidfile.parent.mkdir()
    pid: int | None = None
    try:
        t0 = time.monotonic()
        r = exactmaild("run", "--daemon", "--pidfile", str(pidfile), "-c", str(cfg))
        assert r.returncode == 0, r.stderr.decode()
        assert time.monotonic() - t0 < TIMEOUT  # returned: did not stay in the foreground

        assert wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), TIMEOUT)
        pid = int(pidfile.read_text())
        assert _pid_alive(pid)
        assert wait_until(lambda: _scrape_ok(port), TIMEOUT), "metrics never answered"

        second = exactmaild("run", "--daemon", "--pidfile", str(pidfile), "-c", str(cfg))
        assert second.returncode == 75, second
        err = second.stderr.decode()
        assert str(pidfile) in err and "already" in err, err
        assert int(pidfile.read_text()) == pid and _pid_alive(pid)  # untouched

        _drop(tmp_path / "spool", 1)
        assert len(smtp_server.sink.wait_for(1, TIMEOUT)) == 1

        # A reload keeps logging to the file (the YAML names no log.file).
        log = tmp_path / "state" / "exactmaild.log"
        _edit(cfg, lambda c: c["send"].update(daily_limit=8))
        os.kill(pid, signal.SIGHUP)
        assert wait_until(lambda: metric(scrape(port), "exactmaild_daily_limit") == 8, TIMEOUT)
        assert wait_until(lambda: '"reloaded"' in log.read_text(), 5), log.read_text()

        os.kill(pid, signal.SIGTERM)
        assert wait_until(lambda: not _pid_alive(pid), TIMEOUT), "daemon did not stop"
        assert wait_until(lambda: not pidfile.exists(), 5), "pidfile left behind"
        pid = None

        # No stdout when detached: JSON lines in STATE_DIR/exactmaild.log.
        events = _log_events(log.read_text())
        names = [e["event"] for e in events]
        assert "started" in names and "stopped" in names, names
        assert all({"event", "level", "timestamp"} <= e.keys() for e in events)
    finally:
        if pid is not None and _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def _scrape_ok(port: int) -> bool:
    try:
        scrape(port)
    except OSError:
        return False
    return True


# -- logs -----------------------------------------------------------------------------------


def test_logs_json_level_and_no_secrets(
    tmp_path: Path, tls_cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    controller, server = start_smtp("none", auth=True, cert=tls_cert)
    password_file = tmp_path / "password"
    password_file.write_text(SMTP_PASSWORD + "\n")
    password_file.chmod(0o600)
    auth = {"method": "password", "username": SMTP_USER, "password_file": str(password_file)}
    account = {"address": SMTP_USER, "auth": auth}
    # log.format omitted: auto, and the Daemon's stdout is a file, not a TTY.
    cfg = write_config(tmp_path, server, account=account, log={"level": "debug"})
    data = yaml.safe_load(cfg.read_text())
    del data["log"]["format"]
    cfg.write_text(yaml.safe_dump(data))
    port = _port(cfg)
    d = Daemon(cfg)
    try:
        d.wait_ready(port, TIMEOUT)
        _drop(tmp_path / "spool", 1)
        assert len(server.sink.wait_for(1, TIMEOUT)) == 1, d.log()

        # Now log.level warning: after the reload no info (or debug) line appears.
        data["log"]["level"] = "warning"
        cfg.write_text(yaml.safe_dump(data))
        d.proc.send_signal(signal.SIGHUP)
        assert wait_until(
            lambda: (
                metric(scrape(port), "exactmaild_config_reloads_total", 'result="success"') == 1
            ),
            TIMEOUT,
        ), d.log()
        mark = len(d.log().splitlines())
        _drop(tmp_path / "spool", 2)
        assert len(server.sink.wait_for(2, TIMEOUT)) == 2, d.log()
        # Something at warning level: a reload that is refused.
        data["send"]["daily_limit"] = -3
        cfg.write_text(yaml.safe_dump(data))
        d.proc.send_signal(signal.SIGHUP)
        assert wait_until(
            lambda: (
                metric(scrape(port), "exactmaild_config_reloads_total", 'result="failure"') == 1
            ),
            TIMEOUT,
        ), d.log()
        assert d.stop(TIMEOUT) == 0
    finally:
        if d.proc.poll() is None:
            d.kill()
        controller.stop()

    text = d.log()
    assert SMTP_PASSWORD not in text
    lines = [line for line in text.splitlines() if line.strip()]
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
    for e in events:
        assert {"event", "level", "timestamp"} <= e.keys(), e
    assert any(e["event"] == "started" for e in events)
    assert any(e["level"] == "debug" for e in events[:mark])  # debug was on before
    later = events[mark:]
    assert later, "the refused reload logged nothing"
    assert all(e["level"] in ("warning", "error", "critical") for e in later), later
    assert any(e["event"] == "reload_refused" for e in later), later


def test_logs_level_warning_from_start(tmp_path: Path, smtp_server: SmtpServer) -> None:
    """log.level warning from the first line: a quiet daemon, still JSON when it speaks."""
    cfg = write_config(tmp_path, smtp_server, log={"format": "auto", "level": "warning"})
    port = _port(cfg)
    d = Daemon(cfg)
    try:
        d.wait_ready(port, TIMEOUT)
        _drop(tmp_path / "spool", 1)
        assert len(smtp_server.sink.wait_for(1, TIMEOUT)) == 1
        assert d.stop(TIMEOUT) == 0
    finally:
        if d.proc.poll() is None:
            d.kill()
    for line in d.log().splitlines():
        if line.strip():
            e = json.loads(line)
            assert e["level"] not in ("debug", "info"), e


def test_reload_refuses_an_unreadable_signature(
    tmp_path: Path,
    smtp_server: SmtpServer,
    notify_socket: NotifyListener,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """check-config only warns about a missing signature file; a reload must not
    half-apply it (or die on it): refused whole, the daemon keeps sending."""
    notify = notify_socket
    cfg = write_config(tmp_path, smtp_server, log={"format": "auto", "level": "info"})
    port = _port(cfg)
    d = Daemon(cfg, env=_systemd_env(notify, monkeypatch))
    try:
        notify.wait(lambda f: f.get("READY") == "1")
        d.wait_ready(port, TIMEOUT)
        missing = tmp_path / "no-such-signature.txt"
        _edit(cfg, lambda c: c["send"].update(signature=str(missing), daily_limit=11))
        _reload(d, notify)
        time.sleep(0.3)
        assert d.proc.poll() is None, d.log()
        text = scrape(port)
        assert metric(text, "exactmaild_config_reloads_total", 'result="failure"') == 1, d.log()
        assert metric(text, "exactmaild_config_last_reload_successful") == 0
        assert metric(text, "exactmaild_daily_limit") == 500  # nothing half-applied
        assert str(missing) in d.log()
        _drop(tmp_path / "spool", 1)
        got = smtp_server.sink.wait_for(1, TIMEOUT)
        assert len(got) == 1, d.log()
        assert d.stop(TIMEOUT) == 0, d.log()
    finally:
        if d.proc.poll() is None:
            d.kill()


def test_shipped_example_config_is_valid() -> None:
    """etc/exactmaild/exactmaild.yaml (the package's conffile) passes check-config."""
    r = exactmaild("check-config", "--syntax", "-c", "etc/exactmaild/exactmaild.yaml")
    assert r.returncode == 0, (r.stdout + r.stderr).decode()
    assert b"/etc/exactmaild/password" in r.stdout
