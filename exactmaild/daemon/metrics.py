"""Prometheus metrics: an app-owned registry, no global state.

Counters are incremented where things happen. Everything that is a level
(sent in the window, remaining, queue depth, ages) is computed at scrape time
from a `Snapshot` the service provides, so a scrape never shows a stale
figure, e.g. the remaining allowance jumping back up at midnight with no send
to trigger an update. The OAuth2 token expiry and the refused logins are read
the same way, from the daemon's `TokenCache` (`OAuthCollector`).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exactmaild import __version__
from exactmaild.auth.oauth import TokenCache
from exactmaild.core.forecast import BLOCKERS
from exactmaild.core.states import PUBLIC_NAME, REPORTED
from exactmaild.outbox.levels import Snapshot


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
            "exactmaild_queue_messages", "Spool depth by state.", labels=["state"]
        )
        for state in (PUBLIC_NAME[s] for s in REPORTED):
            q.add_metric([state], s.queue.get(state, 0))
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


class Metrics:
    """Every metric exactmaild exports, registered on a registry it owns."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot] | None = None,
        *,
        tokens: TokenCache | None = None,
    ) -> None:
        """`snapshot`: the levels, at each scrape; `tokens`: the process's OAuth2 token
        cache, for the token expiry and the refused logins (None: a cache of its own,
        so the failure counters are exported, at 0)."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        r.register(OAuthCollector(tokens if tokens is not None else TokenCache()))
        self.sent = Counter(
            "exactmaild_sent", "Messages accepted by the SMTP server since start.", registry=r
        )
        self.send_failures = Counter(
            "exactmaild_send_failures",
            "Failed send attempts by kind (transient, permanent, account).",
            ["kind"],
            registry=r,
        )
        for kind in ("transient", "permanent", "account"):
            self.send_failures.labels(kind)
        self.received = Counter(
            "exactmaild_received", "Messages delivered to the maildir.", registry=r
        )
        self.receive_checks = Counter(
            "exactmaild_receive_checks", "Mailbox checks by result.", ["result"], registry=r
        )
        for result in ("ok", "error"):
            self.receive_checks.labels(result)
        self.reloads = Counter(
            "exactmaild_config_reloads", "Configuration reloads by result.", ["result"], registry=r
        )
        for result in ("success", "failure"):
            self.reloads.labels(result)
        self.last_reload_ok = Gauge(
            "exactmaild_config_last_reload_successful",
            "1 if the last configuration reload succeeded (or none was tried).",
            registry=r,
        )
        self.last_reload_ok.set(1)
        self.build_info = Gauge(
            "exactmaild_build_info", "Always 1; the version as a label.", ["version"], registry=r
        )
        self.build_info.labels(__version__).set(1)
        if snapshot is not None:
            r.register(_LevelCollector(snapshot))

    def serve(self, host: str, port: int) -> Callable[[], None]:
        """Serve GET /metrics; returns a function that stops the server.

        Like prometheus_client's start_http_server, but the server blocks in
        select() until a scrape arrives instead of polling every 0.5 s: an
        idle daemon should not wake 120 times a minute for nothing.
        """
        from wsgiref.simple_server import make_server

        from prometheus_client.exposition import (
            ThreadingWSGIServer,
            _get_best_family,
            _SilentHandler,
            make_wsgi_app,
        )

        class Server(ThreadingWSGIServer):
            pass

        Server.address_family, addr = _get_best_family(host, port)  # type: ignore[no-untyped-call]
        httpd = make_server(
            addr, port, make_wsgi_app(self.registry), Server, handler_class=_SilentHandler
        )
        thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": None}, daemon=True
        )
        thread.start()

        def stop() -> None:
            stopper = threading.Thread(target=httpd.shutdown, daemon=True)
            stopper.start()
            # shutdown() waits for the loop, which sleeps until a connection: make one.
            with contextlib.suppress(OSError):
                socket.create_connection((host.strip("[]"), port), timeout=1).close()
            stopper.join(5)
            httpd.server_close()
            thread.join(5)

        return stop
