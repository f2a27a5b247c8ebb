"""The deferred-message index: the earliest due retry, superseded times ignored."""

from __future__ import annotations

import math

from exactmaild.outbox.index import RetryIndex


def test_earliest_due_first_and_updates_supersede() -> None:
    idx = RetryIndex()
    assert idx.first_due(100) is None and idx.next_time() == math.inf
    idx.set("a", 50)
    idx.set("b", 30)
    idx.set("c", 70)
    assert idx.first_due(10) is None
    assert idx.first_due(40) == "b" and idx.next_time() == 30
    idx.set("b", 90)  # retried later: its old time no longer counts
    assert idx.first_due(60) == "a"
    idx.discard("a")
    assert idx.first_due(60) is None and idx.next_time() == 70
    idx.set("c", 0.0)  # flush: due at once
    assert idx.first_due(1) == "c"
    assert len(idx) == 2 and "b" in idx and "a" not in idx
    assert sorted(idx.names()) == ["b", "c"]


def test_many_retries_stay_cheap() -> None:
    idx = RetryIndex()
    for i in range(50_000):
        idx.set(f"m{i}", float(i))
    order = []
    now = 1e9
    while (name := idx.first_due(now)) is not None:
        order.append(name)
        idx.discard(name)
    assert order[:3] == ["m0", "m1", "m2"] and len(order) == 50_000
