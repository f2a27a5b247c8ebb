"""Lanes at start-up: what reading each queued message's lane costs.

The queue index files every message in `new/` under its priority lane when
it is built (`Outbox.recover()`), from the first 8 KiB of each file
(`Spool.lane()`), so no pick ever parses a message. This measures the index
build alone, for a spool of N messages (default 100,000, written straight
into new/, page cache warm): with the lanes read, and with every message
taken as normal (what the build cost before lanes), alternating runs so
the machine's load hits both alike. Half the messages name a lane
(`Precedence: bulk`), half none.

    python bench/lanes.py [--n 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, median, table

from exactmaild.outbox.index import QueueIndex
from exactmaild.outbox.spool import Spool

BULK = b"To: p@example.org\nSubject: Recall\nPrecedence: bulk\nMessage-ID: <r@x>\n\n" + b"x" * 2000
PLAIN = b"To: p@example.org\nSubject: Reminder\nMessage-ID: <n@x>\n\n" + b"x" * 2000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="exactmaild-lanes-"))
    try:
        spool = Spool(root / "spool")
        for i in range(args.n):
            (root / "spool" / "new" / f"20261201T000000.{i:06d}.1.abcdef01").write_bytes(
                BULK if i % 2 else PLAIN
            )
        runs: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeat):
            for lanes in (False, True):
                t0 = time.perf_counter()
                index = QueueIndex(spool.lane) if lanes else QueueIndex()
                index.new.reset(spool.queued_oldest_first())
                runs[lanes].append(time.perf_counter() - t0)
        assert len(index.new.lanes["bulk"]) == args.n // 2
    finally:
        shutil.rmtree(root)
    before, after = median(runs[False]), median(runs[True])
    print(f"# lanes: index build at N={args.n}, repeat={args.repeat}; {machine()}")
    rows = [
        ["every message normal", before, 0.0],
        ["lanes read", after, (after - before) / args.n * 1e6],
    ]
    print(table(["index build", "median s", "extra us/message"], rows))
    print(f"ratio lanes/normal: {after / before:.2f}x (load1 after: {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
