"""Smoke run of every benchmark in bench/ with tiny sizes: each must run to the
end and print its ratio line. The real figures come from running the scripts
by hand (docs/benchmarks.md); this only keeps them from rotting.

All of them run at once (they are independent processes on their own ports and
temp dirs), so the whole module takes about as long as the slowest one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SMTP_SINK = "/usr/sbin/smtp-sink"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(SMTP_SINK), reason="needs Postfix's smtp-sink"),
]

RUNS: dict[str, list[str]] = {
    "drain": ["--n", "20", "--repeat", "1", "--drops", "3", "--timeout", "20"],
    "peers": ["--n", "10", "--repeat", "1", "--timeout", "20", "--no-download"],
    "pacing": ["--n", "6", "--delay-ms", "50", "--repeat", "1"],
    "scale": ["--n", "200", "--repeat", "1"],
    "idle": ["--seconds", "3", "--repeat", "1"],
    "imap_idle": ["--deliveries", "3", "--seconds", "2"],
    "receive": ["--old", "50", "--small", "10", "--new", "3", "--repeat", "1"],
    "forecast": ["--sizes", "100,1000", "--repeat", "1"],
    "lanes": ["--n", "200", "--repeat", "1"],
    "later": ["--n", "200", "--k", "20", "--repeat", "1"],
    "wan": ["--n", "5", "--n-slow", "3", "--delay-ms", "5", "--no-download", "--timeout", "30"],
    "fleet": ["--accounts", "2", "--seconds", "2", "--messages", "1", "--every", "1m"],
}
DELAYPROXY = REPO.parent / "shared" / "tools" / "delayproxy.py"
if not DELAYPROXY.exists():  # bench/wan.py needs it beside the checkout
    del RUNS["wan"]


@pytest.fixture(scope="module")
def outputs() -> Iterator[dict[str, subprocess.CompletedProcess[str]]]:
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(REPO / "bench" / f"{name}.py"), *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, args in RUNS.items()
    }
    done = {}
    try:
        for name, p in procs.items():
            out, _ = p.communicate(timeout=60)
            done[name] = subprocess.CompletedProcess(p.args, p.returncode, out, None)
        yield done
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.parametrize("name", list(RUNS))
def test_prints_its_ratio(name: str, outputs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    r = outputs[name]
    assert r.returncode == 0, r.stdout
    assert re.search(r"^ratio\b.*\d", r.stdout, re.MULTILINE), r.stdout


def test_drain_ratio_is_positive(outputs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    out = outputs["drain"].stdout
    ratios = re.findall(r"^ratio (\S+): ([0-9.]+)", out, re.MULTILINE)
    assert {k for k, _ in ratios} == {"smtp-sink", "aiosmtpd"}, out
    assert all(float(v) > 0 for _, v in ratios), out
    assert re.search(r"pick-up latency over 3 drops: median [0-9.]+ ms", out), out
    assert re.search(
        r"^ratio smtp-sink, against raw \+ synced record per send: steady [0-9.]+",
        out,
        re.MULTILINE,
    ), out


def test_receive_fetched_only_the_new(outputs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    out = outputs["receive"].stdout
    assert re.findall(r"^ratio (imap|pop3):", out, re.MULTILINE) == ["imap", "pop3"], out
    assert re.findall(r"fetched only the new: (\w+)", out) == ["yes", "yes"], out


@pytest.mark.skipif("wan" not in RUNS, reason=f"needs {DELAYPROXY}")
def test_wan_reports_round_trips_a_message(
    outputs: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    out = outputs["wan"].stdout
    m = re.search(r"round trips a message: exactmaild ([0-9.]+), 1-RTT client ([0-9.]+)", out)
    assert m, out
    assert float(m[1]) > 0 and float(m[2]) > 0, out
    rows = ("1-RTT client", "exactmaild (immediate)", "raw smtplib", "Postfix", "STARTTLS: steady")
    for row in rows:
        assert re.search(rf"{re.escape(row)}.*  ", out), (row, out)
