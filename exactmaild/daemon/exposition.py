"""The Prometheus exposition: collectors, the registry and the HTTP server.

Imported on the first scrape (or the first look at `Metrics.registry`), not
at start: prometheus_client and its HTTP server cost an idle daemon about
3 MB and 20 ms, and many daemons on one host are idle most of the time.
`exactmaild.daemon.metrics` keeps the counters until then.

Everything that is a level (sent in the window, remaining, queue depth, ages)
is computed at scrape time from a `Snapshot` the service provides, so a
scrape never shows a stale figure, e.g. the remaining allowance jumping back
up at midnight with no send to trigger an update. The OAuth2 token expiry and
the refused logins are read the same way, from the daemon's `TokenCache`
(`OAuthCollector`).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Literal, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler, make_wsgi_app
from prometheus_client.registry import Collector

from exactmaild.core.forecast import BLOCKERS
from exactmaild.core.states import PUBLIC_NAME, REPORTED

if TYPE_CHECKING:
    from exactmaild.auth.oauth import TokenCache
    from exactmaild.outbox.levels import Snapshot


class Sample(Protocol):
    created: float

    def get(self) -> float: ...


class Family(Protocol):
    """A counter or gauge `exactmaild.daemon.metrics` keeps until the first scrape."""

    name: str
    doc: str
    kind: Literal["counter", "gauge"]
    labelnames: list[str]

    def children(self) -> Iterator[tuple[tuple[str, ...], Sample]]: ...


class _FamilyCollector(Collector):
    """The counters and gauges `exactmaild.daemon.metrics` kept, as prometheus-client
    exports its own: a counter's `_total` and `_created` samples, in creation order."""

    def __init__(self, families: Sequence[Family]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        for f in self._families:
            family: CounterMetricFamily | GaugeMetricFamily
            if f.kind == "counter":
                family = CounterMetricFamily(f.name, f.doc, labels=f.labelnames)
                for values, child in f.children():
                    family.add_metric(list(values), child.get(), created=child.created)
            else:
                family = GaugeMetricFamily(f.name, f.doc, labels=f.labelnames)
                for values, child in f.children():
                    family.add_metric(list(values), child.get())
            yield family


class Histo(Protocol):
    """A histogram `exactmaild.daemon.metrics` keeps until the first scrape."""

    name: str
    doc: str

    def get(self) -> tuple[list[tuple[float, int]], float, int]: ...


class _HistogramCollector(Collector):
    def __init__(self, histograms: Sequence[Histo]) -> None:
        self._histograms = histograms

    def collect(self) -> Iterator[Metric]:
        for h in self._histograms:
            buckets, total, count = h.get()
            family = HistogramMetricFamily(h.name, h.doc)
            pairs = [(f"{bound:g}", float(n)) for bound, n in buckets] + [("+Inf", float(count))]
            family.add_metric([], pairs, total)
            yield family


class _LevelCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterator[Metric]:
        # Nothing to describe up front: the levels exist only once the service runs.
        return iter(())

    def collect(self) -> Iterator[Metric]:
        s = self._snapshot()

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        yield gauge(
            "exactmaild_sent_in_window",
            "Sends counted against the daily limit in the current limit window.",
            s.sent_in_window,
        )
        yield gauge(
            "exactmaild_sent_elsewhere_in_window",
            "Messages found in the Sent folder in this window that exactmaild did not send.",
            s.sent_elsewhere_in_window,
        )
        yield gauge("exactmaild_daily_limit", "Configured daily sending limit.", s.daily_limit)
        yield gauge(
            "exactmaild_daily_limit_remaining",
            "Sends left in this window: limit - reserve - sent, never below 0.",
            s.remaining,
        )
        yield gauge(
            "exactmaild_limit_window_reset_seconds",
            "Seconds until the limit window resets (rolling: until the oldest send ages out).",
            max(0.0, s.window_reset_seconds),
        )
        q = GaugeMetricFamily(
            "exactmaild_queue_messages",
            "Spool depth by state; waiting mail (queued, deferred) also by lane.",
            labels=["state", "lane"],
        )
        for state in (PUBLIC_NAME[s] for s in REPORTED):
            by_lane = [(lane, n) for (st, lane), n in s.lanes.items() if st == state]
            # Held, failed and active mail has no lane: an empty label, which
            # Prometheus stores as the same series as before lanes existed.
            for lane, n in by_lane or [("", s.queue.get(state, 0))]:
                q.add_metric([state, lane], n)
        yield q
        yield gauge(
            "exactmaild_oldest_queued_age_seconds",
            "Age of the oldest message waiting to be sent (queued or deferred).",
            s.oldest_queued_age_seconds,
        )
        if s.last_send_timestamp is not None:
            yield gauge(
                "exactmaild_last_send_timestamp_seconds",
                "Unix time of the last message the SMTP server accepted.",
                s.last_send_timestamp,
            )
        if s.last_receive_check_timestamp is not None:
            yield gauge(
                "exactmaild_last_receive_check_timestamp_seconds",
                "Unix time of the last successful mailbox check.",
                s.last_receive_check_timestamp,
            )
        yield gauge(
            "exactmaild_queue_paused",
            "1 while sending is paused for an account-level problem (login, quota, rate limit).",
            1 if s.paused else 0,
        )
        yield gauge(
            "exactmaild_storage_ok",
            "0 while the spool or the state store cannot be written (disk full, read-only).",
            1 if s.storage_ok else 0,
        )
        if s.queue_done_at is not None:
            yield gauge(
                "exactmaild_queue_forecast_done_timestamp_seconds",
                "Unix time by which the queue as it stands will have gone (absent: nothing waits).",
                s.queue_done_at,
            )
        b = GaugeMetricFamily(
            "exactmaild_blocked", "1 while sending is blocked for that reason.", labels=["reason"]
        )
        for reason in BLOCKERS:
            b.add_metric([reason], 1 if s.blocked_by == reason else 0)
        yield b


class OAuthCollector(Collector):
    """Exports a TokenCache's token expiry and auth failures; register it on the registry:

        registry.register(OAuthCollector(tokens))

    - `exactmaild_oauth_token_expiry_timestamp_seconds`: when the current access
      token expires (present once a token was fetched);
    - `exactmaild_oauth_refresh_token_expiry_timestamp_seconds`: when the refresh
      token expires, if the provider says (`refresh_token_expires_in`);
    - `exactmaild_auth_failures_total{kind}`: kind = login (a mail server refused
      the login) | token (the token endpoint refused the refresh token or client).
    """

    def __init__(self, tokens: TokenCache) -> None:
        self._tokens = tokens

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "exactmaild_oauth_token_expiry_timestamp_seconds", "OAuth2 access token expiry."
        )
        yield GaugeMetricFamily(
            "exactmaild_oauth_refresh_token_expiry_timestamp_seconds",
            "OAuth2 refresh token expiry.",
        )
        yield CounterMetricFamily("exactmaild_auth_failures", "Refused logins.", labels=["kind"])

    def collect(self) -> Iterator[Metric]:
        latest = self._tokens.latest()
        if latest is not None and latest.expires_at is not None:
            yield GaugeMetricFamily(
                "exactmaild_oauth_token_expiry_timestamp_seconds",
                "Unix time the current OAuth2 access token expires (refreshed 60 s before).",
                value=latest.expires_at,
            )
            if latest.refresh_expires_at is not None:
                yield GaugeMetricFamily(
                    "exactmaild_oauth_refresh_token_expiry_timestamp_seconds",
                    "Unix time the OAuth2 refresh token expires, as the provider said; "
                    "run `exactmaild authorize` before then.",
                    value=latest.refresh_expires_at,
                )
        counts = self._tokens.failures()
        family = CounterMetricFamily(
            "exactmaild_auth_failures",
            "Refused logins by kind: login (a mail server refused the password or access "
            "token), token (the OAuth2 endpoint refused the refresh token or the client).",
            labels=["kind"],
        )
        for kind in ("login", "token"):
            family.add_metric([kind], counts.get(kind, 0))
        yield family


