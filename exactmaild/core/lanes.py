"""Priority lanes: which lane a message's headers put it in, and what each lane may use.

A practice's allowance is shared by mail of very different urgency: this
afternoon's appointment change must go now, the recall batch can wait until
tomorrow. Three lanes, sent in this order, first in first out within each:

- `urgent`: `Priority: urgent`, `Importance: high`, `X-Priority: 1` or `2`;
- `normal`: everything else (and `Priority: normal`, `Importance: normal`,
  `X-Priority: 3`);
- `bulk`: `Priority: non-urgent`, `Importance: low`, `X-Priority: 4` or `5`,
  `Precedence: bulk | list | junk`.

When headers disagree, the most deliberate one decides, in this order:
`Priority` (RFC 2156, the standard that means exactly this), `Importance`
(RFC 2156, what Outlook and Thunderbird set), `X-Priority` (the de facto
header of older clients), `Precedence` (a list's or a mass mailer's hint,
which says nothing about urgency). The first of them present with a value
it understands wins; unknown values are ignored, so a message with
`X-Priority: 1` and `Precedence: bulk` is urgent. Only the header block is
read (`lane_of()` takes its bytes): a spool of 100,000 is classified at
start-up from the first few KiB of each file.

`urgent_reserve` keeps the last N sends of the allowance for urgent mail:
`kept_back()` says how many a lane must leave unused. Pure: no I/O.
"""

from __future__ import annotations

import re
from typing import Literal

Lane = Literal["urgent", "normal", "bulk"]
LANES: tuple[Lane, ...] = ("urgent", "normal", "bulk")  # the order they are sent in
RANK: dict[Lane, int] = {lane: i for i, lane in enumerate(LANES)}
# Enough for any header block a practice's software writes; a lane header
# further down than this is not seen and the message is normal.
HEAD_BYTES = 8192

_HEADER = re.compile(
    rb"^(priority|importance|x-priority|precedence)[ \t]*:[ \t]*([^\r\n]*)",
    re.IGNORECASE | re.MULTILINE,
)
_ORDER = (b"priority", b"importance", b"x-priority", b"precedence")
_VALUES: dict[bytes, dict[bytes, Lane]] = {
    b"priority": {b"urgent": "urgent", b"normal": "normal", b"non-urgent": "bulk"},
    b"importance": {b"high": "urgent", b"normal": "normal", b"low": "bulk"},
    b"x-priority": {
        b"1": "urgent",
        b"2": "urgent",
        b"3": "normal",
        b"4": "bulk",
        b"5": "bulk",
    },
    b"precedence": {b"bulk": "bulk", b"list": "bulk", b"junk": "bulk"},
}


def header_block(raw: bytes) -> bytes:
    """The headers of a message: up to its first empty line (all of `raw` if none)."""
    ends = [i for i in (raw.find(b"\n\n"), raw.find(b"\n\r\n")) if i >= 0]
    return raw[: min(ends) + 1] if ends else raw


def lane_of(raw: bytes) -> Lane:
    """The lane a message's headers ask for (`raw`: the message, or its first bytes)."""
    head = header_block(raw)
    low = head.lower()
    # Most mail names no lane: three substring searches instead of the pattern.
    if b"priority" not in low and b"importance" not in low and b"precedence" not in low:
        return "normal"
    found: dict[bytes, Lane] = {}
    for m in _HEADER.finditer(head):
        name = m.group(1).lower()
        if name in found:
            continue  # the first of a repeated header counts
        value = m.group(2).strip().lower()
        if name == b"x-priority":
            value = value[:1]  # "1 (Highest)"
        else:
            value = value.split(b";", 1)[0].split(b"(", 1)[0].strip()
        lane = _VALUES[name].get(value)
        if lane is not None:
            found[name] = lane
    for name in _ORDER:
        if name in found:
            return found[name]
    return "normal"


def kept_back(lane: Lane, urgent_reserve: int) -> int:
    """How many sends of the allowance `lane` must leave unused."""
    return 0 if lane == "urgent" else urgent_reserve


def before(a: Lane, b: Lane) -> bool:
    """Whether lane `a` is sent before lane `b`."""
    return RANK[a] < RANK[b]
