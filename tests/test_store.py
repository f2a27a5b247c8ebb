"""The state store's attempts table stays bounded: prune_attempts() forgets
settled sends no limit window reaches, never one still in flight, and a
database pruned once a day stops growing. Real SQLite files; the only thing
injected is `now`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from exactmaild.store.state import DB_NAME, StateStore

DAY = 86400.0
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC


def _rows(state_dir: Path) -> int:
    """Every row of the attempts table, whatever its status (a reader beside the store)."""
    with sqlite3.connect(f"file:{state_dir / DB_NAME}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0])


def test_prune_deletes_settled_attempts_before_the_cut_never_inflight(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    old, new = T0, T0 + 3 * DAY
    # Old attempts settled every way, and one the daemon is still sending.
    sent = store.reserve("old-sent", "<old-sent@x>", 1, old)
    store.finish_sent(sent, "old-sent", old + 1, "250 ok", had_state=False)
    unknown = store.reserve("old-unknown", "<old-unknown@x>", 1, old + 2)
    store.finish(unknown, "unknown", old + 3, "connection lost after DATA")
    released = store.reserve("old-released", "<old-released@x>", 1, old + 4)
    store.finish(released, "released", old + 5, "421 try later")
    inflight = store.reserve("old-inflight", "<old-inflight@x>", 1, old + 6)
    # Attempts at and after the cut stay, settled or not.
    at_cut = store.settle_and_reserve(None, "at-cut", "<at-cut@x>", 1, new)
    store.finish_sent(at_cut, "at-cut", new + 1, "250 ok", had_state=False)
    store.reserve("new-inflight", "<new-inflight@x>", 2, new + 2)

    store.prune_attempts(new)

    for gone in ("old-sent", "old-unknown", "old-released"):
        assert store.last_attempt(gone) is None, gone
    kept = store.last_attempt("old-inflight")
    assert kept is not None and (kept.id, kept.status) == (inflight, "inflight")
    assert store.counted_sends(0.0) == [(old + 6, 1), (new, 1), (new + 2, 2)]
    assert store.sent_message_ids(0.0) == {"<at-cut@x>"}
    assert _rows(tmp_path) == 3

    # Settled at last, the old in-flight send goes with the next prune.
    store.finish(inflight, "unknown", new + 3)
    store.prune_attempts(new)
    assert store.last_attempt("old-inflight") is None
    assert store.counted_sends(0.0) == [(new, 1), (new + 2, 2)]
    store.close()


def test_a_daily_prune_keeps_60_days_of_2000_sends_bounded(tmp_path: Path) -> None:
    """Through the public methods, one commit per send. The 400-day run, through
    the daemon's own pruning call, is tests/test_outbox.py's."""
    days, per_day, keep = 60, 2000, 2 * DAY
    store = StateStore(tmp_path)
    # fsync makes a commit durable; it plays no part in which pages the file
    # holds. Without it the 800,000 commits take about 20 s of CPU, not
    # minutes of waiting for the disk.
    store._db.execute("PRAGMA synchronous = OFF")
    db_file = tmp_path / DB_NAME
    wal_file = tmp_path / f"{DB_NAME}-wal"
    gap = 8 * 3600 / per_day  # 2,000 sends over an 8-hour working day
    sizes: dict[int, tuple[int, int]] = {}
    rows: dict[int, int] = {}
    for day in range(days):
        opening = T0 + day * DAY + 8 * 3600
        previous: tuple[int, str, float, str, bool] | None = None
        for i in range(per_day):
            now = opening + i * gap
            qid = f"{day:03d}.{i:04d}"
            aid = store.settle_and_reserve(previous, qid, f"<{qid}@practice.example>", 1, now)
            previous = (aid, qid, now + 0.5, "250 2.0.0 queued", False)
        # The queue is empty: the day's last send is recorded on its own.
        assert previous is not None
        aid, qid, finished, detail, had_state = previous
        store.finish_sent(aid, qid, finished, detail, had_state)
        # In the evening, once a day: forget what is older than two days.
        now = opening + 12 * 3600
        store.prune_attempts(now - keep)
        rows[day] = _rows(tmp_path)
        sizes[day] = (db_file.stat().st_size, wal_file.stat().st_size)

    # What is left is about two days of sends, at every day's end.
    most = max(rows.values())
    assert most <= 2 * per_day + per_day // 10, most
    assert rows[days - 1] >= 2 * per_day - per_day // 10, rows[days - 1]
    # The freed pages are reused: no VACUUM, and the file stops growing.
    (db20, wal20), (db60, wal60) = sizes[19], sizes[days - 1]
    assert db60 <= 1.25 * db20, (db20, db60)
    assert wal60 <= 1.25 * max(wal20, 4 << 20), (wal20, wal60)
    # About 120 bytes a send in the table and its two indexes: a file that
    # still held the 120,000 would be near 15 MB.
    assert db60 < 4 << 20, db60
    assert store.counted_sends(T0 + (days - 2) * DAY)[-1][0] == opening + (per_day - 1) * gap
    store.close()
