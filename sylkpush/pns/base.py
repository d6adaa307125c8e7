"""The contract between the dispatcher and a push-service client.

Every configured application gets one client object.  The dispatcher hands it
an :class:`OutgoingPush` (already rendered headers and payload) and gets back a
Deferred that fires exactly once with a :class:`PushResult`; it never errbacks
for push-service failures, those are results too (503, 410, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from twisted.internet.defer import Deferred, succeed


class ConfigError(Exception):
    """An application's settings are unusable; the message says why."""


@dataclass
class OutgoingPush:
    """One notification ready to be sent by a push-service client."""

    request_id: str
    token: str
    headers: Dict[str, str]
    payload: Dict[str, Any]
    #: absolute time (in the client's reactor.seconds()) after which the
    #: request must be answered 503 instead of being tried again
    deadline: float
    voip: bool = False


@dataclass
class PushResult:
    """The final outcome of one push, as reported to the HTTP caller."""

    code: int
    reason: str
    url: str
    #: the push service's parsed JSON answer; always a dict
    body: Dict[str, Any] = field(default_factory=dict)


class PushClient:
    """Base class of the per-application push-service clients.

    Subclasses are built with ``Client(app, reactor)`` where ``app`` is an
    :class:`sylkpush.config.AppConfig`; they raise :class:`ConfigError` from
    the constructor when the settings cannot work (missing key file, ...).
    """

    #: platform name this client serves (``apple``, ``firebase``, ...)
    platform = ""

    def __init__(self, app: Any, reactor: Any) -> None:
        self.app = app
        self.reactor = reactor

    def start(self) -> None:
        """Open connections, fetch tokens; called once after construction."""

    def send(self, push: OutgoingPush) -> "Deferred[PushResult]":
        """Deliver ``push``; the Deferred fires once with a PushResult."""
        raise NotImplementedError

    def take_waiting(self) -> List[Any]:
        """Remove the pushes still waiting in this client's queue (none sent
        yet) and return them as PendingPush objects, for a reload that
        replaces this client to hand them to its successor."""
        return []

    def stop(self) -> "Deferred[None]":
        """Stop taking work, finish what is in flight, close connections."""
        return succeed(None)

    def status(self) -> Dict[str, Any]:
        """Connection state for /health and /metrics.

        Keys: ``state`` (str), ``queued`` (int), ``in_flight`` (int),
        ``reconnects`` (int).
        """
        return {"state": "ready", "queued": 0, "in_flight": 0, "reconnects": 0}


def unavailable(reason: str, url: str = "", body: Optional[dict] = None) -> PushResult:
    """A 503 result: the push service could not be reached in time."""
    return PushResult(503, reason, url, body or {})
