"""Prometheus metrics: ``GET /metrics``.

Each server has its own :class:`~prometheus_client.CollectorRegistry` (never
the process-wide default), so several servers in one process (the tests) do
not mix their numbers.  Counters are fed by the dispatcher's observers; the
state of the push clients (queue depth, reconnects, token refreshes) is read
from their ``status()`` at scrape time, and the record of results of those
on the delivery engine from its attributes, so the clients need no metrics
code.

With several workers (:mod:`sylkpush.workers`) a scrape reaches one of them
and must show them all: prometheus-client's multiprocess mode keeps every
worker's counters and histograms in files of a directory the supervisor
chose, and the scraped worker adds them up.  The clients' state and the
pushes in flight are then copied into gauges that add up too (an
application is up when it is up in every worker), once a second and at each
scrape.  What every worker sees alike (certificate expiry, devices stored)
is reported by the scraped worker alone.

Only prometheus_client API present in Debian 12's 0.16 is used.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, Iterable, Literal, Optional, Tuple

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from twisted.internet.task import LoopingCall
from twisted.web import server

from sylkpush.dispatch import Dispatcher, PreparedPush
from sylkpush.pns.base import PushResult
from sylkpush.pns.engine import DeliveryClient
from sylkpush.app_registry import AppRegistry
from sylkpush.web import JsonResource

log = logging.getLogger(__name__)

#: seconds; push services answer in tens of milliseconds, retries take seconds
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 64.0)


#: seconds between two copies of a worker's state into the added-up gauges
REFRESH_INTERVAL = 1.0

LABELS = ("app", "platform")
#: the per-application metrics read from ``client.status()``: name, help, status key
STATE = (("sylkpush_queued", "Pushes waiting in the application's queue", "queued"),
         ("sylkpush_client_in_flight", "Pushes sent to the push service and not yet answered", "in_flight"))
UP = ("sylkpush_application_up", "1 when the application can deliver now")
COUNTS = (("sylkpush_reconnects", "Connections re-opened to the push service", "reconnects"),
          ("sylkpush_token_refreshes", "Authentication tokens (JWT, OAuth) renewed", "token_refreshes"))
#: the record of results the delivery engine keeps: name, help, attribute,
#: and how several workers' values make one (the latest, the worst)
RECORD: Tuple[Tuple[str, str, str, Literal["livemax"]], ...] = (
    ("sylkpush_last_success_timestamp_seconds",
     "When the push service last answered a push (not 5xx, 401, 403), seconds since the epoch",
     "last_success", "livemax"),
    ("sylkpush_last_failure_timestamp_seconds",
     "When an attempt or a connect last failed, seconds since the epoch", "last_failure", "livemax"),
    ("sylkpush_consecutive_failures", "Attempts failed since the push service last answered a push",
     "consecutive_failures", "livemax"),
    ("sylkpush_consecutive_connect_failures", "Connects failed since a connection was last ready",
     "connect_failures", "livemax"))


def _application_states(registry: AppRegistry) -> Iterable[Tuple[Tuple[str, str], Dict[str, Any], Any]]:
    """(labels, status, client) of each application."""
    from sylkpush.health import application_status  # health imports web, as we do
    for app in registry:
        yield (app.config.app_id, app.config.platform), application_status(app), app.client


def _recorded(client: Any, attribute: str) -> Optional[float]:
    """One figure of the record of results (None: not known, or not a client on the engine)."""
    if not isinstance(client, DeliveryClient):
        return None
    value = getattr(client, attribute)
    return None if value is None else float(value)


class ClientStatusCollector:
    """Per-application gauges and counters read from ``client.status()``."""

    def __init__(self, registry: Callable[[], AppRegistry]) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Any]:
        gauges = [GaugeMetricFamily(name, text, labels=LABELS) for name, text, _ in STATE]
        up = GaugeMetricFamily(*UP, labels=LABELS)
        counters = [CounterMetricFamily(name, text, labels=LABELS) for name, text, _ in COUNTS]
        record = [GaugeMetricFamily(name, text, labels=LABELS) for name, text, _, _ in RECORD]
        for values, status, client in _application_states(self._registry()):
            for family, (_, _, key) in zip(gauges, STATE):
                family.add_metric(values, _number(status.get(key)))
            up.add_metric(values, 1.0 if status["up"] else 0.0)
            for counter, (_, _, key) in zip(counters, COUNTS):
                counter.add_metric(values, _number(status.get(key)))
            for family, (_, _, attribute, _) in zip(record, RECORD):
                value = _recorded(client, attribute)
                if value is not None:
                    family.add_metric(values, value)
        return gauges + [up] + counters + record


class SummedClientStatus:
    """What ClientStatusCollector reports, in metrics that add up over the
    workers: gauges summed over the live workers (``up``: their minimum;
    the record of results: the latest or the worst), and counters fed with
    what each worker's counts grew by."""

    def __init__(self, registry: Callable[[], AppRegistry]) -> None:
        self._registry = registry
        self.gauges = [Gauge(name, text, LABELS, registry=None, multiprocess_mode="livesum")
                       for name, text, _ in STATE]
        self.up = Gauge(*UP, LABELS, registry=None, multiprocess_mode="livemin")
        self.counters = [Counter(name, text, LABELS, registry=None) for name, text, _ in COUNTS]
        self.record = [Gauge(name, text, LABELS, registry=None, multiprocess_mode=mode)
                       for name, text, _, mode in RECORD]
        #: (labels, status key) -> the count last added
        self._counted: Dict[Tuple[Tuple[str, str], str], float] = {}
        self._seen: set = set()

    def refresh(self) -> None:
        seen = set()
        for values, status, client in _application_states(self._registry()):
            seen.add(values)
            for gauge, (_, _, key) in zip(self.gauges, STATE):
                gauge.labels(*values).set(_number(status.get(key)))
            self.up.labels(*values).set(1.0 if status["up"] else 0.0)
            for counter, (_, _, key) in zip(self.counters, COUNTS):
                count = _number(status.get(key))
                last = self._counted.get((values, key), 0.0)
                # a client replaced by a reload counts from 0 again
                grown = count - last if count >= last else count
                child = counter.labels(*values)  # shown from 0 on, as with one process
                if grown > 0:
                    child.inc(grown)
                self._counted[(values, key)] = count
            for gauge, (_, _, attribute, _) in zip(self.record, RECORD):
                value = _recorded(client, attribute)
                if value is not None:
                    gauge.labels(*values).set(value)
        for values in self._seen - seen:  # removed by a reload: nothing waits there any more
            for gauge in self.gauges:
                gauge.labels(*values).set(0.0)
            self.up.labels(*values).set(0.0)
        self._seen = seen


