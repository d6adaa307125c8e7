"""The APNs client: one long-lived HTTP/2 connection per Apple application.

:class:`AppleClient` is the connection manager above
:class:`sylkpush.pns.http2.H2ClientProtocol`: it opens the connection at
start, reconnects with jittered exponential backoff (re-resolving the host),
keeps pushes in a bounded queue while there is no connection or no free
stream, retries 5xx answers and reset streams within each push's deadline,
and maps APNs answers to results (SPEC §6).
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any, Dict, List, Optional, Set, Tuple
from urllib.parse import quote

from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from sylkpush.pns.apple_auth import TokenAuth, auth_for
from sylkpush.pns.base import OutgoingPush, PushClient, PushResult, unavailable
from sylkpush.pns.http2 import LOST, REFUSED, H2ClientProtocol
from sylkpush.pns.pending import DEFAULT_QUEUE_LIMIT, PendingPush, PendingQueue, backoff_delay
from sylkpush.pns.tls import client_tls_options

log = logging.getLogger(__name__)

#: payload limits in bytes (Apple: 4 KiB, 5 KiB for VoIP notifications)
PAYLOAD_LIMIT = 4096
VOIP_PAYLOAD_LIMIT = 5120
#: seconds before a waiting push's deadline when a connection attempt is made
#: whatever the backoff says (time to connect, handshake and be answered)
LAST_CHANCE = 2.0

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


def _redact(headers: List[Tuple[str, str]]) -> Dict[str, str]:
    return {name: ("<redacted>" if name == "authorization" else value) for name, value in headers}


class _ApplePending(PendingPush):
    """A push with what the Apple client keeps across its tries."""

    def __init__(self, push: OutgoingPush, reactor: Any, url: str, client: "AppleClient",
                 path: str, body: bytes, headers: List[Tuple[str, str]]) -> None:
        self._client = client
        self._failure: Optional[str] = None
        super().__init__(push, reactor, url)
        self.path = path
        self.body = body
        self.headers = headers
        self.authorization: Optional[str] = None
        self.auth_retried = False
        self.retry_timer: Any = None

    @property  # type: ignore[override]
    def last_failure(self) -> str:
        # while a push only waited for a connection, the reason is the connection's
        return self._failure or self._client.connection_failure

    @last_failure.setter
    def last_failure(self, value: str) -> None:
        if value != "no connection to the push service":
            self._failure = value


class _Attempt:
    """The handler of one stream: routes its outcome back to the client."""

    __slots__ = ("client", "pending")

    def __init__(self, client: "AppleClient", pending: _ApplePending) -> None:
        self.client = client
        self.pending = pending

    def response(self, status: int, headers: Dict[str, str], body: bytes) -> None:
        self.client._stream_answered(self.pending, status, headers, body)

    def failed(self, kind: str, reason: str) -> None:
        self.client._stream_failed(self.pending, kind, reason)


class _ProtocolFactory(Factory):
    def __init__(self, client: "AppleClient") -> None:
        self.client = client

    def buildProtocol(self, addr: Any) -> H2ClientProtocol:  # noqa: N802
        return H2ClientProtocol(self.client, self.client.reactor,
                                ping_interval=self.client.ping_interval,
                                ping_timeout=self.client.ping_timeout)


class AppleClient(PushClient):
    """Sends pushes of one Apple application over one HTTP/2 connection.

    ``AppleClient(app, reactor)``; raises ConfigError when the settings cannot
    work.  The timing attributes below may be changed before :meth:`start`.
    """

    platform = "apple"

    reconnect_initial = 1.0
    reconnect_max = 60.0
    retry_initial = 0.5
    retry_max = 60.0
    connect_timeout = 10.0
    ping_interval = 60.0
    ping_timeout = 20.0
    #: seconds :meth:`stop` waits for in-flight pushes before answering them 503
    stop_timeout = 10.0

    def __init__(self, app: Any, reactor: Any, queue_limit: int = DEFAULT_QUEUE_LIMIT) -> None:
        super().__init__(app, reactor)
        self.auth = auth_for(app, reactor)
        self.tls = client_tls_options(app.apple_host, app.tls_ca_file, self.auth.client_certificate,
                                      alpn=(b"h2",))
        self.host = app.apple_host
        self.port = app.apple_port
        self.authority = _authority(self.host, self.port)
        self.base_url = f"https://{self.authority}"
        self.queue = PendingQueue(queue_limit)
        self.connection_failure = "no connection to APNs yet"
        self.reconnects = 0
        self._protocol: Optional[H2ClientProtocol] = None
        self._protocols: Set[H2ClientProtocol] = set()
        self._connecting: Optional[Deferred] = None
        self._opening = False
        self._reconnect_timer: Any = None
        self._attempt = 0
        self._in_flight: Set[_ApplePending] = set()
        self._retrying: Set[_ApplePending] = set()
        self._started = False
        self._stopping = False
        self._stopped: Optional[Deferred] = None
        self._stop_timer: Any = None

    # -- the PushClient contract ------------------------------------------------

    def start(self) -> None:
        """Open the connection; pushes sent before it is up wait in the queue."""
        if self._started:
            return
        self._started = True
        log.info("APNs client for %s (%s auth) connecting to %s", self.app.app_id,
                 self.auth.mode, self.authority)
        self._connect()

    def send(self, push: OutgoingPush) -> "Deferred[PushResult]":
        """Deliver ``push``; fires once with its PushResult."""
        path = "/3/device/" + quote(push.token, safe="")
        url = self.base_url + path
        if self._stopping or not self._started:
            reason = "the APNs client is stopping" if self._stopping else "the APNs client is not started"
            log.info("%s: not sent to %s: %s", push.request_id, url, reason)
            return succeed(unavailable(reason, url))
        body = json.dumps(push.payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        voip = push.voip or push.headers.get("apns-push-type") == "voip"
        limit = VOIP_PAYLOAD_LIMIT if voip else PAYLOAD_LIMIT
        if len(body) > limit:
            result = PushResult(413, f"{describe(413, 'PayloadTooLarge')} ({len(body)} bytes, "
                                     f"the limit is {limit})", url)
            log.info("%s: not sent to %s: %s", push.request_id, url, result.reason)
            return succeed(result)
        headers = [(":method", "POST"), (":scheme", "https"), (":authority", self.authority),
                   (":path", path)]
        headers.extend((str(name).lower(), str(value)) for name, value in push.headers.items())
        if "apns-id" not in push.headers:
            # one id for every try of this push, so a delivery can be traced and counted
            headers.append(("apns-id", str(uuid.uuid4())))
        pending = _ApplePending(push, self.reactor, url, self, path, body, headers)
        pending.deferred.addCallback(self._log_result, pending)
        if self.queue.put(pending):
            if self._protocol is None:
                self._reconnect_sooner_for(push)
            self._pump()
        return pending.deferred

    def take_waiting(self) -> List[PendingPush]:
        """The pushes still queued here, handed to the client that replaces this one."""
        return self.queue.take_all()

    def stop(self) -> "Deferred[None]":
        """Take no new pushes, let in-flight ones finish, then close the connection."""
        if self._stopped is not None:
            return self._stopped
        self._stopping = True
        self._stopped = Deferred()
        if self._reconnect_timer is not None and self._reconnect_timer.active():
            self._reconnect_timer.cancel()
        self._reconnect_timer = None
        # pushes waiting to be retried get their last try now
        for pending in sorted(self._retrying, key=lambda p: p.push.deadline, reverse=True):
            self._cancel_retry(pending)
            self.queue.put_front(pending)
        self._retrying.clear()
        self._stop_timer = self.reactor.callLater(self.stop_timeout, self._stop_expired)
        if self._protocol is None:
            self.queue.fail_all("the APNs client stopped before it could connect: "
                                f"{self.connection_failure}")
        self._pump()
        self._check_stopped()
        return self._stopped

    def status(self) -> Dict[str, Any]:
        """Connection state for /health and /metrics."""
        if self._stopping:
            state = "stopping" if self._stopped is not None and not self._stopped.called else "stopped"
        elif self._protocol is not None:
            state = "connected"
        elif self._opening:
            state = "connecting"
        elif self._started:
            state = "disconnected"
        else:
            state = "stopped"
        result = {
            "state": state,
            "queued": len(self.queue),
            "in_flight": len(self._in_flight),
            "retrying": len(self._retrying),
            "reconnects": self.reconnects,
            "url": self.base_url,
            "auth": self.auth.mode,
        }
        if state != "connected":
            result["last_error"] = self.connection_failure
        return result

    # -- listener of H2ClientProtocol ------------------------------------------

    def connection_ready(self, protocol: H2ClientProtocol) -> None:
        self._opening = False
        if self._stopping and self._stopped is not None and self._stopped.called:
            protocol.close()
            return
        self._protocol = protocol
        self._attempt = 0
        log.info("APNs connection to %s ready for %s (up to %d streams)", self.authority,
                 self.app.app_id, protocol.available_streams())
        self._pump()
        self._check_stopped()

    def streams_available(self, protocol: H2ClientProtocol) -> None:
        if protocol is self._protocol:
            self._pump()

    def connection_goaway(self, protocol: H2ClientProtocol, reason: str) -> None:
        if protocol is self._protocol:
            self._protocol = None
            self.connection_failure = reason
            self._schedule_reconnect()

    def connection_closed(self, protocol: H2ClientProtocol, reason: str) -> None:
        self._protocols.discard(protocol)
        if protocol is self._protocol:
            self._protocol = None
            log.log(logging.INFO if self._stopping else logging.WARNING,
                    "APNs connection to %s for %s closed: %s", self.authority, self.app.app_id, reason)
        elif not protocol.ready:
            self._opening = False
            log.warning("APNs connection to %s for %s failed: %s", self.authority, self.app.app_id, reason)
        self.connection_failure = reason
        if self._stopping:
            if self._protocol is None:
                self.queue.fail_all(f"the APNs client stopped: {reason}")
            self._check_stopped()
            return
        if self._protocol is None:
            self._schedule_reconnect()

    # -- connection management -------------------------------------------------

    def _endpoint(self) -> Any:
        """Where to connect; HostnameEndpoint resolves the name again each time."""
        return wrapClientTLS(self.tls, HostnameEndpoint(self.reactor, self.host, self.port,
                                                        timeout=self.connect_timeout))

    def _connect(self) -> None:
        self._reconnect_timer = None
        if self._stopping or self._opening or self._protocol is not None:
            return
        self._opening = True
        try:
            self._connecting = self._endpoint().connect(_ProtocolFactory(self))
        except Exception:  # noqa: BLE001 - a bad endpoint must still lead to a retry
            self._connect_failed(Failure())
            return
        self._connecting.addCallbacks(self._connected, self._connect_failed)

    def _connected(self, protocol: H2ClientProtocol) -> None:
        self._connecting = None
        self._protocols.add(protocol)

    def _connect_failed(self, failure: Failure) -> None:
        self._connecting = None
        self._opening = False
        self.connection_failure = f"cannot connect to {self.authority}: {failure.getErrorMessage()}"
        if self._stopping:
            log.info("APNs client for %s stopped while connecting", self.app.app_id)
            self.queue.fail_all(f"the APNs client stopped: {self.connection_failure}")
            self._check_stopped()
        else:
            log.warning("APNs client for %s: %s", self.app.app_id, self.connection_failure)
            self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        if self._stopping or self._opening or self._protocol is not None:
            return
        if self._reconnect_timer is not None and self._reconnect_timer.active():
            return
        delay = self._before_deadlines(backoff_delay(self._attempt, self.reconnect_initial,
                                                     self.reconnect_max))
        self._attempt += 1
        self.reconnects += 1
        log.info("APNs client for %s reconnects to %s in %.2f s", self.app.app_id, self.authority, delay)
        self._reconnect_timer = self.reactor.callLater(delay, self._connect)

    def _before_deadlines(self, delay: float, deadline: Optional[float] = None) -> float:
        """``delay``, shortened so the pushes waiting get one more connection
        attempt before their deadline: a 60 s backoff must not outlast a
        call's 64 s budget while APNs may be back already."""
        earliest = self.queue.earliest_deadline() if deadline is None else deadline
        if earliest is None:
            return delay
        return min(delay, max(self.reconnect_initial, earliest - self.reactor.seconds() - LAST_CHANCE))

    def _reconnect_sooner_for(self, push: OutgoingPush) -> None:
        """A new push whose deadline comes before the next attempt brings it forward."""
        timer = self._reconnect_timer
        if timer is None or not timer.active():
            return
        wanted = self._before_deadlines(timer.getTime() - self.reactor.seconds(), push.deadline)
        if wanted < timer.getTime() - self.reactor.seconds():
            timer.reset(wanted)

    # -- sending and answers ---------------------------------------------------

    def _pump(self) -> None:
        """Start queued pushes on free streams of the current connection."""
        protocol = self._protocol
        if protocol is None:
            return
        started = False
        while protocol.available_streams() > 0:
            pending = self.queue.get()
            if pending is None:
                break
            self._start(protocol, pending)
            started = True
        if started:
            protocol.flush()

    def _start(self, protocol: H2ClientProtocol, pending: _ApplePending) -> None:
        headers = pending.headers
        authorization = self.auth.authorization()
        if authorization is not None:
            headers = headers + [("authorization", authorization)]
        pending.authorization = authorization
        pending.attempts += 1
        self._in_flight.add(pending)
        request_id = pending.push.request_id
        log.info("%s: sending to %s (try %d)", request_id, pending.url, pending.attempts)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: request headers %s", request_id, _redact(headers))
            log.debug("%s: request body %s", request_id, pending.body.decode("utf-8", "replace"))
        protocol.request(headers, pending.body, _Attempt(self, pending))

    def _stream_answered(self, pending: _ApplePending, status: int, headers: Dict[str, str],
                         raw: bytes) -> None:
        self._in_flight.discard(pending)
        request_id = pending.push.request_id
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: response %d headers %s body %s", request_id, status, headers,
                      raw.decode("utf-8", "replace"))
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        reason = str(body.get("reason", ""))
        if pending.answered:
            self._check_stopped()
            return
        if status == 200:
            pending.answer(PushResult(200, describe(200), pending.url, body))
        elif status == 403 and reason == "ExpiredProviderToken" and isinstance(self.auth, TokenAuth) \
                and not pending.auth_retried:
            self.auth.expired(pending.authorization or "")
            pending.auth_retried = True
            pending.last_failure = describe(status, reason)
            log.info("%s: provider token expired, retrying with a new one", request_id)
            self.queue.put_front(pending)
        elif status >= 500:
            pending.last_failure = f"{status} {describe(status, reason)}"
            self._retry_later(pending)
        elif is_invalid_token(status, reason):
            pending.answer(PushResult(410, describe(status, reason), pending.url, body))
        else:
            pending.answer(PushResult(status, describe(status, reason), pending.url, body))
        self._pump()
        self._check_stopped()

    def _stream_failed(self, pending: _ApplePending, kind: str, reason: str) -> None:
        self._in_flight.discard(pending)
        if not pending.answered:
            pending.last_failure = reason
            if kind == REFUSED:
                # the server never looked at it: this try does not count
                pending.attempts -= 1
                self.queue.put_front(pending)
            elif kind == LOST:
                self.queue.put_front(pending)
            else:
                self._retry_later(pending)
            if self._stopping and self._protocol is None:
                self.queue.fail_all(f"the APNs client stopped: {reason}")
        self._check_stopped()

    def _retry_later(self, pending: _ApplePending) -> None:
        delay = backoff_delay(pending.attempts - 1, self.retry_initial, self.retry_max)
        if self._stopping or delay >= pending.time_left(self.reactor):
            pending.fail(f"{pending.last_failure}; no time left to try again")
            return
        log.info("%s: %s; trying again in %.1f s", pending.push.request_id, pending.last_failure, delay)
        self._retrying.add(pending)
        pending.retry_timer = self.reactor.callLater(delay, self._retry_now, pending)
        pending.deferred.addBoth(self._forget_retry, pending)

    def _retry_now(self, pending: _ApplePending) -> None:
        pending.retry_timer = None
        self._retrying.discard(pending)
        if not pending.answered:
            self.queue.put_front(pending)
            self._pump()

    def _forget_retry(self, result: Any, pending: _ApplePending) -> Any:
        # answered by its deadline while waiting to be retried
        self._cancel_retry(pending)
        self._retrying.discard(pending)
        self._check_stopped()
        return result

    @staticmethod
    def _cancel_retry(pending: _ApplePending) -> None:
        if pending.retry_timer is not None and pending.retry_timer.active():
            pending.retry_timer.cancel()
        pending.retry_timer = None

    def _log_result(self, result: PushResult, pending: _ApplePending) -> PushResult:
        # the dispatcher logs every result at INFO; this line only adds up with debug
        log.debug("%s: APNs result %d %s", pending.push.request_id, result.code, result.reason)
        self._check_stopped()
        return result

    # -- stopping -------------------------------------------------------------

    def _check_stopped(self) -> None:
        if not self._stopping or self._stopped is None or self._stopped.called:
            return
        if len(self.queue) or self._in_flight or self._retrying:
            return
        for protocol in list(self._protocols):
            protocol.close("the APNs client stopped")
        if self._connecting is not None:
            self._connecting.cancel()
            return
        if self._protocols:
            return
        self._protocol = None
        if self._stop_timer is not None and self._stop_timer.active():
            self._stop_timer.cancel()
        self._stop_timer = None
        self._stopped.callback(None)

    def _stop_expired(self) -> None:
        self._stop_timer = None
        reason = f"the APNs client stopped after waiting {self.stop_timeout:g} s"
        self.queue.fail_all(reason)
        for pending in list(self._in_flight):
            pending.fail(reason)
        self._in_flight.clear()
        for protocol in list(self._protocols):
            protocol.abort(reason)
        if self._connecting is not None:
            self._connecting.cancel()
        self._check_stopped()
