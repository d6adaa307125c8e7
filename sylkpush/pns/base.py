"""The contract between the dispatcher and a push-service client.

Every configured application gets one client object.  The dispatcher hands it
an :class:`OutgoingPush` (already rendered headers and payload) and gets back a
Deferred that fires exactly once with a :class:`PushResult`; it never errbacks
for push-service failures, those are results too (503, 410, ...).

The built-in clients, and custom ones that want queueing, retries and
deadlines done for them, subclass :class:`sylkpush.pns.engine.DeliveryClient`
and only say what happened to each attempt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from twisted.internet.defer import Deferred, succeed

# custom push services written from an earlier template import it from here
from sylkpush.config import ConfigError as ConfigError  # noqa: F401


@dataclass(slots=True)
class OutgoingPush:
    """One notification ready to be sent by a push-service client."""

    request_id: str
    token: str
    headers: Dict[str, str]
    #: the APNs and FCM clients keep it only as the JSON they send: they
    #: empty it once the push is theirs, unless remote logging reads it
    payload: Dict[str, Any]
    #: absolute time (in the client's reactor.seconds()) after which the
    #: request must be answered 503 instead of being tried again
    deadline: float
    voip: bool = False


@dataclass(slots=True)
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
    A reload builds clients in a thread: the constructor reads and checks,
    and leaves timers and connections to :meth:`start`.
    """

    #: platform name this client serves (``apple``, ``firebase``, ...)
    platform = ""
    #: True when :meth:`send` always fires by the push's deadline; otherwise
    #: the dispatcher answers the caller itself when the deadline has passed
    enforces_deadlines = False

    def __init__(self, app: Any, reactor: Any) -> None:
        self.app = app
        self.reactor = reactor

    def start(self) -> None:
        """Open connections, fetch tokens; called once after construction."""

    def send(self, push: OutgoingPush) -> "Deferred[PushResult]":
        """Deliver ``push``; the Deferred fires once with a PushResult."""
        raise NotImplementedError

    def take_waiting(self) -> List[Any]:
        """Remove the pushes waiting here (queued, or to be tried again) and
        return them as PendingPush objects, for a reload that replaces this
        client to hand them to its successor."""
        return []

    def stop(self) -> "Deferred[None]":
        """Stop taking work, finish what is in flight, close connections."""
        return succeed(None)

    def answer_unfinished(self) -> Dict[int, int]:
        """At a shutdown's drain deadline: answer every push still here now,
        503 when none of its attempts reached the push service (safe to send
        again), 504 when one was written and never answered (it may have been
        delivered).  Returns how many got each code.  A client that cannot
        tell leaves its callers to the server, which answers them 504."""
        return {}

    def status(self) -> Dict[str, Any]:
        """Connection state for /health and /metrics.

        Keys: ``state`` (str), ``queued`` (int), ``in_flight`` (int),
        ``reconnects`` (int).
        """
        return {"state": "ready", "queued": 0, "in_flight": 0, "reconnects": 0}


#: why a push gets 504 at shutdown
UNANSWERED_AT_SHUTDOWN = "sent, no answer from the push service before shutdown"


def unavailable(reason: str, url: str = "", body: Optional[dict] = None) -> PushResult:
    """A 503 result: not delivered (the push service could not be reached in time)."""
    return PushResult(503, reason, url, body or {})


def unanswered(reason: str, url: str = "") -> PushResult:
    """A 504 result: sent to the push service, whose answer never came."""
    return PushResult(504, reason, url, {})


def headers_text(headers: Union[Mapping[str, str], Iterable[Tuple[str, str]]]) -> str:
    """Request or response headers as one JSON object, for a debug line;
    the value of ``authorization`` is replaced by ``<redacted>``."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return json.dumps({name: "<redacted>" if name.lower() == "authorization" else value for name, value in pairs})
