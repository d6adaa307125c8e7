"""``GET /health``: the state of every configured application.

The answer is the usual JSON envelope; ``data`` maps each application
(``<platform>/<app_id>``) to its client's ``status()`` plus ``up``.  An
application is up when its client reports one of :data:`UP_STATES` (a
client on the delivery engine reports ``failing`` once its attempts keep
failing, whatever its connections say); an application whose push-service
code could not be loaded is down.  The HTTP
status is 200 when at least one application is up, and 503 when none is
configured or all are down, so a load balancer stops sending wake-ups to a
server that cannot deliver any.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Dict, Optional

from twisted.web import server

from sylkpush.expiry import ExpiryWatch
from sylkpush.app_registry import Application, AppRegistry
from sylkpush.web import JsonResource, write_json

log = logging.getLogger(__name__)

#: client states in which an application can deliver now
UP_STATES = frozenset({"ready", "connected", "open", "idle"})


def application_status(app: Application) -> Dict[str, Any]:
    """``app``'s client status with ``up`` added; never raises."""
    if app.client is None:
        return {"state": "unavailable", "reason": app.client_problem, "queued": 0,
                "in_flight": 0, "reconnects": 0, "up": False}
    try:
        status = dict(app.client.status())
    except Exception as exc:
        log.exception("status() of %s failed", app.label)
        status = {"state": "error", "reason": f"status() failed: {type(exc).__name__}"}
    status["up"] = status.get("state") in UP_STATES
    return status


def health(registry: AppRegistry, expiry: Optional[ExpiryWatch] = None) -> Dict[str, Any]:
    """The ``data`` of ``/health``; with ``expiry``, each APNs certificate's expiry too."""
    data = {}
    for app in registry:
        status = application_status(app)
        if expiry is not None:
            status.update(expiry.application_status(app.config))
        data[f"{app.config.platform}/{app.config.app_id}"] = status
    return data


class HealthResource(JsonResource):
    """``GET /health``; ``server`` beside ``data`` shows the API's own
    certificate; with ``storage``, ``data`` also has the token storage's
    state under ``token-storage`` (the v2 API needs it, ``/push`` does not,
    so it does not change the answer's code)."""

    def __init__(self, registry: Callable[[], AppRegistry],
                 storage: Optional[Callable[[], Dict[str, Any]]] = None,
                 expiry: Optional[ExpiryWatch] = None,
                 problems: Optional[Callable[[], Dict[str, Dict[str, str]]]] = None) -> None:
        super().__init__()
        self.registry = registry
        self.storage = storage
        self.expiry = expiry
        self.problems = problems

    def render_GET(self, request: server.Request) -> bytes:
        applications = health(self.registry(), self.expiry)
        up = sum(1 for status in applications.values() if status["up"])
        data = dict(applications)
        if self.storage is not None:
            data["token-storage"] = self.storage()
        extra: Dict[str, Any] = {}
        if self.expiry is not None:
            extra["server"] = self.expiry.server_status()
        if self.problems is not None:
            # sections of applications.ini left out (or kept on their previous
            # settings) are not in data: without this only the log names them
            extra["problems"] = self.problems()
        if not applications:
            return write_json(request, 503, "no application is configured", _jsonable(data), extra or None)
        if not up:
            return write_json(request, 503, "no application can deliver", _jsonable(data), extra or None)
        return write_json(request, 200, f"{up} of {len(applications)} applications up", _jsonable(data), extra or None)


def _jsonable(data: Dict[str, Any]) -> Dict[str, Any]:
    # a client may put non-JSON values (enums, timestamps) in its status
    return json.loads(json.dumps(data, default=str))
