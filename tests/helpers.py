"""Helpers the daemon-level tests share: a config file on disk, the real
`exactmaild` process, its metrics, and an offset clock for in-process runs;
and the wall-clock instants the window and limit tables are written in."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from tests.fixtures.smtp import SmtpServer, free_port

REPO = Path(__file__).resolve().parent.parent


def write_config(tmp: Path, smtp: SmtpServer, **overrides: Any) -> Path:
    """A config for a local SMTP server; `overrides` are merged per top-level key."""
    cfg: dict[str, Any] = {
        "timezone": "Europe/London",
        "account": {"address": "reception@practice.example", "auth": {"method": "none"}},
        "incoming": "none",
        "outgoing": {"host": smtp.host, "port": smtp.port, "security": smtp.security},
        "send": {"delay": "0s", "daily_limit": 500, "immediately": True},
        "spool": {"dir": str(tmp / "spool")},
        "state_dir": str(tmp / "state"),
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
        "log": {"format": "json", "level": "debug"},
    }
    if smtp.ca_file is not None:
        cfg["outgoing"]["tls_ca_file"] = str(smtp.ca_file)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    path = tmp / "exactmaild.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def exactmaild(
    *args: str, input: bytes | None = None, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "exactmaild", *args],
        input=input,
        capture_output=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


class Daemon:
    """`exactmaild run` as a real child process."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.log_path = config.parent / f"daemon-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exactmaild", "run", "-c", str(config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, **(env or {})},
        )

    def wait_ready(self, metrics_port: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}: {self.log()}")
            try:
                scrape(metrics_port)
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"daemon not ready: {self.log()}")

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._log.close()

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def metric(text: str, name: str, labels: str = "") -> float | None:
    """The value of a sample in a Prometheus text exposition: summed over the
    labels not given (as PromQL's `sum`), None if no sample matches."""
    want = {p for p in labels.split(",") if p}
    found = None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        base, _, rest = key.partition("{")
        have = {p for p in rest.rstrip("}").split(",") if p and not p.endswith('=""')}
        if base == name and want <= have:
            found = (found or 0.0) + float(value)
    return found


def message(n: int, to: str = "patient{n}@example.org", **headers: str) -> bytes:
    lines = [f"To: {to.format(n=n)}", f"Subject: Appointment reminder {n}"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\n".join(lines) + f"\n\nDear patient {n}, see you on Tuesday.\n").encode()


class OffsetClock:
    """The wall clock moved by a settable offset: the one thing tests inject."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def time(self) -> float:
        return time.time() + self.offset


def wait_until(pred: Any, timeout: float = 15.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return bool(pred())


def at(tz: ZoneInfo, text: str, fold: int = 0) -> float:
    """'2026-03-27 17:00' in `tz` as a unix time (fold=1: the second of a repeated hour)."""
    naive = dt.datetime.fromisoformat(text)
    aware = naive.replace(tzinfo=tz, fold=fold)
    # Guard the test data itself: a time in a DST gap would silently shift.
    assert dt.datetime.fromtimestamp(aware.timestamp(), tz).replace(tzinfo=None) == naive
    return aware.timestamp()


def utc(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()
