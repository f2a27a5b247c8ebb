"""Peers: the same drain through the tools a user would pick instead.

What it measures, in one run, N ~500-byte messages (default 1,000) into one
Postfix `smtp-sink`:

* raw: a plain smtplib client on one connection (the physical limit);
* exactmaild: N messages in SPOOL/new/, `exactmaild run` in immediate mode,
  timed from spawn to the Nth send recorded (as bench/drain.py);
* nullmailer: N messages already in its queue, `nullmailer-send` timed from
  spawn until the queue is empty (it forks its `smtp` module, one process and
  one connection per message). nullmailer conflicts with Postfix, whose
  package provides smtp-sink, so it is not installed: the Debian package is
  unpacked (`apt-get download nullmailer`, `dpkg-deb -x`) and run in a private
  mount namespace (`unshare -m`) with overlays on /etc, /var/spool and
  /usr/lib, so its compiled-in paths point at a scratch queue and nothing on
  the host changes. Needs root (or CAP_SYS_ADMIN); skipped otherwise.
* msmtp: one `msmtp` process per message (how sendmail-style callers use it;
  it has no queue), sequentially. Skipped if /usr/bin/msmtp is missing
  (`apt-get install msmtp`).

How to read it: every figure is messages/s and its ratio to raw in the same
run (median of --repeat runs); a higher ratio is better. exactmaild keeps one
connection open for the whole backlog, so it should beat the process-per-
message tools by a wide margin once its per-send storage cost is down.

    python bench/peers.py [--n 1000] [--repeat 3] [--nullmailer-deb PATH]
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    ADDRESS,
    SmtpSink,
    machine,
    median,
    raw_client,
    table,
    wire_message,
    workdir,
)
from drain import daemon_drain

MSMTP = "/usr/bin/msmtp"
NULLMAILER_CACHE = Path(tempfile.gettempdir()) / "exactmaild-bench-nullmailer"


def nullmailer_root(deb: str | None, download: bool = True) -> tuple[Path | None, str]:
    """The unpacked nullmailer package, or None and why not."""
    if os.geteuid() != 0:
        return None, "needs root for a private mount namespace (unshare -m)"
    for tool in ("unshare", "dpkg-deb"):
        if shutil.which(tool) is None:
            return None, f"{tool} not found"
    root = NULLMAILER_CACHE / "root"
    if (root / "usr/sbin/nullmailer-send").exists():
        return root, ""
    NULLMAILER_CACHE.mkdir(parents=True, exist_ok=True)
    if deb is None:
        found = glob.glob(str(NULLMAILER_CACHE / "nullmailer_*.deb"))
        if not found and not download:
            return None, "not unpacked yet and --no-download given"
        if not found:
            r = subprocess.run(
                ["apt-get", "download", "nullmailer"],
                cwd=NULLMAILER_CACHE,
                capture_output=True,
                timeout=120,
            )
            found = glob.glob(str(NULLMAILER_CACHE / "nullmailer_*.deb"))
            if r.returncode != 0 or not found:
                return None, "apt-get download nullmailer failed: " + r.stderr.decode()[-200:]
        deb = found[0]
    subprocess.run(["dpkg-deb", "-x", deb, str(root)], check=True, timeout=60)
    return root, ""


def nullmailer_drain(root: Path, port: int, n: int, timeout: float) -> float | None:
    """Messages/s for nullmailer-send draining a queue of n into the sink."""
    with workdir("nullmailer") as w:
        over = {"etc": "/etc", "spool": "/var/spool", "lib": "/usr/lib"}
        for d in over:
            (w / d).mkdir()
            (w / f"{d}-work").mkdir()
        (w / "etc/nullmailer").mkdir()
        (w / "etc/nullmailer/remotes").write_text(f"127.0.0.1 smtp --port={port}\n")
        (w / "etc/mailname").write_text("practice.example\n")
        q = w / "spool/nullmailer"
        for d in ("queue", "tmp", "failed"):
            (q / d).mkdir(parents=True)
        os.mkfifo(q / "trigger")
        (w / "lib/nullmailer").mkdir()
        shutil.copy2(root / "usr/lib/nullmailer/smtp", w / "lib/nullmailer/smtp")
        base = int(time.time())
        for i in range(n):
            sender, rcpts, data = wire_message(i)
            env = (sender + "\n" + "\n".join(rcpts) + "\n\n").encode()
            (q / "queue" / f"{base + i}.{i}.bench").write_bytes(env + data.replace(b"\r\n", b"\n"))
        mounts = " && ".join(
            f"mount -t overlay bench -o lowerdir={low},upperdir={w / d},workdir={w / d}-work {low}"
            for d, low in over.items()
        )
        cmd = f"{mounts} && exec {root / 'usr/sbin/nullmailer-send'}"
        t0 = time.time()
        proc = subprocess.Popen(
            ["unshare", "-m", "sh", "-c", cmd],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + timeout
            while any((q / "queue").iterdir()):
                if time.monotonic() > deadline or proc.poll() is not None:
                    return None
                time.sleep(0.01)
            return n / (time.time() - t0)
        finally:
            proc.terminate()
            proc.wait(10)


def msmtp_drain(port: int, n: int, timeout: float) -> float | None:
    """Messages/s for one msmtp process per message."""
    msgs = [wire_message(i) for i in range(n)]
    args = [MSMTP, "--host=127.0.0.1", f"--port={port}", "--auth=off", "--tls=off"]
    args += [f"--from={ADDRESS}", "--"]
    t0 = time.monotonic()
    for _sender, rcpts, data in msgs:
        subprocess.run([*args, *rcpts], input=data, check=True, timeout=30)
        if time.monotonic() - t0 > timeout:
            return None
    return n / (time.monotonic() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=120.0, help="per drain, seconds")
    ap.add_argument("--nullmailer-deb", help="a nullmailer .deb to unpack (default: apt-get)")
    ap.add_argument(
        "--no-download", action="store_true", help="skip nullmailer unless already unpacked"
    )
    args = ap.parse_args(argv)

    print(f"# peers: N={args.n}, repeat={args.repeat}, sink smtp-sink; {machine()}")
    nm_root, nm_why = nullmailer_root(args.nullmailer_deb, not args.no_download)
    skipped: dict[str, str] = {}
    if nm_root is None:
        skipped["nullmailer"] = nm_why
    if not os.path.exists(MSMTP):
        skipped["msmtp"] = f"{MSMTP} not found (apt-get install msmtp)"

    def on_sink(fn: Callable[[int], float | None]) -> float | None:
        sink = SmtpSink()
        try:
            return fn(sink.port)
        finally:
            sink.close()

    rates: dict[str, list[float]] = {}
    raws: list[float] = []
    for _ in range(args.repeat):
        raws.append(on_sink(lambda p: args.n / raw_client(p, args.n)) or float("nan"))
        run = daemon_drain("smtp-sink", args.n, args.timeout)
        rates.setdefault("exactmaild (immediate)", []).append(run.rate_total)
        if nm_root is not None:
            root = nm_root

            def nm(p: int, root: Path = root) -> float | None:
                return nullmailer_drain(root, p, args.n, args.timeout)

            r = on_sink(nm)
            rates.setdefault("nullmailer-send", []).append(r if r is not None else float("nan"))
        if "msmtp" not in skipped:
            r = on_sink(lambda p: msmtp_drain(p, args.n, args.timeout))
            rates.setdefault("msmtp, 1 process/msg", []).append(
                r if r is not None else float("nan")
            )
    raw = median(raws)
    rows: list[list[object]] = [["raw smtplib, 1 connection", raw, 1.0]]
    for name, vals in rates.items():
        ratio = median([v / r for v, r in zip(vals, raws, strict=True)])
        rows.append([name, median(vals), ratio])
    for name, why in skipped.items():
        rows.append([name, "skipped", why])
    print(table(["sender", "msg/s", "ratio to raw"], rows))
    print(
        "ratio to raw: "
        + ", ".join(f"{row[0]} {row[2]:.3f}" for row in rows[1:] if isinstance(row[2], float))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
