"""Firebase Cloud Messaging client: HTTP v1 with OAuth2, or the legacy API, over HTTP/2.

:class:`FirebaseClient` is an :class:`sylkpush.pns.h2pool.H2PoolClient`
(the delivery engine's queue, bound, deadlines and retries over
``firebase_connections`` multiplexed HTTP/2 connections to the push URL's
host, as for Apple).  Pushes wait in the queue while no access token is at
hand; the token comes from the service account's token endpoint over
HTTP/1.1 (:class:`sylkpush.pns.google_oauth.AccessTokenSource`).  429, 5xx
and lost connections are retried with exponential backoff (honouring
``Retry-After``) until the push's deadline, then answered 503 with the last
failure.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable, Dict, List, Optional, Tuple, Union
from urllib.parse import urlsplit

from treq.client import HTTPClient
from twisted.internet.defer import DeferredList
from twisted.python.failure import Failure
from twisted.web.client import Agent
from twisted.web.http import RESPONSES
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from sylkpush.config import ConfigError
from sylkpush.http_pool import connection_pool
from sylkpush.pns.base import OutgoingPush, PushResult, headers_text
from sylkpush.pns.engine import parse_retry_after
from sylkpush.pns.google_oauth import AccessTokenSource, TokenError, load_service_account
from sylkpush.pns.h2pool import H2Pending, H2PoolClient, Request, pool_size_of
from sylkpush.pns.pending import DEFAULT_QUEUE_LIMIT, IN_FLIGHT
from sylkpush.pns.tls import client_tls_options

log = logging.getLogger(__name__)

LEGACY_URL = "https://fcm.googleapis.com/fcm/send"
V1_URL = "https://fcm.googleapis.com/v1/projects/{project}/messages:send"
#: first retry delay, doubled on each further try
RETRY_INITIAL = 0.5
RETRY_CAP = 30.0
#: one attempt is abandoned after this long (and retried if the deadline allows)
ATTEMPT_TIMEOUT = 30.0
#: renderer headers that the client sets itself
_OWN_HEADERS = frozenset({"authorization", "content-type", "content-length", "host"})
JSON_TYPE = "application/json; charset=UTF-8"
#: the message's JSON, compact (made once: json.dumps with options builds an encoder per call)
_PAYLOAD_ENCODER = json.JSONEncoder(separators=(",", ":"))

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

@implementer(IPolicyForHTTPS)
class _VerifiedTLSPolicy:
    """Verified TLS (HTTP/1.1) for the token endpoint.

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


