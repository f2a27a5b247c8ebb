"""Prometheus metrics: the counters the daemon moves, and serving them.

Counters are incremented where things happen (`Metrics.sent.inc()`,
`Metrics.send_failures.labels("permanent").inc()`, the calls
prometheus-client's own metrics take). They are plain numbers under a lock
until the first scrape: prometheus_client, its registry and its HTTP server
are imported only then (`exactmaild.daemon.exposition`), so a daemon nobody
scrapes, one of many on a host, does not carry them. The levels (sent in the
window, remaining, queue depth, ages) and the OAuth2 figures are computed at
scrape time by the exposition's collectors.
"""

from __future__ import annotations

import contextlib
import functools
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Literal

from exactmaild import __version__

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import ThreadingWSGIServer

    from exactmaild.auth.oauth import TokenCache
    from exactmaild.outbox.levels import Snapshot


class Value:
    """One sample: a counter or a gauge, or one label set of a family."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        with self._lock:
            self._value += amount

    def set(self, value: float) -> None:
        with self._lock:
            self._value = float(value)

    def get(self) -> float:
        with self._lock:
            return self._value


class Family:
    """A metric: one `Value` without labels, or one per label set (`labels(...)`)."""

    def __init__(
        self,
        name: str,
        doc: str,
        kind: Literal["counter", "gauge"],
        labelnames: Sequence[str] = (),
    ) -> None:
        self.name, self.doc, self.kind = name, doc, kind
        self.labelnames = list(labelnames)
        self._lock = threading.Lock()
        self._children: dict[tuple[str, ...], Value] = {} if labelnames else {(): Value()}

    def labels(self, *values: str) -> Value:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        with self._lock:
            return self._children.setdefault(tuple(values), Value())

    def children(self) -> Iterator[tuple[tuple[str, ...], Value]]:
        with self._lock:
            items = list(self._children.items())
        return iter(items)

    def _only(self) -> Value:
        if self.labelnames:
            raise ValueError(f"{self.name} has labels {self.labelnames}: use labels(...)")
        return self._children[()]

    def inc(self, amount: float = 1) -> None:
        self._only().inc(amount)

    def set(self, value: float) -> None:
        self._only().set(value)


class Histogram:
    """A histogram without labels: cumulative bucket counts, sum and count, under a lock."""

    def __init__(self, name: str, doc: str, buckets: Sequence[float]) -> None:
        self.name, self.doc = name, doc
        self.buckets = tuple(sorted(buckets))
        self._lock = threading.Lock()
        self._counts = [0] * len(self.buckets)
        self._sum = 0.0
        self._count = 0
        self.created = time.time()

    def observe(self, value: float) -> None:
        with self._lock:
            self._sum += value
            self._count += 1
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    self._counts[i] += 1

    def get(self) -> tuple[list[tuple[float, int]], float, int]:
        """([(upper bound, cumulative count)...], sum, count); +Inf is the count."""
        with self._lock:
            return list(zip(self.buckets, self._counts, strict=True)), self._sum, self._count


class Metrics:
    """Every metric exactmaild exports; the registry is built at the first scrape."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot] | None = None,
        *,
        tokens: TokenCache | None = None,
    ) -> None:
        """`snapshot`: the levels, at each scrape; `tokens`: the process's OAuth2 token
        cache, for the token expiry and the refused logins (None: a cache of its own,
        so the failure counters are exported, at 0)."""
        self._snapshot = snapshot
        self._tokens = tokens
        self.families: list[Family] = []

        def family(name: str, doc: str, kind: Literal["counter", "gauge"], *labels: str) -> Family:
            f = Family(name, doc, kind, labels)
            self.families.append(f)
            return f

        self.sent = family(
            "exactmaild_sent", "Messages accepted by the SMTP server since start.", "counter"
        )
        self.send_failures = family(
            "exactmaild_send_failures",
            "Failed send attempts by kind (transient, permanent, account).",
            "counter",
            "kind",
        )
        for kind in ("transient", "permanent", "account"):
            self.send_failures.labels(kind)
        self.received = family(
            "exactmaild_received", "Messages delivered to the maildir.", "counter"
        )
        self.receive_checks = family(
            "exactmaild_receive_checks", "Mailbox checks by result.", "counter", "result"
        )
        for result in ("ok", "error"):
            self.receive_checks.labels(result)
        self.idle_connected = family(
            "exactmaild_idle_connected", "1 while an IMAP IDLE connection is up.", "gauge"
        )
        # From the server's INTERNALDATE (whole seconds) to delivery in the Maildir:
        # seconds with IDLE, up to the check interval without.
        self.receive_latency = Histogram(
            "exactmaild_receive_latency_seconds",
            "Seconds from the server's INTERNALDATE to delivery in the Maildir.",
            (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 21600, 86400),
        )
        self.histograms = [self.receive_latency]
        self.reloads = family(
            "exactmaild_config_reloads", "Configuration reloads by result.", "counter", "result"
        )
        for result in ("success", "failure"):
            self.reloads.labels(result)
        self.last_reload_ok = family(
            "exactmaild_config_last_reload_successful",
            "1 if the last configuration reload succeeded (or none was tried).",
            "gauge",
        )
        self.last_reload_ok.set(1)
        self.build_info = family(
            "exactmaild_build_info", "Always 1; the version as a label.", "gauge", "version"
        )
        self.build_info.labels(__version__).set(1)

    @functools.cached_property
    def registry(self) -> CollectorRegistry:
        """prometheus-client's registry of everything above, built on first use."""
        # Imported here, not at the top: see the module docstring.
        from exactmaild.daemon.exposition import registry_for

        if self._tokens is None:
            from exactmaild.auth.oauth import TokenCache

            self._tokens = TokenCache()
        return registry_for(self.families, self._snapshot, self._tokens, self.histograms)

    def serve(self, host: str, port: int) -> Callable[[], None]:
        """Serve GET /metrics; returns a function that stops the server.

        The port is bound now (a taken port is an error at start, OSError).
        A thread then sleeps in select() until the first connection, and only
        then imports the exposition and hands it the socket: an idle daemon
        neither wakes for nothing nor carries an HTTP server nobody asked for.
        """
        # The address family as prometheus-client's start_http_server picks it.
        family, _, _, _, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            # As HTTPServer does: a restarted daemon rebinds while old
            # connections linger in TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(16)
        except OSError:
            sock.close()
            raise
        lock = threading.Lock()
        stopping = False
        httpd: ThreadingWSGIServer | None = None

        def run() -> None:
            nonlocal httpd
            select.select([sock], [], [])  # until the first scrape, or stop()'s wake-up
            with lock:
                if stopping:
                    return
                from exactmaild.daemon.exposition import http_server

                server = httpd = http_server(sock, self.registry)
            # None (typeshed says float): select() without a timeout, no polling.
            server.serve_forever(poll_interval=None)  # type: ignore[arg-type]

        thread = threading.Thread(target=run, name="metrics", daemon=True)
        thread.start()

        def wake() -> None:
            with contextlib.suppress(OSError):
                socket.create_connection((host.strip("[]"), port), timeout=1).close()

        def stop() -> None:
            nonlocal stopping
            with lock:
                stopping = True
                server = httpd
            if server is not None:
                stopper = threading.Thread(target=server.shutdown, daemon=True)
                stopper.start()
                # shutdown() waits for the loop, which sleeps until a connection: make one.
                wake()
                stopper.join(5)
                server.server_close()
            else:
                wake()
            thread.join(5)
            sock.close()

        return stop
