"""The wall clock, injectable: the one thing tests replace.

Everything in the pure core takes `now` as an argument; the parts that
decide *when* (the sender, the main loop) read it from a `Clock`, so a test
can run a day, a DST change or a cap reset in a second.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float: ...


class SystemClock:
    def time(self) -> float:
        return time.time()
