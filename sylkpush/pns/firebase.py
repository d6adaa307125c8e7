"""Firebase Cloud Messaging client: HTTP v1 with OAuth2, or the legacy API.

:class:`FirebaseClient` is a transport of the delivery engine
(:class:`sylkpush.pns.engine.DeliveryClient`, which queues, bounds, times
and retries): pushes go out over a persistent HTTPS connection pool, at most
``max_in_flight`` at a time per application.  429, 5xx and connection errors
are retried with exponential backoff (honouring ``Retry-After``) until the
push's deadline, then answered 503 with the last failure.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable, Dict, List, Optional, Tuple, Union
from urllib.parse import urlsplit

from OpenSSL import SSL
import treq
from treq.client import HTTPClient
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError, ConnectionDone, ConnectionLost, DNSLookupError
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.python.failure import Failure
from twisted.web.client import (Agent, HTTPConnectionPool, _HTTP11ClientFactory, RequestGenerationFailed, RequestTransmissionFailed,
                                ResponseFailed, ResponseNeverReceived)
from twisted.web._newclient import HTTP11ClientProtocol
from twisted.web.error import SchemeNotSupported
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer, IPolicyForHTTPS
from zope.interface import implementer

from sylkpush.pns.base import ConfigError, OutgoingPush, PushResult, headers_text
from sylkpush.pns.engine import DeliveryClient, parse_retry_after
from sylkpush.pns.google_oauth import AccessTokenSource, TokenError, load_service_account
from sylkpush.pns.pending import DEFAULT_QUEUE_LIMIT, PendingPush
from sylkpush.pns.tls import client_tls_options

log = logging.getLogger(__name__)

LEGACY_URL = "https://fcm.googleapis.com/fcm/send"
V1_URL = "https://fcm.googleapis.com/v1/projects/{project}/messages:send"
#: requests on the wire at once per application (one HTTP/1.1 connection each)
DEFAULT_MAX_IN_FLIGHT = 128
#: first retry delay, doubled on each further try
RETRY_INITIAL = 0.5
RETRY_CAP = 30.0
#: one attempt is abandoned after this long (and retried if the deadline allows)
ATTEMPT_TIMEOUT = 30.0

#: what FCM's v1 error codes mean, for the human part of the reason
FCM_ERRORS = {
    "UNSPECIFIED_ERROR": "No more information is available about this error.",
    "INVALID_ARGUMENT": "A request parameter was invalid.",
    "UNREGISTERED": "The app instance was unregistered from FCM; the token is no longer valid.",
    "SENDER_ID_MISMATCH": "The authenticated sender ID differs from the sender ID of the registration token.",
    "QUOTA_EXCEEDED": "Sending limit exceeded for the message target.",
    "UNAVAILABLE": "The server is overloaded.",
    "INTERNAL": "An unknown internal error occurred.",
    "THIRD_PARTY_AUTH_ERROR": "The APNs certificate or web push auth key was invalid or missing.",
}

#: legacy API result errors: (code returned to the caller, retry?, description)
LEGACY_ERRORS: Dict[str, Tuple[int, bool, str]] = {
    "NotRegistered": (410, False, "The registration token is no longer registered."),
    "InvalidRegistration": (410, False, "The registration token is not valid."),
    "MissingRegistration": (410, False, "The request has no registration token."),
    "Unavailable": (503, True, "The server could not process the request in time."),
    "InternalServerError": (500, True, "The server encountered an error."),
    "MismatchSenderId": (403, False, "The registration token is tied to another sender."),
    "MessageTooBig": (413, False, "The payload is larger than 4096 bytes."),
    "InvalidDataKey": (400, False, "The payload data uses a reserved key."),
    "InvalidTtl": (400, False, "time_to_live is not between 0 and 2419200 seconds."),
    "InvalidPackageName": (400, False, "restricted_package_name does not match the registration token."),
    "DeviceMessageRateExceeded": (429, False, "Too many messages to this device."),
    "TopicsMessageRateExceeded": (429, False, "Too many messages to subscribers of this topic."),
    "InvalidApnsCredential": (403, False, "The APNs credentials of the Firebase project are invalid."),
}

#: failures before the request was written: FCM never saw it
NOT_SENT_ERRORS = (ConnectError, DNSLookupError, RequestTransmissionFailed, RequestGenerationFailed, SSL.Error)
#: failures after it was written: FCM may have acted on it
UNANSWERED_ERRORS = (ConnectionLost, ConnectionDone, ResponseFailed, ResponseNeverReceived, OSError)


@implementer(IBodyProducer)
class _BytesProducer:
    """A request body already in memory (treq's default streams it through a cooperator)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer) -> Deferred:  # noqa: N802 (Twisted's names)
        consumer.write(self.body)
        return succeed(None)

    def pauseProducing(self) -> None:  # noqa: N802
        pass

    def resumeProducing(self) -> None:  # noqa: N802
        pass

    def stopProducing(self) -> None:  # noqa: N802
        pass


