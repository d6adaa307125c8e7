"""Metrics of the v2 API, in the server's Prometheus registry (``GET /metrics``)."""

from __future__ import annotations

import math
from typing import Any, Callable, Dict

from prometheus_client import CollectorRegistry, Counter, Gauge


class TokenMetrics:
    """Devices stored, registrations, removals by reason, pushes by result."""

    def __init__(self, registry: CollectorRegistry, store_status: Callable[[], Dict[str, Any]]) -> None:
        self.registrations = Counter("sylkpush_device_registrations",
                                     "Devices stored or replaced through the v2 API", registry=registry)
        self.removals = Counter("sylkpush_device_removals",
                                "Devices removed, by reason (caller: a DELETE; 410: the push service "
                                "said the token is gone)", ["reason"], registry=registry)
        self.pushes = Counter("sylkpush_v2_pushes", "Pushes to stored devices, by final code", ["code"],
                              registry=registry)
        self.devices = Gauge("sylkpush_devices_stored", "Devices in the token storage (NaN when unknown)",
                             registry=registry)
        self.devices.set_function(lambda: float(store_status().get("devices", math.nan)))

    def registered(self) -> None:
        self.registrations.inc()

    def removed(self, reason: str) -> None:
        self.removals.labels(reason).inc()

    def pushed(self, code: int) -> None:
        self.pushes.labels(str(code)).inc()
