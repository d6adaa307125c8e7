"""Metrics of the v2 API, in the server's Prometheus registry (``GET /metrics``)."""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Iterable, Optional

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily


class _DevicesStored:
    """The storage's device count, as this process last saw it (the same
    storage for every worker: not added up)."""

    def __init__(self, store_status: Callable[[], Dict[str, Any]]) -> None:
        self.store_status = store_status

    def collect(self) -> Iterable[Any]:
        family = GaugeMetricFamily("sylkpush_devices_stored", "Devices in the token storage (NaN when unknown)")
        family.add_metric([], float(self.store_status().get("devices", math.nan)))
        return [family]


class TokenMetrics:
    """Devices stored, registrations, removals by reason, pushes by result.

    The counters go to ``summed``, the device count to ``registry`` (see
    :class:`sylkpush.metrics.Metrics`: with several workers, ``summed`` is None).
    """

    def __init__(self, registry: CollectorRegistry, summed: Optional[CollectorRegistry],
                 store_status: Callable[[], Dict[str, Any]]) -> None:
        self.registrations = Counter("sylkpush_device_registrations",
                                     "Devices stored or replaced through the v2 API", registry=summed)
        self.removals = Counter("sylkpush_device_removals",
                                "Devices removed, by reason (caller: a DELETE; 410: the push service "
                                "said the token is gone)", ["reason"], registry=summed)
        self.pushes = Counter("sylkpush_v2_pushes", "Pushes to stored devices, by final code", ["code"],
                              registry=summed)
        registry.register(_DevicesStored(store_status))

    def registered(self) -> None:
        self.registrations.inc()

    def removed(self, reason: str) -> None:
        self.removals.labels(reason).inc()

    def pushed(self, code: int) -> None:
        self.pushes.labels(str(code)).inc()
