"""What a part that counts events needs of a metric: `inc()`, and `labels()`.

The sending and receiving parts move Prometheus counters that the daemon's
metrics registry owns; they type them with these protocols instead of
importing the registry (which sits above them).
"""

from __future__ import annotations

from typing import Protocol


class Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Labelled(Protocol):
    def labels(self, *values: str) -> Counter: ...
