"""The APNs client: a pool of long-lived HTTP/2 connections per Apple application.

:class:`AppleClient` is an :class:`sylkpush.pns.h2pool.H2PoolClient` (the
delivery engine's queue, deadlines and retries over ``apple_connections``
HTTP/2 connections): it renders each push as an APNs request, with a provider
token when the application uses token authentication, and maps APNs answers
to results.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any, Dict, Optional, Union
from urllib.parse import quote

from sylkpush.pns.apple_auth import TokenAuth, auth_for
from sylkpush.pns.base import OutgoingPush, PushResult, headers_text
from sylkpush.pns.engine import parse_retry_after
from sylkpush.pns.h2pool import H2Pending, H2PoolClient, Request, pool_size_of
from sylkpush.pns.pending import DEFAULT_QUEUE_LIMIT
from sylkpush.pns.tls import client_tls_options

log = logging.getLogger(__name__)

#: payload limits in bytes (Apple: 4 KiB, 5 KiB for VoIP notifications)
PAYLOAD_LIMIT = 4096
VOIP_PAYLOAD_LIMIT = 5120

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

#: the payload's JSON, compact and in UTF-8 (made once: json.dumps with options builds an encoder per call)
_PAYLOAD_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)

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



def device_path(token: str) -> str:
    """The :path of a push to ``token``.

    Everything but unreserved characters is percent-encoded, and so are the
    dots of a token made only of dots: no token can form a dot-segment
    (``/3/device/..``) or leave ``/3/device/``.  Hex tokens are unchanged.
    """
    if token.isascii() and token.isalnum():  # the usual hex token: nothing to quote
        return "/3/device/" + token
    quoted = quote(token, safe="")
    if not quoted.strip("."):
        quoted = quoted.replace(".", "%2E")
    return "/3/device/" + quoted


class _ApplePending(H2Pending):
    """A push with its APNs payload (its headers are made for each try: a
    push held during an outage costs less)."""

    def __init__(self, push: OutgoingPush, client: "AppleClient", url: str, body: bytes,
                 apns_id: Optional[str]) -> None:
        super().__init__(push, client, url, body)
        self.apns_id = apns_id
        self.authorization: Optional[str] = None
        self.auth_retried = False


class AppleClient(H2PoolClient[_ApplePending]):
    """Sends the pushes of one Apple application over a pool of HTTP/2 connections.

    ``AppleClient(app, reactor, queue_limit=10000, connections=None)``;
    ``connections`` overrides ``apple_connections``.  Raises ConfigError when
    the settings cannot work.  The timing attributes of H2PoolClient may be
    changed before :meth:`start`.
    """

    platform = "apple"
    name = "APNs"
    retry_initial = 0.5
    retry_max = 60.0

    def __init__(self, app: Any, reactor: Any, queue_limit: int = DEFAULT_QUEUE_LIMIT,
                 connections: Optional[int] = None) -> None:
        auth = auth_for(app, reactor)
        tls = client_tls_options(app.apple_host, app.tls_ca_file, auth.client_certificate, alpn=(b"h2",))
        super().__init__(app, reactor, app.apple_host, app.apple_port, tls,
                         connections or pool_size_of(app, "apple_connections"), queue_limit=queue_limit)
        self.auth = auth

    # -- the transport of the engine -------------------------------------------

    def push_url(self, push: OutgoingPush) -> str:
        return self.base_url + device_path(push.token)

    def prepare(self, push: OutgoingPush) -> Union[_ApplePending, PushResult]:
        path = device_path(push.token)
        url = self.base_url + path
        body = self.payload_body(push, _PAYLOAD_ENCODER)
        voip = push.voip or push.headers.get("apns-push-type") == "voip"
        limit = VOIP_PAYLOAD_LIMIT if voip else PAYLOAD_LIMIT
        if len(body) > limit:
            result = PushResult(413, f"{describe(413, 'PayloadTooLarge')} ({len(body)} bytes, "
                                     f"the limit is {limit})", url)
            log.info("%s: not sent to %s: %s", push.request_id, url, result.reason)
            return result
        apns_id = None
        if self.app.apple_apns_id and "apns-id" not in push.headers:
            # one id for every try of this push, so a delivery can be traced and counted
            # (without it APNs makes one up for each try: a unique header costs CPU on every push)
            apns_id = str(uuid.uuid4())
        return _ApplePending(push, self, url, body, apns_id)

    def open(self) -> None:
        log.info("APNs client for %s (%s auth) opening %d connections to %s", self.app.app_id,
                 self.auth.mode, self.pool_size, self.authority)
        super().open()

    def request(self, pending: _ApplePending) -> Request:
        headers = [(":method", "POST"), (":scheme", "https"), (":authority", self.authority),
                   (":path", pending.url[len(self.base_url):])]
        headers += self.rendered_headers(pending.push)
        if pending.apns_id is not None:
            headers.append(("apns-id", pending.apns_id))
        authorization = self.auth.authorization()
        if authorization is not None:
            headers.append(("authorization", authorization))
        pending.authorization = authorization
        if log.isEnabledFor(logging.DEBUG):
            request_id = pending.push.request_id
            log.debug("%s: sending to %s (try %d)", request_id, pending.url, pending.attempts)
            log.debug("%s: outgoing headers %s", request_id, headers_text(headers))
            log.debug("%s: outgoing body %s", request_id, pending.body.decode("utf-8", "replace"))
        return headers, pending.body

    def connection_status(self) -> Dict[str, Any]:
        return dict(super().connection_status(), auth=self.auth.mode)

    # -- answers -------------------------------------------------------------

    def answered(self, pending: _ApplePending, status: int, headers: Dict[str, str], raw: bytes) -> None:
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
