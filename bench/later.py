"""Mail for later at start-up: what `later/` adds to `Outbox.recover()`.

Start-up builds the queue index from one scan of the spool and reads no
message in `new/`; only the messages in `later/` are opened, for the time in
their Deferred-Delivery header. This measures `Outbox.recover()` in process
(no daemon, no SMTP) for N queued messages in `new/`, alone and with K more
scheduled in `later/`, each written straight into its directory:

* recover, N queued: the baseline (one scandir of `new/`, sorted by mtime);
* recover, N queued + K scheduled: the same plus K header reads;
* per scheduled message: the difference divided by K.

How to read it: the extra cost must be linear in K and nothing in N (a day's
reminders for tomorrow are hundreds, not the whole queue).

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

from _common import REPO, fill_spool, machine, median, table  # noqa: F401  (REPO: sys.path)

from exactmaild.config.model import Send
from exactmaild.outbox import Outbox, Spool
from exactmaild.store.state import StateStore


class _Log:
    def bind(self, **kw: object) -> _Log:
        return self

    def _log(self, event: str, **kw: object) -> None:
        pass

    debug = info = warning = error = exception = _log


def _scheduled(spool: Path, k: int) -> None:
    """k messages for tomorrow, straight into later/ (set-up, not measured)."""
    later = spool / "later"
    later.mkdir(exist_ok=True)
    stamp = email.utils.format_datetime(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    for i in range(k):
        body = f"To: p{i}@example.org\nSubject: Reminder {i}\nDeferred-Delivery: {stamp}\n\n"
        (later / f"later{i:07d}").write_text(body + "See you tomorrow.\n" * 20)


def recover_seconds(n: int, k: int) -> float:
    with tempfile.TemporaryDirectory(prefix="exactmaild-later-") as d:
        root = Path(d)
        fill_spool(root / "spool", n)
        _scheduled(root / "spool", k)
        spool = Spool(root / "spool")
        store = StateStore(root / "state")
        box = Outbox(spool, store, send=Send(), timezone="Europe/London", log=_Log(), clock=time)
        t0 = time.perf_counter()
        box.recover()
        took = time.perf_counter() - t0
        assert box.queued == n and (k == 0) == (box.next_retry_time() == float("inf"))
        store.close()
        return took


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--k", default="1000,10000", help="scheduled counts, comma-separated")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    ks = [int(x) for x in args.k.split(",")]
    print(f"# later: N={args.n} queued, K={ks} scheduled, repeat={args.repeat}; {machine()}")
    base = median([recover_seconds(args.n, 0) for _ in range(args.repeat)])
    rows: list[list[object]] = [[f"{args.n:,} queued", base, "-"]]
    for k in ks:
        t = median([recover_seconds(args.n, k) for _ in range(args.repeat)])
        rows.append([f"{args.n:,} queued + {k:,} scheduled", t, f"{(t - base) / k * 1e6:.0f} us"])
    print(table(["spool", "recover s", "per scheduled"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
