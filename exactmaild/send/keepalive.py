"""When the sender lets the SMTP connection go (outgoing.keepalive).

A login per message is what providers throttle (Gmail: "454 4.7.0 Too many
login attempts"), and a fresh TLS handshake and AUTH cost several round
trips. So the connection stays open while the next send is due within
`keepalive`, and, with nothing queued, until `keepalive` after its last
use: mail that an application drops one message at a time still finds it
open. A queued message due later than that lets it go at once. The
transport probes it before reuse (NOOP) and reconnects quietly if the
server closed it meanwhile. Pure: takes `now`.
"""

from __future__ import annotations


def keep_for(
    now: float, next_send_in: float, last_use: float | None, keepalive: float, *, idle: bool
) -> float | None:
    """How long an open connection may stay before the sender looks again:
    `inf` while the next send (in `next_send_in` seconds) is due within
    `keepalive`; with nothing queued (`idle`), what remains of `keepalive`
    since `last_use`; None: close it now."""
    if next_send_in <= keepalive:
        return float("inf")
    if idle and last_use is not None and (left := last_use + keepalive - now) > 0:
        return left
    return None
