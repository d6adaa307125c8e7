"""Prometheus metrics (SPEC §12): ``GET /metrics``.

Each server has its own :class:`~prometheus_client.CollectorRegistry` (never
the process-wide default), so several servers in one process (the tests) do
not mix their numbers.  Counters are fed by the dispatcher's observers; the
state of the push clients (queue depth, reconnects, token refreshes) is read
from their ``status()`` at scrape time, and the record of results of those
on the delivery engine from its attributes, so the clients need no metrics
code.

Only prometheus_client API present in Debian 12's 0.16 is used.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from twisted.web import server

from sylkpush.dispatch import Dispatcher, PreparedPush
from sylkpush.pns.base import PushResult
from sylkpush.pns.engine import DeliveryClient
from sylkpush.registry import AppRegistry
from sylkpush.web import JsonResource

log = logging.getLogger(__name__)

#: seconds; push services answer in tens of milliseconds, retries take seconds
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 64.0)


class ClientStatusCollector:
    """Per-application gauges and counters read from ``client.status()``."""

    def __init__(self, registry: Callable[[], AppRegistry]) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Any]:
        labels = ["app", "platform"]
        queued = GaugeMetricFamily("sylkpush_queued", "Pushes waiting in the application's queue", labels=labels)
        client_in_flight = GaugeMetricFamily("sylkpush_client_in_flight",
                                             "Pushes sent to the push service and not yet answered", labels=labels)
        up = GaugeMetricFamily("sylkpush_application_up", "1 when the application can deliver now", labels=labels)
        reconnects = CounterMetricFamily("sylkpush_reconnects", "Connections re-opened to the push service",
                                         labels=labels)
        refreshes = CounterMetricFamily("sylkpush_token_refreshes",
                                        "Authentication tokens (JWT, OAuth) renewed", labels=labels)
        last_success = GaugeMetricFamily("sylkpush_last_success_timestamp_seconds",
                                         "When the push service last answered a push (not 5xx, 401, 403), "
                                         "seconds since the epoch", labels=labels)
        last_failure = GaugeMetricFamily("sylkpush_last_failure_timestamp_seconds",
                                         "When an attempt or a connect last failed, seconds since the epoch",
                                         labels=labels)
        failures = GaugeMetricFamily("sylkpush_consecutive_failures",
                                     "Attempts failed since the push service last answered a push", labels=labels)
        connect_failures = GaugeMetricFamily("sylkpush_consecutive_connect_failures",
                                             "Connects failed since a connection was last ready", labels=labels)
        from sylkpush.health import application_status  # health imports web, as we do
        for app in self._registry():
            status = application_status(app)
            values = [app.config.app_id, app.config.platform]
            queued.add_metric(values, _number(status.get("queued")))
            client_in_flight.add_metric(values, _number(status.get("in_flight")))
            up.add_metric(values, 1.0 if status["up"] else 0.0)
            reconnects.add_metric(values, _number(status.get("reconnects")))
            refreshes.add_metric(values, _number(status.get("token_refreshes")))
            client = app.client
            if isinstance(client, DeliveryClient):  # the record of results is the engine's
                if client.last_success is not None:
                    last_success.add_metric(values, client.last_success)
                if client.last_failure is not None:
                    last_failure.add_metric(values, client.last_failure)
                failures.add_metric(values, client.consecutive_failures)
                connect_failures.add_metric(values, client.connect_failures)
        return [queued, client_in_flight, up, reconnects, refreshes, last_success, last_failure, failures,
                connect_failures]


def _number(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


class Metrics:
    """The metrics of one server, fed by its dispatcher."""

    def __init__(self, registry: Callable[[], AppRegistry], dispatcher: Dispatcher,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("sylkpush_requests", "Pushes answered, by application, platform and final code",
                                ["app", "platform", "code"], registry=self.registry)
        # refusals carry no app label: its value comes from the caller and would be unbounded
        self.refusals = Counter("sylkpush_refused_requests",
                                "Requests answered without a push (invalid, unknown application, ...)",
                                ["code"], registry=self.registry)
        self.in_flight = Gauge("sylkpush_in_flight", "Pushes handed to a push client and not yet answered",
                               registry=self.registry)
        self.in_flight.set_function(lambda: dispatcher.in_flight)
        self.latency = Histogram("sylkpush_push_duration_seconds",
                                 "Time from the request to the push service's final answer, retries included",
                                 ["app", "platform"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(ClientStatusCollector(registry))

    def observe(self, prepared: PreparedPush, result: PushResult) -> None:
        """Dispatcher observer: one finished push."""
        config = prepared.app.config
        self.requests.labels(config.app_id, config.platform, str(result.code)).inc()
        self.latency.labels(config.app_id, config.platform).observe(max(0.0, self.clock() - prepared.started))

    def refused(self, code: int) -> None:
        """Dispatcher refusal observer."""
        self.refusals.labels(str(code)).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsResource(JsonResource):
    """``GET /metrics``: the Prometheus text format."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return self.metrics.exposition()