class _NoDelayProtocol(HTTP11ClientProtocol):
    def connectionMade(self) -> None:  # noqa: N802 (Twisted's name)
        # headers and body go out as separate TLS records: without TCP_NODELAY
        # the body waits for the peer's delayed ACK (~40 ms) on every request
        self.transport.setTcpNoDelay(True)
        super().connectionMade()


class _ConnectionFactory(_HTTP11ClientFactory):
    """The pool's connection factory: TCP_NODELAY, and no log line per connection."""

    noisy = False

    def buildProtocol(self, addr):  # noqa: N802 (Twisted's name)
        return _NoDelayProtocol(self._quiescentCallback)


@implementer(IPolicyForHTTPS)
class _VerifiedTLSPolicy:
    """Verified TLS for every host the client talks to (push and token endpoints).

    The connection creators are built ahead for the known hosts so that the
    CA bundle is not read from disk on the reactor thread for each connection.
    """

    def __init__(self, ca_file: str, hosts: List[str]) -> None:
        self.ca_file = ca_file
        self._creators = {host: client_tls_options(host, ca_file, alpn=(b"http/1.1",)) for host in hosts}

    def creatorForNetloc(self, hostname: bytes, port: int):  # noqa: N802 (Twisted's name)
        host = hostname.decode("ascii")
        creator = self._creators.get(host)
        if creator is None:
            creator = self._creators[host] = client_tls_options(host, self.ca_file, alpn=(b"http/1.1",))
        return creator


@implementer(IAgentEndpointFactory)
class _CachedEndpoints:
    """One TLS endpoint per host and port, built once (the Agent would build one per request)."""

    def __init__(self, reactor, policy: _VerifiedTLSPolicy) -> None:
        self.reactor = reactor
        self.policy = policy
        self._endpoints: Dict[Tuple[bytes, bytes, int], Any] = {}

    def endpointForURI(self, uri):  # noqa: N802 (Twisted's name)
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            if uri.scheme != b"https":
                raise SchemeNotSupported(f"only https is used for push services, not {uri.scheme!r}")
            host = uri.host.decode("ascii")
            endpoint = wrapClientTLS(self.policy.creatorForNetloc(uri.host, uri.port),
                                     HostnameEndpoint(self.reactor, host, uri.port))
            self._endpoints[key] = endpoint
        return endpoint


