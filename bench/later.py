"""Mail for later at start-up: what `later/` adds to the start-up scan.

Start-up builds the queue index from one scan of the spool and opens no
message in `new/`; only the messages in `later/` are opened, for the time in
their Deferred-Delivery header. For a spool of N queued messages in `new/`
and K scheduled in `later/` (written straight into their directories), this
times, in process and best of R (the machine is shared; the best run is the
one least disturbed), the two parts of `rebuild_index()` that differ:

* new/: the scan that orders the queue (`queued_oldest_first`, one
  scandir and an lstat per file);
* later/: `outbox.later.recover` (a scandir, then each header read).

How to read it: both are linear; the ratio line divides the cost of one
scheduled message by that of one queued message (a day's reminders for
tomorrow are hundreds, the queue may be 100,000).

    python bench/later.py [--n 100000] [--k 1000,10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import email.utils
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, fill_spool, machine, table  # noqa: F401  (REPO: sys.path)

from exactmaild.outbox import Spool
from exactmaild.outbox import later as later_mail
from exactmaild.outbox.index import QueueIndex


def _scheduled(spool: Path, k: int) -> None:
    """k messages for tomorrow, straight into later/ (set-up, not measured)."""
    later = spool / "later"
    later.mkdir(exist_ok=True)
    stamp = email.utils.format_datetime(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    for i in range(k):
        body = f"To: p{i}@example.org\nSubject: Reminder {i}\nDeferred-Delivery: {stamp}\n\n"
        (later / f"later{i:07d}").write_text(body + "See you tomorrow.\n" * 20)


def scans(n: int, k: int, repeat: int) -> tuple[float, float]:
    """(best new/ scan s, best later/ recover s) for n queued and k scheduled."""
    with tempfile.TemporaryDirectory(prefix="exactmaild-later-") as d:
        root = Path(d) / "spool"
        fill_spool(root, n)
        _scheduled(root, k)
        spool = Spool(root)
        best_new = best_later = float("inf")
        for _ in range(repeat):
            index = QueueIndex()
            t0 = time.perf_counter()
            index.new.reset(spool.queued_oldest_first())
            t1 = time.perf_counter()
            later_mail.recover(spool, index, time.time())
            t2 = time.perf_counter()
            assert len(index.new) == n and len(index.later) == k
            best_new, best_later = min(best_new, t1 - t0), min(best_later, t2 - t1)
        return best_new, best_later


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--k", default="1000,10000", help="scheduled counts, comma-separated")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    ks = [int(x) for x in args.k.split(",")]
    print(f"# later: N={args.n} queued, K={ks} scheduled, best of {args.repeat}; {machine()}")
    rows: list[list[object]] = []
    per_queued = per_scheduled = 0.0
    for k in ks:
        t_new, t_later = scans(args.n, k, args.repeat)
        per_queued, per_scheduled = t_new / args.n, t_later / k
        rows.append([f"{args.n:,} queued, {k:,} scheduled", t_new, t_later, per_scheduled * 1e6])
    print(table(["spool", "new/ scan s", "later/ recover s", "us a scheduled"], rows))
    print(
        f"ratio per message at start-up, scheduled/queued: {per_scheduled / per_queued:.1f}x "
        f"({per_scheduled * 1e6:.1f} us a scheduled message read for its time, "
        f"{per_queued * 1e6:.2f} us a queued one never opened)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
