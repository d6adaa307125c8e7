"""The APNs client: a pool of long-lived HTTP/2 connections per Apple application.

:class:`AppleClient` is the transport of the delivery engine
(:class:`sylkpush.pns.engine.DeliveryClient`, which queues, times and
retries) and the manager of ``apple_connections`` connections, each an
:class:`sylkpush.pns.http2.H2ClientProtocol`.  Each connection (a
:class:`_Slot` of the pool) is opened at start and kept open: the host name
is resolved again at each connect and the connections are spread over the
addresses; TLS and the first SETTINGS must come within
:attr:`AppleClient.handshake_timeout`; a connection that served pushes and is
closed or says GOAWAY is replaced at once, others after a jittered
exponential backoff that only an answered push resets.  Pushes go round the
ready connections; APNs answers are mapped to results here.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter
from typing import Any, Dict, List, Optional, Set, Tuple, Union
from urllib.parse import quote

from twisted.internet.address import IPv6Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IResolutionReceiver
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure
from zope.interface import implementer

from sylkpush.pns.apple_auth import TokenAuth, auth_for
from sylkpush.pns.base import ConfigError, OutgoingPush, PushResult, headers_text
from sylkpush.pns.engine import DeliveryClient, parse_retry_after
from sylkpush.pns.http2 import REFUSED, RESET, UNPROCESSED, H2ClientProtocol
from sylkpush.pns.pending import DEFAULT_QUEUE_LIMIT, IN_FLIGHT, PendingPush, backoff_delay
from sylkpush.pns.tls import client_tls_options

log = logging.getLogger(__name__)

#: payload limits in bytes (Apple: 4 KiB, 5 KiB for VoIP notifications)
PAYLOAD_LIMIT = 4096
VOIP_PAYLOAD_LIMIT = 5120
#: seconds before a waiting push's deadline when a connection attempt is made
#: whatever the backoff says (time to connect, handshake and be answered)
LAST_CHANCE = 2.0
#: HTTP/2 connections per application unless apple_connections says otherwise
DEFAULT_CONNECTIONS = 2
MAX_CONNECTIONS = 32

#: reason -> (usual status code, description)
APNS_REASONS: Dict[str, tuple] = {
    "BadCollapseId": (400, "The collapse identifier exceeds the maximum allowed size."),
    "BadDeviceToken": (400, "The specified device token is invalid. Verify that the request "
                            "contains a valid token and that the token matches the environment."),
    "BadExpirationDate": (400, "The apns-expiration value is invalid."),
    "BadMessageId": (400, "The apns-id value is invalid."),
    "BadPriority": (400, "The apns-priority value is invalid."),
    "BadTopic": (400, "The apns-topic value is invalid."),
    "DeviceTokenNotForTopic": (400, "The device token doesn't match the specified topic."),
    "DuplicateHeaders": (400, "One or more headers are repeated."),
    "IdleTimeout": (400, "Idle timeout."),
    "InvalidPushType": (400, "The apns-push-type value is invalid."),
    "MissingDeviceToken": (400, "The device token isn't specified in the request :path. Verify "
                                "that the :path header contains the device token."),
    "MissingTopic": (400, "The apns-topic header of the request isn't specified and is required. "
                          "The apns-topic header is mandatory when the client is connected using "
                          "a certificate that supports multiple topics."),
    "PayloadEmpty": (400, "The message payload is empty."),
    "TopicDisallowed": (400, "Pushing to this topic is not allowed."),
    "BadCertificate": (403, "The certificate is invalid."),
    "BadCertificateEnvironment": (403, "The client certificate is for the wrong environment."),
    "ExpiredProviderToken": (403, "The provider token is stale and a new token should be generated."),
    "Forbidden": (403, "The specified action is not allowed."),
    "InvalidProviderToken": (403, "The provider token is not valid, or the token signature "
                                  "can't be verified."),
    "MissingProviderToken": (403, "No provider certificate was used to connect to APNs, and the "
                                  "authorization header is missing or no provider token is specified."),
    "UnrelatedKeyIdInToken": (403, "The key ID in the provider token isn't related to the key ID "
                                   "of the token used in the first push of this connection. To use "
                                   "this token, open a new connection."),
    "BadEnvironmentKeyInToken": (403, "The key ID in the provider token doesn't match the environment."),
    "BadPath": (404, "The request contained an invalid :path value."),
    "MethodNotAllowed": (405, "The specified :method value isn't POST."),
    "ExpiredToken": (410, "The device token has expired."),
    "Unregistered": (410, "The device token is inactive for the specified topic. There is no need "
                          "to send further pushes to the same device token, unless your "
                          "application retrieves the same device token."),
    "PayloadTooLarge": (413, "The message payload is too large. The maximum payload size is 4096 "
                             "bytes (5120 bytes for VoIP notifications)."),
    "TooManyProviderTokenUpdates": (429, "The provider's authentication token is being updated "
                                         "too often. Update the authentication token no more "
                                         "than once every 20 minutes."),
    "TooManyRequests": (429, "Too many requests were made consecutively to the same device token."),
    "InternalServerError": (500, "An internal server error occurred."),
    "ServiceUnavailable": (503, "The service is unavailable."),
    "Shutdown": (503, "The APNs server is shutting down."),
}

#: descriptions of statuses that come without a reason
STATUS_TEXT = {
    200: "Success",
    400: "Bad request",
    403: "There was an error with the certificate or with the provider's authentication token.",
    404: "The request contained an invalid :path value.",
    405: "The request used an invalid :method value. Only POST requests are supported.",
    410: "The device token is no longer active for the topic.",
    413: "The notification payload was too large.",
    429: "The server received too many requests for the same device token.",
    500: "Internal server error.",
    503: "The server is shutting down and unavailable.",
}


def describe(status: int, reason: str = "") -> str:
    """``Reason - description`` for an APNs answer (the status text when no reason)."""
    if reason:
        known = APNS_REASONS.get(reason)
        return f"{reason} - {known[1]}" if known else f"{reason} - Unknown APNs reason (status {status})"
    return STATUS_TEXT.get(status, f"HTTP status {status}")


def is_invalid_token(status: int, reason: str) -> bool:
    """Answers that mean the caller should forget the device token (→ 410)."""
    return status == 410 or (status == 400 and reason == "BadDeviceToken")


def _authority(host: str, port: int) -> str:
    name = f"[{host}]" if ":" in host else host
    return name if port == 443 else f"{name}:{port}"




def device_path(token: str) -> str:
    """The :path of a push to ``token``.

    Everything but unreserved characters is percent-encoded, and so are the
    dots of a token made only of dots: no token can form a dot-segment
    (``/3/device/..``) or leave ``/3/device/``.  Hex tokens are unchanged.
    """
    quoted = quote(token, safe="")
    if not quoted.strip("."):
        quoted = quoted.replace(".", "%2E")
    return "/3/device/" + quoted


def pool_size_of(app: Any) -> int:
    """``apple_connections`` of the application (ConfigError when unusable)."""
    text = app.option("apple_connections", "").strip()
    if not text:
        return DEFAULT_CONNECTIONS
    try:
        size = int(text)
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_CONNECTIONS:
        raise ConfigError(f"apple_connections must be a whole number from 1 to {MAX_CONNECTIONS}")
    return size


def _where(address: Any) -> str:
    if address is None:
        return "?"
    return f"[{address.host}]:{address.port}" if ":" in address.host else f"{address.host}:{address.port}"


class _ApplePending(PendingPush):
    """A push with its request; it is also the handler of its attempt's stream."""

    def __init__(self, push: OutgoingPush, client: "AppleClient", url: str, body: bytes,
                 headers: List[Tuple[str, str]]) -> None:
        super().__init__(push, client, url)
        self.body = body
        self.headers = headers
        self.authorization: Optional[str] = None
        self.auth_retried = False
        #: the pool slot whose connection carries the current attempt
        self.slot: Optional["_Slot"] = None

    def response(self, status: int, headers: Dict[str, str], body: bytes) -> None:
        self.owner.stream_answered(self, status, headers, body)

    def failed(self, kind: str, reason: str) -> None:
        self.owner.stream_failed(self, kind, reason)