class _Retry(Exception):
    """An answer that asks for another try: after ``retry_after`` (the
    service's Retry-After), at once, or after the usual backoff."""

    def __init__(self, reason: str, retry_after: Optional[float] = None, at_once: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.at_once = at_once


class _FirebasePending(H2Pending):
    """A push with its body, and what the client remembers between its tries
    (its headers are made for each try: a push held during an outage costs less)."""

    def __init__(self, push: OutgoingPush, owner: Any, url: str, body: bytes) -> None:
        super().__init__(push, owner, url, body)
        self.auth_retried = False
        #: the access token of the current attempt (v1)
        self.access_token: Optional[str] = None


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


class FirebaseClient(H2PoolClient[_FirebasePending]):
    """Sends pushes for one Firebase application.

    ``FirebaseClient(app, reactor)``: ``app`` is an AppConfig; ``clock``
    (default: the reactor) times deadlines, retries and token lifetimes, so
    tests can drive it with a Clock while the network runs on the reactor.
    ``max_in_flight`` (default ``firebase_max_in_flight``, else only the
    streams the service allows) bounds the requests on the wire at once.
    """

    platform = "firebase"
    name = "Firebase"
    retry_initial = RETRY_INITIAL
    retry_max = RETRY_CAP
    attempt_timeout = ATTEMPT_TIMEOUT

    def __init__(self, app: Any, reactor: Any, clock: Any = None,
                 max_in_flight: Optional[int] = None, queue_limit: int = DEFAULT_QUEUE_LIMIT,
                 wall_time: Callable[[], float] = time.time, connections: Optional[int] = None) -> None:
        legacy = bool(app.firebase_legacy)
        account = None
        if legacy:
            url = app.firebase_push_url or LEGACY_URL
            log.warning("%s: Firebase application %s uses the legacy FCM API (firebase_authorization_key), "
                        "which Google retired in 2024; configure firebase_authorization_file (HTTP v1) instead",
                        app.section, app.app_id)
        else:
            if not app.firebase_authorization_file:
                raise ConfigError("firebase_authorization_file (or the legacy firebase_authorization_key) is missing")
            account = load_service_account(app.firebase_authorization_file)
            if app.firebase_push_url:
                url = app.firebase_push_url
            elif account.project_id:
                url = V1_URL.format(project=account.project_id)
            else:
                raise ConfigError("firebase_push_url is missing and the service account file has no project_id")
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ConfigError(f"firebase_push_url {url!r} is not an https URL")
        try:
            port = parts.port or 443
        except ValueError:
            raise ConfigError(f"firebase_push_url {url!r} has an invalid port") from None
        if max_in_flight is None:
            try:
                text = app.option("firebase_max_in_flight", "").strip()
                max_in_flight = int(text) if text else None
            except ValueError:
                raise ConfigError("firebase_max_in_flight must be an integer") from None
        tls = client_tls_options(parts.hostname, app.tls_ca_file, alpn=(b"h2",))
        super().__init__(app, reactor, parts.hostname, port, tls,
                         connections or pool_size_of(app, "firebase_connections"), clock=clock,
                         queue_limit=queue_limit)
        self.wall_time = wall_time
        self.legacy = legacy
        self.account = account
        self.url = url
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        #: the headers every request starts with
        self._fixed_headers = [(":method", "POST"), (":scheme", "https"), (":authority", self.authority),
                               (":path", self.path), ("content-type", JSON_TYPE)]
        self.max_in_flight = max(1, max_in_flight) if max_in_flight is not None else None
        self._legacy_authorization = f"key={app.firebase_authorization_key}" if legacy else ""
        # the token endpoint is asked once an hour: HTTP/1.1 through an Agent is enough
        self.token_pool = connection_pool(reactor, per_host=1)
        self.token_pool.retryAutomatically = False
        token_host = urlsplit(account.token_uri).hostname if account is not None else None
        policy = _VerifiedTLSPolicy(app.tls_ca_file, [token_host] if token_host else [])
        http = HTTPClient(Agent(reactor, contextFactory=policy, pool=self.token_pool))
        self.tokens = (AccessTokenSource(account, http, reactor, self.clock, wall_time)
                       if account is not None else None)
        #: (push, its attempt number) waiting for an access token; they hold no stream yet
        self._awaiting_token: List[Tuple[_FirebasePending, int]] = []

    # --- the transport of the engine ----------------------------------------------

    def push_url(self, push: OutgoingPush) -> str:
        return self.url

    def prepare(self, push: OutgoingPush) -> Union[_FirebasePending, PushResult]:
        body = self.payload_body(push, _PAYLOAD_ENCODER)
        return _FirebasePending(push, self, self.url, body)

    def open(self) -> None:
        """Connect, and fetch the first access token now, so the first push does not wait for it."""
        log.info("Firebase client for %s (%s) opening %d HTTP/2 connections to %s", self.app.app_id,
                 "legacy API" if self.legacy else "HTTP v1", self.pool_size, self.authority)
        super().open()
        if self.tokens is not None:
            self.tokens.get().addErrback(lambda failure: None)  # logged by the token source

    def capacity(self) -> int:
        room = super().capacity() - len(self._awaiting_token)
        if self.max_in_flight is not None:
            room = min(room, self.max_in_flight - len(self.in_flight))
        return room

    def attempt(self, pending: _FirebasePending) -> None:
        if self.tokens is not None:
            token = self.tokens.current()
            if token is None:
                # the attempt waits for a token (every one waiting gets it at once)
                self._awaiting_token.append((pending, pending.attempts))
                if len(self._awaiting_token) == 1:
                    self.tokens.get().addBoth(self._token_arrived)
                return
            pending.access_token = token
        super().attempt(pending)

    def request(self, pending: _FirebasePending) -> Request:
        push = pending.push
        rendered = self.rendered_headers(push, _OWN_HEADERS)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: POST %s (try %d)", push.request_id, self.url, pending.attempts)
            log.debug("%s: outgoing headers %s", push.request_id,
                      headers_text([("content-type", JSON_TYPE)] + rendered + [("authorization", "")]))
            log.debug("%s: outgoing body %s", push.request_id, pending.body.decode("utf-8"))
        authorization = self._legacy_authorization if self.legacy else "Bearer " + (pending.access_token or "")
        return self._fixed_headers + rendered + [("authorization", authorization)], pending.body

    def stop(self):
        if self.tokens is not None:
            self.tokens.stop()  # pushes waiting for a token are answered now
        return super().stop()

    def close(self):
        closing = [self.token_pool.closeCachedConnections()]
        pool = super().close()
        if pool is not None:
            closing.append(pool)
        return DeferredList(closing)

    def connection_status(self) -> Dict[str, Any]:
        status = super().connection_status()
        if self.tokens is not None and self.tokens.current() is None:
            status["state"] = "authenticating" if self.tokens.fetching else "no-access-token"
        status["token_refreshes"] = self.tokens.refreshes if self.tokens is not None else 0
        return status

    # --- access tokens ----------------------------------------------------------------

    def _token_arrived(self, result: Any) -> None:
        """A token (or why none) for the attempts that waited for one."""
        waiting, self._awaiting_token = self._awaiting_token, []
        for pending, attempt in waiting:
            if pending.state is not IN_FLIGHT or pending.attempts != attempt:
                continue  # answered or given up on meanwhile
            if isinstance(result, Failure):
                error = result.value
                if not isinstance(error, TokenError):
                    self._bug(result, pending)
                elif error.permanent:
                    self.finish(pending, PushResult(503, f"no access token: {error.reason}", self.url, {}))
                else:
                    self.not_processed(pending, f"no access token: {error.reason}", backoff=True)
                continue
            protocol = self._free_connection()
            if protocol is None:
                self.not_processed(pending, f"no connection to {self.authority} has a free stream")
                continue
            pending.access_token = result
            self.send_on(protocol, pending, *self.request(pending))
        self.flush()

    # --- answers ------------------------------------------------------------------------

    def answered(self, pending: _FirebasePending, status: int, headers: Dict[str, str], content: bytes) -> None:
        push = pending.push
        try:
            body = json.loads(content.decode("utf-8")) if content else {}
        except (UnicodeDecodeError, ValueError):
            body = {}
        if not isinstance(body, dict):
            body = {}
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: incoming %d headers %s", push.request_id, status, headers_text(headers))
            log.debug("%s: incoming body %s", push.request_id, content.decode("utf-8", "replace")[:4096])
        try:
            if self.legacy:
                result = self._legacy_result(status, headers, content, body)
            else:
                result = self._v1_result(status, headers, body, pending)
        except _Retry as retry:
            self.retry(pending, retry.reason, delay=0.0 if retry.at_once else None, retry_after=retry.retry_after)
            return
        except Exception:  # a bug: the caller still gets one answer
            self._bug(Failure(), pending)
            return
        self.finish(pending, result)

    def _retry_after(self, headers: Dict[str, str]) -> Optional[float]:
        return parse_retry_after(headers.get("retry-after"), self.wall_time())

    def _v1_result(self, code: int, headers: Dict[str, str], body: Dict[str, Any],
                   pending: _FirebasePending) -> PushResult:
        if code == 200:
            return PushResult(200, "OK", self.url, body)
        error = _error_object(body)
        status = str(error.get("status") or f"HTTP {code}")
        message = str(error.get("message") or RESPONSES.get(code, b"").decode("latin-1"))
        fcm_code = _fcm_error_code(error)
        name = fcm_code if fcm_code and fcm_code != status else status
        reason = f"{name} - {message}"
        if fcm_code in FCM_ERRORS and FCM_ERRORS[fcm_code] not in message:
            reason = f"{reason} ({FCM_ERRORS[fcm_code]})"
        if code == 401 and fcm_code != "THIRD_PARTY_AUTH_ERROR":
            if not pending.auth_retried and self.tokens is not None:
                pending.auth_retried = True
                if pending.access_token is not None:
                    self.tokens.invalidate(pending.access_token)
                raise _Retry(f"access token refused: {reason}", at_once=True)
            return PushResult(401, reason, self.url, body)
        if (code == 404 and fcm_code == "UNREGISTERED") or \
                (code == 400 and status == "INVALID_ARGUMENT" and _about_token(error)):
            return PushResult(410, reason, self.url, body)
        if code == 429 or code >= 500:
            raise _Retry(f"{code} {reason}", self._retry_after(headers))
        return PushResult(code, reason, self.url, body)

    def _legacy_result(self, code: int, headers: Dict[str, str], content: bytes,
                       body: Dict[str, Any]) -> PushResult:
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
                raise _Retry(reason, self._retry_after(headers))
            return PushResult(final, reason, self.url, body)
        text = content.decode("utf-8", "replace").strip()
        reason = f"HTTP {code} {RESPONSES.get(code, b'').decode('latin-1')}".rstrip()
        if code == 401:
            reason += " - the legacy server key (firebase_authorization_key) was refused"
        elif text and not body and len(text) < 200 and "<" not in text:
            reason += f" - {text}"
        if code == 429 or code >= 500:
            raise _Retry(reason, self._retry_after(headers))
        return PushResult(code, reason, self.url, body)

    def _bug(self, failure: Failure, pending: _FirebasePending) -> None:
        log.error("%s: unexpected error in the Firebase client: %s", pending.push.request_id,
                  failure.getTraceback())
        self.finish(pending, PushResult(500, f"internal error: {failure.getErrorMessage()}", self.url, {}))