class _Retry(Exception):
    """An answer that asks for another try: after ``retry_after`` (the
    service's Retry-After), at once, or after the usual backoff."""

    def __init__(self, reason: str, retry_after: Optional[float] = None, at_once: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.at_once = at_once


class _FirebasePending(PendingPush):
    """A push plus what the Firebase client remembers between its tries."""

    def __init__(self, push: OutgoingPush, owner: Any, url: str) -> None:
        super().__init__(push, owner, url)
        self.auth_retried = False
        #: the HTTP request of the current attempt, to cancel when it is abandoned
        self.request: Optional[Deferred] = None
        #: marks the current attempt: what an abandoned one reports later is ignored
        self.current: object = None


def _error_object(body: Dict[str, Any]) -> Dict[str, Any]:
    error = body.get("error")
    return error if isinstance(error, dict) else {}


def _fcm_error_code(error: Dict[str, Any]) -> str:
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and detail.get("@type", "").endswith("google.firebase.fcm.v1.FcmError"):
            return str(detail.get("errorCode") or "")
    return ""


def _about_token(error: Dict[str, Any]) -> bool:
    """True when an INVALID_ARGUMENT error is about the registration token."""
    if "registration token" in str(error.get("message", "")).lower():
        return True
    for detail in error.get("details") or ():
        for violation in (detail.get("fieldViolations") or ()) if isinstance(detail, dict) else ():
            if isinstance(violation, dict) and violation.get("field") == "message.token":
                return True
    return False


class FirebaseClient(DeliveryClient):
    """Sends pushes for one Firebase application.

    ``FirebaseClient(app, reactor)``: ``app`` is an AppConfig; ``clock``
    (default: the reactor) times deadlines, retries and token lifetimes, so
    tests can drive it with a Clock while the network runs on the reactor.
    """

    platform = "firebase"
    name = "Firebase"
    retry_initial = RETRY_INITIAL
    retry_max = RETRY_CAP
    attempt_timeout = ATTEMPT_TIMEOUT

    def __init__(self, app: Any, reactor: Any, clock: Any = None,
                 max_in_flight: Optional[int] = None, queue_limit: int = DEFAULT_QUEUE_LIMIT,
                 wall_time: Callable[[], float] = time.time) -> None:
        super().__init__(app, reactor, clock=clock, queue_limit=queue_limit)
        self.wall_time = wall_time
        self.legacy = bool(app.firebase_legacy)
        self.account = None
        if self.legacy:
            self.url = app.firebase_push_url or LEGACY_URL
            log.warning("%s: Firebase application %s uses the legacy FCM API (firebase_authorization_key), "
                        "which Google retired in 2024; configure firebase_authorization_file (HTTP v1) instead",
                        app.section, app.app_id)
        else:
            if not app.firebase_authorization_file:
                raise ConfigError("firebase_authorization_file (or the legacy firebase_authorization_key) is missing")
            self.account = load_service_account(app.firebase_authorization_file)
            if app.firebase_push_url:
                self.url = app.firebase_push_url
            elif self.account.project_id:
                self.url = V1_URL.format(project=self.account.project_id)
            else:
                raise ConfigError("firebase_push_url is missing and the service account file has no project_id")
        self._url_bytes = self.url.encode("ascii")
        parts = urlsplit(self.url)
        if parts.scheme != "https" or not parts.hostname:
            raise ConfigError(f"firebase_push_url {self.url!r} is not an https URL")
        self._netloc = parts.netloc
        if max_in_flight is None:
            try:
                max_in_flight = int(app.option("firebase_max_in_flight", "") or DEFAULT_MAX_IN_FLIGHT)
            except ValueError:
                raise ConfigError("firebase_max_in_flight must be an integer") from None
        self.max_in_flight = max(1, max_in_flight)
        hosts = [parts.hostname]
        if self.account is not None:
            token_host = urlsplit(self.account.token_uri).hostname
            if token_host and token_host not in hosts:
                hosts.append(token_host)
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = self.max_in_flight + 2  # + the token endpoint
        self.pool.retryAutomatically = False  # a POST is retried by us, within its deadline
        self.pool._factory = _ConnectionFactory
        self.agent = Agent.usingEndpointFactory(
            reactor, _CachedEndpoints(reactor, _VerifiedTLSPolicy(app.tls_ca_file, hosts)), pool=self.pool)
        self.http = HTTPClient(self.agent)
        self.tokens = (AccessTokenSource(self.account, self.http, reactor, self.clock, wall_time)
                       if self.account is not None else None)
        #: HTTP requests (and token waits) under way, answered or abandoned by the engine or not
        self.requests = 0
        self.connection_failures = 0

    # --- the transport of the engine ----------------------------------------------

    @property
    def peer(self) -> str:
        return self._netloc

    def push_url(self, push: OutgoingPush) -> str:
        return self.url

    def prepare(self, push: OutgoingPush) -> Union[PendingPush, PushResult]:
        return _FirebasePending(push, self, self.url)

    def open(self) -> None:
        """Fetch the first access token now, so the first push does not wait for it."""
        if self.tokens is not None:
            self.tokens.get().addErrback(lambda failure: None)  # logged by the token source

    def capacity(self) -> int:
        return self.max_in_flight - self.requests

    def attempt(self, pending: PendingPush) -> None:
        self.requests += 1
        pending.current = current = object()
        pending.request = None
        if self.tokens is not None:
            d = self.tokens.get()
            d.addCallback(lambda token: ("Bearer " + token, token))
        else:
            d = succeed(("key=" + self.app.firebase_authorization_key, None))
        d.addCallback(self._post, pending, current)
        d.addCallback(self._answered, pending)
        d.addErrback(self._failed, pending, current)  # includes the retryable answers _answered raises
        d.addErrback(self._bug, pending)
        d.addBoth(self._attempt_done)

    def abandon_attempt(self, pending: PendingPush) -> None:
        request = pending.request
        if request is not None and not request.called:
            request.cancel()

    def stop(self) -> "Deferred[None]":
        if self.tokens is not None:
            self.tokens.stop()  # pushes waiting for a token are answered now
        return super().stop()

    def close(self) -> Deferred:
        return self.pool.closeCachedConnections()

    def connection_status(self) -> Dict[str, Any]:
        if self.tokens is not None and self.tokens._token is None:
            state = "authenticating" if self.tokens.fetching else "no-access-token"
        else:
            state = "ready"
        return dict(state=state, reconnects=self.connection_failures,
                    token_refreshes=self.tokens.refreshes if self.tokens is not None else 0)

    # --- one try -------------------------------------------------------------------

    def _post(self, authorization: Tuple[str, Optional[str]], pending: _FirebasePending,
              current: object) -> Deferred:
        push = pending.push
        if pending.current is not current or pending.answered:
            return succeed(None)  # abandoned while the token was fetched
        header_value, access_token = authorization
        headers = {str(k): str(v) for k, v in push.headers.items()}
        for name in list(headers):
            if name.lower() in ("authorization", "content-type", "content-length", "host"):
                del headers[name]
        headers["Content-Type"] = "application/json; charset=UTF-8"
        body = json.dumps(push.payload, separators=(",", ":")).encode("utf-8")
        log.info("%s: POST %s (try %d)", push.request_id, self.url, pending.attempts)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: outgoing headers %s", push.request_id,
                      headers_text(dict(headers, Authorization=header_value)))
            log.debug("%s: outgoing body %s", push.request_id, body.decode("utf-8"))
        headers["Authorization"] = header_value
        # straight to the Agent: treq's URL handling (hyperlink, IDNA) costs a
        # third of the CPU of a push; the answer is still read with treq
        pending.written = True
        request = self.agent.request(b"POST", self._url_bytes, Headers(
            {k.encode("latin-1"): [v.encode("latin-1")] for k, v in headers.items()}), _BytesProducer(body))
        pending.request = request

        def read(response):
            return treq.content(response).addCallback(lambda content: (response, content, access_token))
        return request.addCallback(read)

    def _answered(self, answer: Optional[Tuple[Any, bytes, Optional[str]]], pending: _FirebasePending) -> None:
        if answer is None:
            return
        response, content, access_token = answer
        push = pending.push
        try:
            body = json.loads(content.decode("utf-8")) if content else {}
        except (UnicodeDecodeError, ValueError):
            body = {}
        if not isinstance(body, dict):
            body = {}
        if log.isEnabledFor(logging.DEBUG):
            headers = {k.decode("latin-1"): b", ".join(v).decode("latin-1")
                       for k, v in response.headers.getAllRawHeaders()}
            log.debug("%s: incoming %d headers %s", push.request_id, response.code, headers_text(headers))
            log.debug("%s: incoming body %s", push.request_id, content.decode("utf-8", "replace")[:4096])
        if self.legacy:
            result = self._legacy_result(response, content, body, pending)
        else:
            result = self._v1_result(response, body, access_token, pending)
        self.finish(pending, result)

    def _retry_after(self, response: Any) -> Optional[float]:
        return parse_retry_after(response.headers.getRawHeaders(b"retry-after", [None])[0], self.wall_time())

    def _v1_result(self, response, body: Dict[str, Any], access_token: Optional[str],
                   pending: _FirebasePending) -> PushResult:
        code = response.code
        if code == 200:
            return PushResult(200, "OK", self.url, body)
        error = _error_object(body)
        status = str(error.get("status") or f"HTTP {code}")
        message = str(error.get("message") or response.phrase.decode("latin-1", "replace"))
        fcm_code = _fcm_error_code(error)
        name = fcm_code if fcm_code and fcm_code != status else status
        reason = f"{name} - {message}"
        if fcm_code in FCM_ERRORS and FCM_ERRORS[fcm_code] not in message:
            reason = f"{reason} ({FCM_ERRORS[fcm_code]})"
        if code == 401 and fcm_code != "THIRD_PARTY_AUTH_ERROR":
            if not pending.auth_retried and self.tokens is not None:
                pending.auth_retried = True
                self.tokens.invalidate(access_token)
                raise _Retry(f"access token refused: {reason}", at_once=True)
            return PushResult(401, reason, self.url, body)
        if (code == 404 and fcm_code == "UNREGISTERED") or \
                (code == 400 and status == "INVALID_ARGUMENT" and _about_token(error)):
            return PushResult(410, reason, self.url, body)
        if code == 429 or code >= 500:
            raise _Retry(f"{code} {reason}", self._retry_after(response))
        return PushResult(code, reason, self.url, body)

    def _legacy_result(self, response, content: bytes, body: Dict[str, Any],
                       pending: _FirebasePending) -> PushResult:
        code = response.code
        if code == 200:
            results = body.get("results")
            first = results[0] if isinstance(results, list) and results and isinstance(results[0], dict) else {}
            error = first.get("error")
            if not error and body.get("failure", 0) == 0:
                return PushResult(200, "OK", self.url, body)
            error = str(error or "UnknownError")
            final, retry, description = LEGACY_ERRORS.get(error, (400, False, "FCM refused the message."))
            reason = f"{error} - {description}"
            if retry:
                raise _Retry(reason, self._retry_after(response))
            return PushResult(final, reason, self.url, body)
        text = content.decode("utf-8", "replace").strip()
        reason = f"HTTP {code} {response.phrase.decode('latin-1', 'replace')}"
        if code == 401:
            reason += " - the legacy server key (firebase_authorization_key) was refused"
        elif text and not body and len(text) < 200 and "<" not in text:
            reason += f" - {text}"
        if code == 429 or code >= 500:
            raise _Retry(reason, self._retry_after(response))
        return PushResult(code, reason, self.url, body)

    def _failed(self, failure: Failure, pending: _FirebasePending, current: object) -> None:
        if pending.current is not current:
            return  # an attempt the engine gave up on already
        if failure.check(_Retry):
            retry = failure.value
            self.retry(pending, retry.reason, delay=0.0 if retry.at_once else None, retry_after=retry.retry_after)
        elif failure.check(TokenError):
            error = failure.value
            if error.permanent:
                self.finish(pending, PushResult(503, f"no access token: {error.reason}", self.url, {}))
            else:
                self.not_processed(pending, f"no access token: {error.reason}", backoff=True)
        elif failure.check(CancelledError):
            # abandoned by the engine (deadline, attempt timeout), which moved on already
            self.unknown(pending, f"no answer from {self._netloc}", backoff=True)
        elif failure.check(*NOT_SENT_ERRORS, *UNANSWERED_ERRORS):
            # connection refused, reset, TLS failure, ...: the pool reconnects on the next try
            self.connection_failures += 1
            text = failure.getErrorMessage() or failure.type.__name__
            if hasattr(failure.value, "reasons"):  # ResponseFailed / RequestGenerationFailed
                text = "; ".join(r.getErrorMessage() or r.type.__name__ for r in failure.value.reasons)
            reason = f"connection to {self._netloc} failed: {text}"
            if failure.check(*NOT_SENT_ERRORS):
                self.not_processed(pending, reason, backoff=True)
            else:
                self.unknown(pending, reason, backoff=True)
        else:
            failure.raiseException()  # a bug: answered 500 by _bug

    def _bug(self, failure: Failure, pending: _FirebasePending) -> None:
        log.error("%s: unexpected error in the Firebase client: %s", pending.push.request_id,
                  failure.getTraceback())
        self.finish(pending, PushResult(500, f"internal error: {failure.getErrorMessage()}", self.url, {}))

    def _attempt_done(self, _: Any) -> None:
        self.requests -= 1
        self.pump()