def registry_for(
    families: Sequence[Family],
    snapshot: Callable[[], Snapshot] | None,
    tokens: TokenCache,
    histograms: Sequence[Histo] = (),
) -> CollectorRegistry:
    """A registry exporting `families`, `histograms`, the OAuth2 figures of `tokens`
    and the levels."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(OAuthCollector(tokens))
    registry.register(_FamilyCollector(families))
    registry.register(_HistogramCollector(histograms))
    if snapshot is not None:
        registry.register(_LevelCollector(snapshot))
    return registry


def http_server(sock: socket.socket, registry: CollectorRegistry) -> ThreadingWSGIServer:
    """prometheus-client's WSGI server for `registry`, on a socket already listening.

    Like its start_http_server, but on the daemon's socket (bound at start, so a
    taken port is an error at start) and without the reverse DNS lookup of
    HTTPServer.server_bind; serve_forever(poll_interval=None) then blocks in
    select() until a scrape arrives instead of polling every 0.5 s.
    """

    class Server(ThreadingWSGIServer):
        address_family = sock.family

    host, port = sock.getsockname()[:2]
    httpd = Server((host, port), _SilentHandler, bind_and_activate=False)
    httpd.socket.close()
    httpd.socket = sock
    httpd.server_name, httpd.server_port = host, port
    httpd.setup_environ()
    httpd.set_app(make_wsgi_app(registry))
    return httpd
