"""A local SMTP sink for development: accepts everything on loopback and
stores each message as a file, so `dev/run` needs no mail account."""

from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class Store:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        name = f"{time.time():.6f}.eml"
        rcpts = ", ".join(envelope.rcpt_tos)
        head = f"X-Sink-Envelope-From: {envelope.mail_from}\nX-Sink-Envelope-To: {rcpts}\n"
        (self.directory / name).write_bytes(head.encode() + envelope.original_content)
        print(f"sink: {envelope.mail_from} -> {', '.join(envelope.rcpt_tos)} ({name})", flush=True)
        return "250 2.0.0 stored"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=2525)
    p.add_argument("--dir", type=Path, default=Path("var/sink"))
    a = p.parse_args()
    a.dir.mkdir(parents=True, exist_ok=True)
    c = Controller(Store(a.dir), hostname="127.0.0.1", port=a.port)
    c.start()
    print(f"sink: listening on 127.0.0.1:{a.port}, storing in {a.dir}/", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    c.stop()


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    main()