class _Slot:
    """One connection of the pool through its lives: connecting, ready,
    waiting to reconnect.  It is the listener of its H2ClientProtocol."""

    def __init__(self, client: "AppleClient", index: int) -> None:
        self.client = client
        self.index = index
        #: the current connection (TCP up; maybe not ready yet)
        self.protocol: Optional[H2ClientProtocol] = None
        #: resolving and connecting
        self.attempt: Optional[Deferred] = None
        self.address: Any = None
        self.handshake_timer: Any = None
        self.reconnect_timer: Any = None
        self.timed_out = ""
        #: connections in a row that never answered a push
        self.failures = 0

    @property
    def busy(self) -> bool:
        return self.protocol is not None or self.attempt is not None

    def cancel_timers(self) -> None:
        for timer in (self.handshake_timer, self.reconnect_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self.handshake_timer = self.reconnect_timer = None

    # -- listener of H2ClientProtocol ------------------------------------------

    def connection_ready(self, protocol: H2ClientProtocol) -> None:
        self.client._ready(self, protocol)

    def streams_available(self, protocol: H2ClientProtocol) -> None:
        self.client.pump()

    def connection_goaway(self, protocol: H2ClientProtocol, reason: str) -> None:
        self.client._goaway(self, protocol, reason)

    def connection_silent(self, protocol: H2ClientProtocol) -> None:
        # what silenced this connection (a NAT, a route) may have silenced
        # the others: the requests about to be resent must not go to a dead one
        for other in self.client.ready:
            if other is not protocol:
                other.probe()

    def connection_closed(self, protocol: H2ClientProtocol, reason: str) -> None:
        self.client._closed(self, protocol, reason)


class _ProtocolFactory(Factory):
    noisy = False

    def __init__(self, slot: _Slot) -> None:
        self.slot = slot

    def buildProtocol(self, addr: Any) -> H2ClientProtocol:  # noqa: N802
        client = self.slot.client
        return H2ClientProtocol(self.slot, client.reactor, ping_interval=client.ping_interval,
                                ping_timeout=client.ping_timeout, answer_timeout=client.answer_timeout)


@implementer(IResolutionReceiver)
class _Addresses:
    """Collects what a name resolution finds."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.found: List[Any] = []
        self.done: Deferred = Deferred()

    def resolutionBegan(self, resolution: Any) -> None:  # noqa: N802
        pass

    def addressResolved(self, address: Any) -> None:  # noqa: N802
        self.found.append(address)

    def resolutionComplete(self) -> None:  # noqa: N802
        if self.done.called:  # cancelled by the handshake timeout
            return
        if self.found:
            self.done.callback(self.found)
        else:
            self.done.errback(DNSLookupError(self.host))


class AppleClient(DeliveryClient):
    """Sends the pushes of one Apple application over a pool of HTTP/2 connections.

    ``AppleClient(app, reactor, queue_limit=10000, connections=None)``;
    ``connections`` overrides ``apple_connections``.  Raises ConfigError when
    the settings cannot work.  The timing attributes below may be changed
    before :meth:`start`.
    """

    platform = "apple"
    name = "APNs"

    reconnect_initial = 1.0
    reconnect_max = 60.0
    retry_initial = 0.5
    retry_max = 60.0
    #: seconds for the TCP connection
    connect_timeout = 10.0
    #: seconds from the start of a connection attempt (name resolution
    #: included) to TLS done and the server's first SETTINGS
    handshake_timeout = 10.0
    ping_interval = 60.0
    ping_timeout = 20.0
    #: seconds a request may wait with the connection silent before a PING
    #: must prove it alive (see sylkpush.pns.http2)
    answer_timeout = 1.5
    #: seconds closing connections get at stop before they are dropped
    close_grace = 2.0

    def __init__(self, app: Any, reactor: Any, queue_limit: int = DEFAULT_QUEUE_LIMIT,
                 connections: Optional[int] = None) -> None:
        super().__init__(app, reactor, queue_limit=queue_limit)
        self.auth = auth_for(app, reactor)
        self.tls = client_tls_options(app.apple_host, app.tls_ca_file, self.auth.client_certificate,
                                      alpn=(b"h2",))
        self.host = app.apple_host
        self.port = app.apple_port
        self.authority = _authority(self.host, self.port)
        self.base_url = f"https://{self.authority}"
        self.pool_size = connections or pool_size_of(app)
        self.slots = [_Slot(self, index) for index in range(self.pool_size)]
        #: connections that take new streams, in the order pushes go round them
        self.ready: List[H2ClientProtocol] = []
        #: connections that said GOAWAY or were retired, until they close
        self._draining: Set[H2ClientProtocol] = set()
        self._next = 0
        self.reconnects = 0
        self.connection_failure = ""
        #: address -> when a connection to it last failed
        self._address_failures: Dict[Tuple[str, int], float] = {}
        self._all_closed: Optional[Deferred] = None
        self._close_timer: Any = None

    # -- the transport of the engine -------------------------------------------

    @property
    def peer(self) -> str:
        return self.authority

    def push_url(self, push: OutgoingPush) -> str:
        return self.base_url + device_path(push.token)

    def prepare(self, push: OutgoingPush) -> Union[_ApplePending, PushResult]:
        path = device_path(push.token)
        url = self.base_url + path
        body = json.dumps(push.payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        voip = push.voip or push.headers.get("apns-push-type") == "voip"
        limit = VOIP_PAYLOAD_LIMIT if voip else PAYLOAD_LIMIT
        if len(body) > limit:
            result = PushResult(413, f"{describe(413, 'PayloadTooLarge')} ({len(body)} bytes, "
                                     f"the limit is {limit})", url)
            log.info("%s: not sent to %s: %s", push.request_id, url, result.reason)
            return result
        headers = [(":method", "POST"), (":scheme", "https"), (":authority", self.authority),
                   (":path", path)]
        headers.extend((str(name).lower(), str(value)) for name, value in push.headers.items())
        if "apns-id" not in push.headers:
            # one id for every try of this push, so a delivery can be traced and counted
            headers.append(("apns-id", str(uuid.uuid4())))
        return _ApplePending(push, self, url, body, headers)

    def open(self) -> None:
        log.info("APNs client for %s (%s auth) opening %d connections to %s", self.app.app_id,
                 self.auth.mode, self.pool_size, self.authority)
        for slot in self.slots:
            self._connect(slot)

    def capacity(self) -> int:
        return sum(protocol.available_streams() for protocol in self.ready)

    def attempt(self, pending: PendingPush) -> None:
        ready = self.ready
        count = len(ready)
        for step in range(count):
            protocol = ready[(self._next + step) % count]
            if protocol.available_streams() > 0:
                self._next = (self._next + step + 1) % count
                break
        else:
            self.not_processed(pending, "no connection to APNs has a free stream")
            return
        headers = pending.headers
        authorization = self.auth.authorization()
        if authorization is not None:
            headers = headers + [("authorization", authorization)]
        pending.authorization = authorization
        pending.slot = protocol.listener
        request_id = pending.push.request_id
        log.info("%s: sending to %s (try %d)", request_id, pending.url, pending.attempts)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: outgoing headers %s", request_id, headers_text(headers))
            log.debug("%s: outgoing body %s", request_id, pending.body.decode("utf-8", "replace"))
        pending.written = True
        protocol.request(headers, pending.body, pending)

    def flush(self) -> None:
        for protocol in self.ready:
            protocol.flush()

    def queued(self, pending: PendingPush) -> None:
        """A push waits while no connection is up: an attempt comes before its deadline."""
        if self.ready:
            return
        for slot in self.slots:
            timer = slot.reconnect_timer
            if timer is not None and timer.active():
                left = timer.getTime() - self.reactor.seconds()
                wanted = self._before_deadlines(left, pending.push.deadline)
                if wanted < left:
                    timer.reset(wanted)

    def waiting_reason(self, pending: PendingPush) -> str:
        if pending.state is IN_FLIGHT:
            return f"no answer from {self.authority}"
        if self.ready:
            return f"every stream of the {len(self.ready)} connections to {self.authority} busy"
        return self.connection_failure or f"connecting to {self.authority}"

    def connection_status(self) -> Dict[str, Any]:
        """The pool's state for /health and /metrics."""
        if self.ready:
            state = "connected"
        elif any(slot.busy for slot in self.slots):
            state = "connecting"
        else:
            state = "disconnected" if self.started else "stopped"
        result = dict(state=state, reconnects=self.reconnects, url=self.base_url,
                      auth=self.auth.mode, connections=len(self.ready), pool_size=self.pool_size)
        if state != "connected":
            result["last_error"] = self.connection_failure or "not connected yet"
        return result

    # -- answers -------------------------------------------------------------

    def stream_answered(self, pending: _ApplePending, status: int, headers: Dict[str, str],
                        raw: bytes) -> None:
        pending.slot.failures = 0  # an answer: this connection works
        request_id = pending.push.request_id
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: incoming %d headers %s", request_id, status, headers_text(headers))
            log.debug("%s: incoming body %s", request_id, raw.decode("utf-8", "replace"))
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        reason = str(body.get("reason", ""))
        if status == 200:
            self.finish(pending, PushResult(200, describe(200), pending.url, body))
        elif status == 403 and reason == "ExpiredProviderToken" and isinstance(self.auth, TokenAuth) \
                and not pending.auth_retried:
            self.auth.expired(pending.authorization or "")
            pending.auth_retried = True
            log.info("%s: provider token expired, retrying with a new one", request_id)
            self.retry(pending, describe(status, reason), delay=0.0)
        elif status >= 500:
            self.retry(pending, f"{status} {describe(status, reason)}",
                       retry_after=parse_retry_after(headers.get("retry-after"), time.time()))
        elif is_invalid_token(status, reason):
            self.finish(pending, PushResult(410, describe(status, reason), pending.url, body))
        else:
            self.finish(pending, PushResult(status, describe(status, reason), pending.url, body))

    def stream_failed(self, pending: _ApplePending, kind: str, reason: str) -> None:
        if kind == REFUSED:  # the server is busy: it gets a backoff, and the try counts
            self.not_processed(pending, reason, backoff=True)
        elif kind == UNPROCESSED:
            self.not_processed(pending, reason)
        elif kind == RESET:
            self.unknown(pending, reason, backoff=True)
        else:  # LOST: the connection died or went silent; another one takes it now
            self.unknown(pending, reason)

    # -- the pool --------------------------------------------------------------

    def _resolve(self) -> "Deferred[List[Any]]":
        """The addresses of the host, looked up again for every connection."""
        addresses = _Addresses(self.host)
        self.reactor.nameResolver.resolveHostName(addresses, self.host, portNumber=self.port)
        return addresses.done

    def _endpoint(self, address: Any) -> Any:
        endpoint_class = TCP6ClientEndpoint if isinstance(address, IPv6Address) else TCP4ClientEndpoint
        return wrapClientTLS(self.tls, endpoint_class(self.reactor, address.host, address.port,
                                                      timeout=self.connect_timeout))

    def _pick_address(self, addresses: List[Any], slot: _Slot) -> Any:
        """The address with the fewest of our connections, avoiding those that failed lately."""
        now = self.reactor.seconds()
        in_use = Counter((s.address.host, s.address.port) for s in self.slots
                         if s is not slot and s.busy and s.address is not None)

        def rank(item: Tuple[int, Any]) -> Tuple[bool, int, int]:
            order, address = item
            key = (address.host, address.port)
            failed = self._address_failures.get(key)
            return (failed is not None and now - failed < self.reconnect_max, in_use[key],
                    (order - slot.index) % len(addresses))
        return min(enumerate(addresses), key=rank)[1]

    def _connect(self, slot: _Slot) -> None:
        slot.reconnect_timer = None
        if self.stopping or slot.busy:
            return
        slot.timed_out = ""
        slot.handshake_timer = self.reactor.callLater(self.handshake_timeout, self._handshake_expired, slot)
        try:
            attempt = self._resolve()
        except Exception:  # noqa: BLE001 - a broken resolver must still lead to a retry
            attempt = Deferred()
            attempt.errback(Failure())
        slot.attempt = attempt
        attempt.addCallback(self._connect_to, slot)
        attempt.addCallbacks(self._connected, self._connect_failed, callbackArgs=(slot,), errbackArgs=(slot,))

    def _connect_to(self, addresses: List[Any], slot: _Slot) -> Deferred:
        slot.address = self._pick_address(addresses, slot)
        return self._endpoint(slot.address).connect(_ProtocolFactory(slot))

    def _connected(self, protocol: H2ClientProtocol, slot: _Slot) -> None:
        slot.attempt = None
        if protocol.lost:  # gone before we even heard of it
            self._never_ready(slot, f"connection to {_where(slot.address)} lost at once")
        elif slot.protocol is None:
            slot.protocol = protocol  # TCP is up; TLS and SETTINGS are on their way

    def _connect_failed(self, failure: Failure, slot: _Slot) -> None:
        slot.attempt = None
        message = slot.timed_out if failure.check(CancelledError) and slot.timed_out \
            else failure.getErrorMessage()
        where = _where(slot.address) if slot.address is not None else self.authority
        self._never_ready(slot, f"cannot connect to {where}: {message}")

    def _handshake_expired(self, slot: _Slot) -> None:
        slot.handshake_timer = None
        slot.timed_out = f"no TLS handshake and SETTINGS within {self.handshake_timeout:g} s"
        if slot.protocol is not None and not slot.protocol.ready:
            slot.protocol.abort(f"{slot.timed_out} from {_where(slot.address)}")
        elif slot.attempt is not None:
            slot.attempt.cancel()

    def _ready(self, slot: _Slot, protocol: H2ClientProtocol) -> None:
        if slot.handshake_timer is not None and slot.handshake_timer.active():
            slot.handshake_timer.cancel()
        slot.handshake_timer = None
        slot.protocol = protocol
        if self.stopping:
            protocol.close("the APNs client stopped")
            return
        self.ready.append(protocol)
        if slot.address is not None:
            self._address_failures.pop((slot.address.host, slot.address.port), None)
        self.connect_succeeded()
        log.info("APNs connection %d of %s to %s ready (up to %d streams)", slot.index + 1,
                 self.app.app_id, _where(slot.address), protocol.available_streams())
        self.pump()

    def _goaway(self, slot: _Slot, protocol: H2ClientProtocol, reason: str) -> None:
        """No new stream on ``protocol``: it drains, and another takes its place now."""
        if protocol in self.ready:
            self.ready.remove(protocol)
        self._draining.add(protocol)
        if slot.protocol is protocol:
            slot.protocol = None
            self._schedule(slot, served=protocol.answered > 0)

    def _closed(self, slot: _Slot, protocol: H2ClientProtocol, reason: str) -> None:
        self._draining.discard(protocol)
        if protocol in self.ready:
            self.ready.remove(protocol)
        if slot.protocol is protocol:
            slot.protocol = None
            if protocol.ready:
                log.log(logging.INFO if self.stopping else logging.WARNING,
                        "APNs connection %d of %s to %s closed: %s", slot.index + 1, self.app.app_id,
                        _where(slot.address), reason)
                self.connection_failure = reason
                self._schedule(slot, served=protocol.answered > 0)
            else:
                if slot.handshake_timer is not None and slot.handshake_timer.active():
                    slot.handshake_timer.cancel()
                slot.handshake_timer = None
                self._never_ready(slot, f"connection to {_where(slot.address)} failed: {reason}")
        if self.stopping:
            self._check_closed()

    def _never_ready(self, slot: _Slot, reason: str) -> None:
        """A connection attempt of ``slot`` ended before the connection was ready."""
        if slot.handshake_timer is not None and slot.handshake_timer.active():
            slot.handshake_timer.cancel()
        slot.handshake_timer = None
        self.connection_failure = reason
        if slot.address is not None:
            self._address_failures[(slot.address.host, slot.address.port)] = self.reactor.seconds()
        if self.stopping:
            self._check_closed()
            return
        log.warning("APNs client for %s: %s", self.app.app_id, reason)
        self.connect_failed(reason)
        self._schedule(slot, served=False)

    def _schedule(self, slot: _Slot, served: bool) -> None:
        """The next connection of ``slot``: at once after one that served
        pushes, else after a backoff that grows until a push is answered."""
        if self.stopping or slot.busy or slot.reconnect_timer is not None:
            return
        if served:
            delay = 0.0
        else:
            delay = self._before_deadlines(backoff_delay(slot.failures, self.reconnect_initial,
                                                         self.reconnect_max))
            slot.failures += 1
            log.info("APNs client for %s reconnects to %s in %.2f s", self.app.app_id, self.authority, delay)
        self.reconnects += 1
        slot.reconnect_timer = self.reactor.callLater(delay, self._connect, slot)

    def _before_deadlines(self, delay: float, deadline: Optional[float] = None) -> float:
        """``delay``, shortened so the pushes waiting get one more connection
        attempt before their deadline: a 60 s backoff must not outlast a
        call's 64 s budget while APNs may be back already."""
        earliest = self.queue.earliest_deadline() if deadline is None else deadline
        if earliest is None:
            return delay
        return min(delay, max(self.reconnect_initial, earliest - self.reactor.seconds() - LAST_CHANCE))

    # -- closing ----------------------------------------------------------------

    def close(self) -> Optional[Deferred]:
        """Close every connection; fires when all are gone (dropped after close_grace)."""
        for slot in self.slots:
            slot.cancel_timers()
            if slot.attempt is not None:
                slot.attempt.cancel()
        if not self._open_protocols():
            return None
        self._all_closed = Deferred()
        for protocol in self._open_protocols():
            protocol.close("the APNs client stopped")
        self._close_timer = self.reactor.callLater(self.close_grace, self._drop_all)
        self._check_closed()
        return self._all_closed

    def _open_protocols(self) -> Set[H2ClientProtocol]:
        protocols = set(self.ready) | self._draining
        protocols.update(slot.protocol for slot in self.slots if slot.protocol is not None)
        return {protocol for protocol in protocols if not protocol.lost}

    def _drop_all(self) -> None:
        self._close_timer = None
        for protocol in self._open_protocols():
            protocol.abort(f"still open {self.close_grace:g} s after the APNs client stopped")

    def _check_closed(self) -> None:
        if self._all_closed is None or self._all_closed.called or self._open_protocols():
            return
        if self._close_timer is not None and self._close_timer.active():
            self._close_timer.cancel()
        self._close_timer = None
        self._all_closed.callback(None)
