"""Postfix as a peer: the machine's own Postfix, run privately for one measurement.

The installed Postfix (Debian package postfix) runs from a scratch
configuration, queue and data directory, bind-mounted over /etc/postfix,
/var/spool/postfix and /var/lib/postfix in a private mount namespace
(`unshare -m`): nothing on the host changes, and a second instance needs
no `alternate_config_directories`. Its smtpd listens on a loopback port for
injection; everything relays to `relayhost` over one connection
(`default_destination_concurrency_limit = 1`).

Messages are injected while delivery is held (`defer_transports = smtp`),
then released at once (`postqueue -f` after clearing it), so the delivery
runs from a full queue, as exactmaild's drain does. Needs root.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import smtplib
import subprocess
import time
from pathlib import Path

from _common import free_port, wait_port, wire_message

_MASTER = """\
{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

_MOUNTS = {"etc": "/etc/postfix", "spool": "/var/spool/postfix", "lib": "/var/lib/postfix"}


def available() -> str:
    """Why Postfix cannot be measured here, or "" if it can."""
    if os.geteuid() != 0:
        return "needs root for a private mount namespace (unshare -m)"
    for tool in ("/usr/sbin/postfix", "/usr/bin/unshare", "/usr/bin/nsenter"):
        if not os.path.exists(tool):
            return f"{tool} not found (apt-get install postfix)"
    return ""


class PrivatePostfix:
    """One Postfix in its own mount namespace, relaying to `relay_port`."""

    def __init__(self, work: Path, relay_port: int) -> None:
        self.work = work
        self.port = free_port()
        etc = work / "etc"
        shutil.copytree("/etc/postfix", etc, symlinks=True)
        for d in ("spool", "lib"):
            (work / d).mkdir()
        os.chown(work / "lib", *_ids("postfix"))
        (etc / "master.cf").write_text(_MASTER.format(listen=f"127.0.0.1:{self.port}"))
        (etc / "main.cf").write_text(
            "\n".join(
                [
                    "compatibility_level = 3.6",
                    "myhostname = bench.practice.example",
                    "mydestination =",
                    "inet_interfaces = loopback-only",
                    "inet_protocols = ipv4",
                    "mynetworks = 127.0.0.0/8",
                    f"relayhost = [127.0.0.1]:{relay_port}",
                    "default_destination_concurrency_limit = 1",
                    "smtp_tls_security_level = none",
                    "defer_transports = smtp",
                    f"maillog_file = {work / 'postfix.log'}",
                    f"maillog_file_prefixes = {work}",
                    "smtpd_banner = $myhostname ESMTP",
                    "",
                ]
            )
        )
        mounts = " && ".join(f"mount --bind {work / d} {path}" for d, path in _MOUNTS.items())
        self.proc = subprocess.Popen(
            [
                *("unshare", "-m", "--propagation", "private", "sh", "-c"),
                f"{mounts} && postfix set-permissions >/dev/null 2>&1; exec postfix start-fg",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, timeout=30)

    def run(self, *cmd: str) -> None:
        """A Postfix command inside its namespace."""
        subprocess.run(
            ["nsenter", "-t", str(self._master_pid()), "-m", *cmd],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def _master_pid(self) -> int:
        pid_file = self.work / "spool" / "pid" / "master.pid"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                return int(pid_file.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                time.sleep(0.05)
        return self.proc.pid

    def inject(self, n: int) -> None:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as s:
            for i in range(n):
                sender, rcpts, data = wire_message(i)
                s.sendmail(sender, list(rcpts), data)

    def release(self) -> None:
        """Deliver what is held: clear defer_transports, reload, flush."""
        self.run("postconf", "-e", "defer_transports =")
        self.run("postfix", "reload")
        time.sleep(0.5)  # the reloaded qmgr is up before the flush asks it
        self.run("postqueue", "-f")

    def close(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.run("postfix", "stop")
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _ids(user: str) -> tuple[int, int]:
    pw = pwd.getpwnam(user)
    return pw.pw_uid, pw.pw_gid
