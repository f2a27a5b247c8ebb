"""When a message is tried again after a temporary failure, or given up.

Pure: the tries so far, the time of the first try and `now` in, an answer
out. `send.retry_intervals` are the waits after the first, second, ...
failure, the last repeating; `send.give_up_after` counts from the first try.
"""

from __future__ import annotations


def retry_interval(tries: int, intervals: tuple[float, ...]) -> float:
    """The wait after the `tries`-th failure in a row (1 for the first), the last
    interval repeating: send.retry_intervals per message, send.account_pause
    for the whole queue."""
    return intervals[min(max(tries, 1) - 1, len(intervals) - 1)]


def given_up(first_try: float, now: float, give_up_after: float) -> bool:
    """Whether a message first tried at `first_try` has been tried long enough."""
    return now - first_try >= give_up_after