def _number(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


class Metrics:
    """The metrics of one server, fed by its dispatcher.

    ``multiprocess_dir``: the directory of the workers' metrics (several
    workers), or "" (one process).  :attr:`registry` is what ``/metrics``
    shows; collectors that report what this process sees alike in every
    worker are registered there.  Counters that add up over the workers are
    created in :attr:`summed` (None with several workers: they live in the
    directory's files).
    """

    def __init__(self, registry: Callable[[], AppRegistry], dispatcher: Dispatcher,
                 clock: Callable[[], float] = time.monotonic, multiprocess_dir: str = "") -> None:
        self.clock = clock
        self.dispatcher = dispatcher
        self.registry = CollectorRegistry(auto_describe=True)
        self.summed: Optional[CollectorRegistry] = None if multiprocess_dir else self.registry
        self._summed_state: Optional[SummedClientStatus] = None
        #: (app, platform, code) -> the request counter's and latency histogram's children
        self._children: Dict[Tuple[str, str, int], Tuple[Any, Any]] = {}
        self._refreshing: Optional[LoopingCall] = None
        self.requests = Counter("sylkpush_requests", "Pushes answered, by application, platform and final code",
                                ["app", "platform", "code"], registry=self.summed)
        # refusals carry no app label: its value comes from the caller and would be unbounded
        self.refusals = Counter("sylkpush_refused_requests",
                                "Requests answered without a push (invalid, unknown application, ...)",
                                ["code"], registry=self.summed)
        self.latency = Histogram("sylkpush_push_duration_seconds",
                                 "Time from the request to the push service's final answer, retries included",
                                 ["app", "platform"], buckets=LATENCY_BUCKETS, registry=self.summed)
        in_flight = ("sylkpush_in_flight", "Pushes handed to a push client and not yet answered")
        if multiprocess_dir:
            from prometheus_client.multiprocess import MultiProcessCollector
            MultiProcessCollector(self.registry, multiprocess_dir)
            self.in_flight = Gauge(*in_flight, registry=None, multiprocess_mode="livesum")
            self._summed_state = SummedClientStatus(registry)
        else:
            self.in_flight = Gauge(*in_flight, registry=self.registry)
            self.in_flight.set_function(lambda: dispatcher.in_flight)
            self.registry.register(ClientStatusCollector(registry))

    def start(self, reactor: Any) -> None:
        """With several workers: copy this one's state into the added-up gauges every second."""
        if self._summed_state is not None and self._refreshing is None:
            self._refreshing = LoopingCall(self.refresh)
            self._refreshing.clock = reactor
            self._refreshing.start(REFRESH_INTERVAL)

    def stop(self) -> None:
        if self._refreshing is not None and self._refreshing.running:
            self._refreshing.stop()
        self._refreshing = None

    def refresh(self) -> None:
        if self._summed_state is None:
            return
        try:
            self.in_flight.set(self.dispatcher.in_flight)
            self._summed_state.refresh()
        except Exception:  # the metrics must never take the server down
            log.exception("copying this worker's state into the metrics failed")

    def observe(self, prepared: PreparedPush, result: PushResult) -> None:
        """Dispatcher observer: one finished push."""
        config = prepared.app.config
        # the labelled children are looked up once: labels() costs more than inc() and observe()
        key = (config.app_id, config.platform, result.code)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self.requests.labels(config.app_id, config.platform, str(result.code)),
                                              self.latency.labels(config.app_id, config.platform))
        children[0].inc()
        children[1].observe(max(0.0, self.clock() - prepared.started))

    def refused(self, code: int) -> None:
        """Dispatcher refusal observer."""
        self.refusals.labels(str(code)).inc()

    def exposition(self) -> bytes:
        self.refresh()
        return generate_latest(self.registry)


class MetricsResource(JsonResource):
    """``GET /metrics``: the Prometheus text format."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return self.metrics.exposition()
