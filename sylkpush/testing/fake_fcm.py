"""A fake Firebase Cloud Messaging service on loopback, for tests, benchmarks and demos.

One HTTPS server (TLS with a certificate from a throw-away CA; HTTP/2 or
HTTP/1.1, whichever the client chose with ALPN, as Google's servers do) serves

- ``POST /v1/projects/<project>/messages:send``: FCM HTTP v1, with OAuth2
  bearer tokens checked and messages validated as FCM does;
- ``POST /token``: the OAuth2 token endpoint the service-account file's
  ``token_uri`` points at; it verifies the RS256 JWT assertion against the
  service account's public key and issues access tokens;
- ``POST /fcm/send``: the retired legacy API, with ``Authorization: key=...``.

Tests script it per device token (unregistered, invalid, quota exceeded,
slow, ...), inject 5xx bursts, revoke access tokens, stop and restart it on the
same port, and read back exactly what was delivered.

Run it by hand for a demo::

    python -m sylkpush.testing.fake_fcm --port 8443 --dir /tmp/fake-fcm --delay 0.05
"""

from __future__ import annotations

import collections
import io
import itertools
import json
import logging
import os
import re
import secrets
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple
from urllib.parse import parse_qs

import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.internet import ssl
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.protocol import Factory
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web import server
from twisted.web.resource import Resource

from sylkpush.connections import all_closed, close_all
from sylkpush.testing.certs import CertificateAuthority
from sylkpush.testing.control import QuietSite, fake_arguments, serve_fake
from sylkpush.testing.h2server import AlpnSwitch, H2ServerProtocol

log = logging.getLogger("sylkpush.testing.fake_fcm")  # not __main__ when run with -m

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
CA_FILE_NAME = "fake-fcm-ca.crt"
SERVICE_ACCOUNT_FILE_NAME = "fake-fcm-service-account.json"
APPLICATIONS_FILE_NAME = "fake-fcm-applications.ini"

#: what Google's front ends allow on one HTTP/2 connection
MAX_CONCURRENT_STREAMS = 100

_SEND_PATH = re.compile(r"^/v1/projects/([^/]+)/messages:send$")
_TTL = re.compile(r"^\d+(\.\d{1,9})?s$")


@dataclass(frozen=True)
class ErrorAnswer:
    """How FCM answers one kind of error: v1 status and JSON, and the legacy result."""

    http_code: int
    status: str
    message: str
    error_code: str
    legacy_error: str


#: the errors a test can script for a device token, by FCM error code
FAILURES: Dict[str, ErrorAnswer] = {
    "UNREGISTERED": ErrorAnswer(404, "NOT_FOUND", "Requested entity was not found.",
                            "UNREGISTERED", "NotRegistered"),
    "INVALID_ARGUMENT": ErrorAnswer(400, "INVALID_ARGUMENT",
                                "The registration token is not a valid FCM registration token",
                                "INVALID_ARGUMENT", "InvalidRegistration"),
    "SENDER_ID_MISMATCH": ErrorAnswer(403, "PERMISSION_DENIED", "SenderId mismatch",
                                  "SENDER_ID_MISMATCH", "MismatchSenderId"),
    "QUOTA_EXCEEDED": ErrorAnswer(429, "RESOURCE_EXHAUSTED",
                              "Quota exceeded for quota metric 'Send requests' of service 'fcm.googleapis.com'",
                              "QUOTA_EXCEEDED", "DeviceMessageRateExceeded"),
    "UNAVAILABLE": ErrorAnswer(503, "UNAVAILABLE", "The service is currently unavailable.",
                           "UNAVAILABLE", "Unavailable"),
    "INTERNAL": ErrorAnswer(500, "INTERNAL", "Internal error encountered.", "INTERNAL", "InternalServerError"),
    "THIRD_PARTY_AUTH_ERROR": ErrorAnswer(401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service",
                                      "THIRD_PARTY_AUTH_ERROR", "InvalidApnsCredential"),
}


@dataclass
class Scripted:
    """A scripted answer for one device token; ``times`` None means for ever."""

    failure: ErrorAnswer
    times: Optional[int] = None
    retry_after: Optional[int] = None


def write_service_account(directory: str, token_uri: str, project: str = "sylk-fake",
                          key: Optional[rsa.RSAPrivateKey] = None,
                          name: str = SERVICE_ACCOUNT_FILE_NAME) -> Tuple[str, rsa.RSAPrivateKey]:
    """Write a service-account JSON file (fresh RSA key unless ``key``); returns its path and key."""
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode("ascii")
    info = {
        "type": "service_account",
        "project_id": project,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": f"firebase-adminsdk@{project}.iam.gserviceaccount.com",
        "client_id": str(secrets.randbelow(10 ** 20)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    }
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(info, stream, indent=2)
    os.chmod(path, 0o600)
    return path, key


class _NoDelay(ProtocolWrapper):
    def makeConnection(self, transport) -> None:  # noqa: N802 (Twisted's name)
        # twisted.web writes the headers and the body separately: without
        # TCP_NODELAY the body waits for the client's delayed ACK (~40 ms)
        transport.setTcpNoDelay(True)
        super().makeConnection(transport)


class _Connections(WrappingFactory):
    """Knows its open connections, with TCP_NODELAY and a cut-off, so
    stop() can drop every connection and wait until they are gone."""

    noisy = False
    protocol = _NoDelay

    #: seconds a connection gets to close cleanly before it is cut
    CLOSE_GRACE = 1.0

    def __init__(self, wrapped, reactor: Any) -> None:
        super().__init__(wrapped)
        self._reactor = reactor
        self._closed: "List[Deferred[None]]" = []

    def unregisterProtocol(self, p: Any) -> None:  # noqa: N802 (Twisted's name)
        super().unregisterProtocol(p)
        if not self.protocols:
            all_closed(self._closed)

    def close_all(self) -> Deferred:
        """Close every connection once its pending output is written; fires when all are gone."""
        return close_all(self.protocols, self._closed)

    def drop_all(self) -> Deferred:
        # answers already written (and counted as delivered) still leave:
        # were they dropped, a client retrying them would be blamed for the
        # duplicate; requests not yet answered die with the connection
        closed = self.close_all()
        if closed.called:
            return closed
        # an idle keep-alive connection of a client may not finish the TLS
        # close for a long time: past the grace period it is cut
        cut = self._reactor.callLater(self.CLOSE_GRACE, self._abort_all)
        closed.addBoth(lambda result: (cut.active() and cut.cancel(), result)[1])
        return closed

    def _abort_all(self) -> None:
        for protocol in list(self.protocols):
            protocol.transport.abortConnection()


class _H2Request:
    """One HTTP/2 request, with the part of twisted.web's Request the handlers use."""

    def __init__(self, connection: "_FakeFCMH2", stream_id: int, headers: List[Tuple[str, str]]) -> None:
        self.connection = connection
        self.stream_id = stream_id
        self.transport = connection.transport
        fields = dict(headers)
        self.method = fields.get(":method", "").encode("latin-1")
        self.path = fields.get(":path", "").split("?", 1)[0].encode("latin-1")
        self._headers = {name.encode("latin-1"): value.encode("latin-1") for name, value in headers}
        self.content = io.BytesIO()
        self.finished = False
        self.code = 200
        self._out_headers: List[Tuple[str, str]] = []
        self._body: List[bytes] = []
        self._finish: Optional[Deferred] = None

    def getHeader(self, name: bytes) -> Optional[bytes]:  # noqa: N802 (twisted.web's name)
        return self._headers.get(name.lower())

    def setResponseCode(self, code: int) -> None:  # noqa: N802
        self.code = code

    def setHeader(self, name: bytes, value: bytes) -> None:  # noqa: N802
        if name.lower() != b"content-length":  # the answer's own length is sent
            self._out_headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def write(self, data: bytes) -> None:
        self._body.append(data)

    def finish(self) -> None:
        self.finished = True
        self.connection.answer(self, self.code, self._out_headers, b"".join(self._body))
        if self._finish is not None:
            self._finish.callback(None)

    def notifyFinish(self) -> Deferred:  # noqa: N802
        """Fires when the answer is written, fails when the client went away (one caller)."""
        if self._finish is None:
            self._finish = Deferred()
        return self._finish

    def lost(self, reason: str) -> None:
        """The stream was reset or the connection lost before the answer."""
        if not self.finished:
            self.finished = True
            if self._finish is not None:
                self._finish.errback(ConnectionError(reason))


class _FakeFCMH2(H2ServerProtocol):
    """An HTTP/2 connection to the fake: each request goes to the same handlers as over HTTP/1.1."""

    def __init__(self, fake: "FakeFCM") -> None:
        super().__init__(fake.reactor, MAX_CONCURRENT_STREAMS)
        self.fake = fake
        self.requests: Dict[int, _H2Request] = {}

    def connectionMade(self) -> None:  # noqa: N802
        self.fake._h2_connections.add(self)
        self.fake.h2_connections += 1
        super().connectionMade()

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        super().connectionLost(reason)
        self.fake._h2_connections.discard(self)
        requests, self.requests = self.requests, {}
        for request in requests.values():
            request.lost("connection lost")

    def open_streams(self) -> int:
        return len(self.requests)

    def request_received(self, stream_id: int, headers: List[Tuple[str, str]]) -> None:
        self.requests[stream_id] = _H2Request(self, stream_id, headers)
        self.fake.max_open_streams = max(self.fake.max_open_streams, len(self.requests))

    def body_received(self, stream_id: int, data: bytes) -> None:
        request = self.requests.get(stream_id)
        if request is not None:
            request.content.write(data)

    def request_complete(self, stream_id: int) -> None:
        request = self.requests.get(stream_id)
        if request is not None:
            request.content.seek(0)
            self.fake.route(request)

    def stream_reset(self, stream_id: int) -> None:
        request = self.requests.pop(stream_id, None)
        if request is not None:
            self.fake.resets += 1
            request.lost("stream reset")

    def answer(self, request: _H2Request, status: int, headers: List[Tuple[str, str]], body: bytes) -> None:
        if self.requests.pop(request.stream_id, None) is not None:
            self.respond(request.stream_id, status, headers, body)


class _Switching(Factory):
    """Connections speak HTTP/2 or HTTP/1.1 (``site``), as the client chose with ALPN."""

    noisy = False  # no "Starting factory" line at each (re)start

    def __init__(self, fake: "FakeFCM", site: server.Site) -> None:
        self.fake = fake
        self.site = site

    def startFactory(self) -> None:  # noqa: N802
        self.site.doStart()

    def stopFactory(self) -> None:  # noqa: N802
        self.site.doStop()

    def buildProtocol(self, addr: Any) -> AlpnSwitch:  # noqa: N802
        return AlpnSwitch(_FakeFCMH2(self.fake), self.site.buildProtocol(addr))


class FakeFCM:
    """The fake service; ``start()`` listens and writes the service-account file.

    ``reactor`` serves the connections and times the delays and access-token
    lifetimes; ``wall_time`` checks the JWT assertion's ``iat``/``exp``.
    ``service_key`` (an RSA key) saves generating one when many fakes are made.
    """

    def __init__(self, reactor: Any, directory: str, host: str = "127.0.0.1", port: int = 0,
                 delay: float = 0.0, project: str = "sylk-fake", token_lifetime: float = 3600.0,
                 legacy_key: Optional[str] = None, wall_time: Callable[[], float] = time.time,
                 service_key: Optional[rsa.RSAPrivateKey] = None) -> None:
        self.reactor = reactor
        self.directory = directory = os.path.abspath(directory)
        os.makedirs(directory, exist_ok=True)
        self.project = project
        self.port = port
        self.host = host
        self.delay = delay
        self.token_lifetime = token_lifetime
        self.legacy_key = legacy_key or "AAAA" + secrets.token_urlsafe(32)
        self.wall_time = wall_time
        ca = CertificateAuthority("Sylk Pushserver fake FCM CA")
        self.ca_file = ca.write(directory, CA_FILE_NAME[:-4])
        issued = ca.server(("localhost", "127.0.0.1", "::1"))
        certificate = ssl.PrivateCertificate.loadPEM(issued.combined_pem)
        # HTTP/1.1 named in ALPN too: recent Twisted aborts a handshake whose ALPN offer it cannot answer
        self._tls = ssl.CertificateOptions(privateKey=certificate.privateKey.original,
                                           certificate=certificate.original,
                                           acceptableProtocols=[b"h2", b"http/1.1"])
        self._service_key = service_key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._public_key_pem = self._service_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.service_account_file = ""
        self.client_email = ""
        # what happened, for tests to assert on
        self.messages: List[Dict[str, Any]] = []  # every accepted v1 message
        self.legacy_messages: List[Dict[str, Any]] = []  # every accepted legacy body
        self.deliveries: collections.Counter = collections.Counter()  # device token -> deliveries
        self.push_requests = 0  # push requests received (v1 and legacy, any outcome)
        self.protocols: collections.Counter = collections.Counter()  # "h2" / "http/1.1" -> requests
        self.h2_connections = 0  # HTTP/2 connections accepted
        self.max_open_streams = 0  # most requests open at once on one HTTP/2 connection
        self.resets = 0  # HTTP/2 requests reset by the client before their answer
        self.token_fetches = 0  # access tokens issued
        self.token_requests = 0  # token endpoint requests (any outcome)
        self.authorizations: List[str] = []  # the access token of each accepted v1 push
        self.issued: List[str] = []  # every access token issued
        # scripting
        self.access_tokens: Dict[str, float] = {}  # token -> expiry (reactor time)
        self.scripts: Dict[str, Deque[Scripted]] = {}
        self.token_delays: Dict[str, float] = {}
        self._burst: Deque[Tuple[int, Optional[int]]] = collections.deque()
        self._token_endpoint_failures: Deque[int] = collections.deque()
        self._message_ids = itertools.count(int(time.time() * 1000) % 10 ** 12)
        self._pending: Dict[Any, Any] = {}  # delayed answer -> its request
        self._listening = None
        self._factory: Optional[_Connections] = None
        self._h2_connections: set = set()
        self._request_waiters: List[Tuple[int, Deferred]] = []

    # --- addresses -------------------------------------------------------------

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"https://{self.authority}"

    @property
    def push_url(self) -> str:
        return f"{self.base_url}/v1/projects/{self.project}/messages:send"

    @property
    def legacy_url(self) -> str:
        return f"{self.base_url}/fcm/send"

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    # --- life cycle ------------------------------------------------------------

    def start(self) -> "Deferred[int]":
        """Listen (on the same port as before after a stop); fires with the port."""
        root = _FakeResource(self)
        self._factory = _Connections(_Switching(self, QuietSite(root)), self.reactor)
        listening = self.reactor.listenSSL(self.port, self._factory, self._tls, interface=self.host)
        self._listening = listening
        self.port = listening.getHost().port
        if not self.service_account_file:
            self.service_account_file, _ = write_service_account(
                self.directory, self.token_uri, self.project, key=self._service_key)
            with open(self.service_account_file, encoding="utf-8") as stream:
                self.client_email = json.load(stream)["client_email"]
        return succeed(self.port)

    def stop(self) -> Deferred:
        """Stop listening, drop every connection and forget delayed answers."""
        for call in list(self._pending):
            if call.active():
                call.cancel()
        self._pending.clear()
        listening, self._listening = self._listening, None
        factory, self._factory = self._factory, None
        waits = []
        if listening is not None:
            waits.append(listening.stopListening() or succeed(None))
        for connection in list(self._h2_connections):
            connection.flush()  # answers counted as delivered leave before the connection closes
        if factory is not None:
            waits.append(factory.drop_all())
        return DeferredList(waits).addCallback(lambda _: None)

    def restart(self) -> Deferred:
        return self.stop().addCallback(lambda _: self.start())

    # --- scripting ---------------------------------------------------------------

    def script(self, device_token: str, error_code: str, times: Optional[int] = None,
               retry_after: Optional[int] = None) -> None:
        """Answer pushes to ``device_token`` with ``error_code`` (a key of FAILURES),
        ``times`` times or for ever; added after the answers already scripted."""
        self.scripts.setdefault(device_token, collections.deque()).append(
            Scripted(FAILURES[error_code], times, retry_after))

    def unregister(self, device_token: str) -> None:
        self.script(device_token, "UNREGISTERED")

    def fail_next(self, count: int, status: int = 503, retry_after: Optional[int] = None) -> None:
        """The next ``count`` push requests (any token) get HTTP ``status`` (500 or 503)."""
        for _ in range(count):
            self._burst.append((status, retry_after))

    def fail_token_requests(self, count: int, status: int = 503) -> None:
        """The next ``count`` token endpoint requests get HTTP ``status``."""
        self._token_endpoint_failures.extend([status] * count)

    def slow(self, device_token: str, delay: float) -> None:
        """Answer pushes to ``device_token`` after ``delay`` seconds instead of ``self.delay``."""
        self.token_delays[device_token] = delay

    def revoke_access_tokens(self) -> None:
        """Every access token issued so far is refused from now on (401)."""
        self.access_tokens.clear()

    def wait_for_requests(self, count: int) -> Deferred:
        """Fires once ``count`` push requests in total have arrived."""
        d: Deferred = Deferred()
        if self.push_requests >= count:
            d.callback(self.push_requests)
        else:
            self._request_waiters.append((count, d))
        return d

    def applications_ini(self, app_id: str = "com.example.fake.fcm", app_type: str = "sylk",
                         section: str = "", legacy: bool = False) -> str:
        """An applications.ini section for an application served by this fake."""
        lines = [f"[{section or app_id}]", f"app_id = {app_id}", f"app_type = {app_type}",
                 "app_platform = firebase"]
        if legacy:
            lines += [f"firebase_push_url = {self.legacy_url}",
                      f"firebase_authorization_key = {self.legacy_key}"]
        else:
            lines += [f"firebase_push_url = {self.push_url}",
                      f"firebase_authorization_file = {self.service_account_file}"]
        lines.append(f"tls_ca_file = {self.ca_file}")
        return "\n".join(lines) + "\n"

    # --- request handling ----------------------------------------------------------

    def route(self, request) -> None:
        """Hand ``request`` (HTTP/1.1 or HTTP/2) to its handler."""
        self.protocols["h2" if isinstance(request, _H2Request) else "http/1.1"] += 1
        if request.method != b"POST":
            return _v1_error(request, 405, "METHOD_NOT_ALLOWED", "Only POST is served.", None)
        path = request.path.decode("latin-1")
        match = _SEND_PATH.match(path)
        if match:
            self.handle_send(request, match.group(1))
        elif path == "/fcm/send":
            self.handle_legacy(request)
        elif path == "/token":
            self.handle_token(request)
        else:
            _v1_error(request, 404, "NOT_FOUND", f"{path} was not found on this server.", None)

    def _arrived(self) -> None:
        self.push_requests += 1
        if self._request_waiters:
            ready = [(n, d) for n, d in self._request_waiters if self.push_requests >= n]
            self._request_waiters = [(n, d) for n, d in self._request_waiters if self.push_requests < n]
            for _, d in ready:
                d.callback(self.push_requests)

    def _later(self, delay: float, request, handler: Callable[[], None]) -> None:
        """Run ``handler`` after ``delay``; forget it if the client goes away first."""
        def fire() -> None:
            self._pending.pop(call, None)
            if not finished[0]:
                handler()

        finished = [False]
        call = self.reactor.callLater(delay, fire)
        self._pending[call] = request

        def gone(_):
            finished[0] = True
            if call.active():
                call.cancel()
            self._pending.pop(call, None)
        request.notifyFinish().addErrback(gone)

    def _next_scripted(self, device_token: str) -> Optional[Scripted]:
        queue = self.scripts.get(device_token)
        if not queue:
            return None
        scripted = queue[0]
        if scripted.times is not None:
            scripted.times -= 1
            if scripted.times <= 0:
                queue.popleft()
        return scripted

    def _new_message_id(self) -> str:
        return str(next(self._message_ids))

    # v1 ---------------------------------------------------------------------------

    def _receive(self, request, answer: Callable[[Optional[Tuple[int, Optional[int]]], bytes, str], None]) -> None:
        """Count a push request and call ``answer(burst, body, authorization)``
        after the delay scripted for its token (``burst``: a scripted 5xx)."""
        if self._factory is None:
            # stopping: a request that still arrives on a closing connection
            # is not processed (nor counted), as at a server shutting down
            request.transport.abortConnection()
            return
        self._arrived()
        burst = self._burst.popleft() if self._burst else None
        body = request.content.read()
        authorization = (request.getHeader(b"authorization") or b"").decode("latin-1")
        delay = self.token_delays.get(_device_token(body), self.delay)
        if delay > 0:
            self._later(delay, request, lambda: answer(burst, body, authorization))
        else:
            answer(burst, body, authorization)

    def handle_send(self, request, project: str) -> None:
        def answer(burst, body: bytes, authorization: str) -> None:
            if burst is not None:
                status, retry_after = burst
                failure = FAILURES["UNAVAILABLE" if status == 503 else "INTERNAL"]
                return _v1_error(request, status, failure.status, failure.message, failure.error_code,
                                 retry_after=retry_after)
            self._answer_send(request, project, body, authorization)
        self._receive(request, answer)

    def _answer_send(self, request, project: str, body: bytes, authorization: str) -> None:
        scheme, _, access_token = authorization.partition(" ")
        expiry = self.access_tokens.get(access_token)
        if scheme.lower() != "bearer" or expiry is None or expiry <= self.reactor.seconds():
            return _v1_error(request, 401, "UNAUTHENTICATED",
                             "Request had invalid authentication credentials. Expected OAuth 2 access "
                             "token, login cookie or other valid authentication credential.", None)
        if project != self.project:
            return _v1_error(request, 403, "PERMISSION_DENIED",
                             f"Permission 'cloudmessaging.messages.create' denied on resource "
                             f"'//cloudresourcemanager.googleapis.com/projects/{project}'", None)
        try:
            document = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            return _v1_error(request, 400, "INVALID_ARGUMENT", f"Invalid JSON payload received. {exc}", None)
        problem = validate_v1(document)
        if problem is not None:
            field, description = problem
            return _v1_error(request, 400, "INVALID_ARGUMENT", description, "INVALID_ARGUMENT",
                             violation=(field, description))
        message = document["message"]
        target = message.get("token") or message.get("topic") or message.get("condition")
        scripted = self._next_scripted(target)
        if scripted is not None:
            failure = scripted.failure
            return _v1_error(request, failure.http_code, failure.status, failure.message,
                             failure.error_code, retry_after=scripted.retry_after)
        self.messages.append(message)
        self.deliveries[target] += 1
        self.authorizations.append(access_token)
        _send_json(request, 200, {"name": f"projects/{self.project}/messages/{self._new_message_id()}"})

    # legacy -------------------------------------------------------------------------

    def handle_legacy(self, request) -> None:
        def answer(burst, body: bytes, authorization: str) -> None:
            if burst is not None:
                status, retry_after = burst
                if retry_after is not None:
                    request.setHeader(b"Retry-After", str(retry_after).encode())
                return _send_text(request, status, "Service Unavailable" if status == 503 else "Internal Server Error")
            self._answer_legacy(request, body, authorization)
        self._receive(request, answer)

    def _answer_legacy(self, request, body: bytes, authorization: str) -> None:
        if authorization != f"key={self.legacy_key}":
            return _send_text(request, 401, "<HTML><HEAD><TITLE>Unauthorized</TITLE></HEAD>"
                                            "<BODY><H1>Unauthorized</H1></BODY></HTML>", "text/html")
        try:
            document = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return _send_text(request, 400, "JSON_PARSING_ERROR: Unexpected character at position 0.")
        if not isinstance(document, dict):
            return _send_text(request, 400, "JSON_PARSING_ERROR: the body is not an object.")
        targets = document.get("registration_ids") or ([document["to"]] if document.get("to") else [])
        if not targets or not all(isinstance(t, str) for t in targets):
            return _send_text(request, 400, 'Missing "registration_ids" field')
        results = []
        for target in targets:
            scripted = self._next_scripted(target)
            if scripted is not None:
                results.append({"error": scripted.failure.legacy_error})
            elif not target.strip() or any(c.isspace() for c in target):
                results.append({"error": "InvalidRegistration"})
            else:
                message_id = f"0:{self._new_message_id()}%{secrets.token_hex(8)}"
                results.append({"message_id": message_id})
                self.deliveries[target] += 1
        if any("message_id" in r for r in results):
            self.legacy_messages.append(document)
        success = sum(1 for r in results if "message_id" in r)
        _send_json(request, 200, {"multicast_id": secrets.randbelow(2 ** 62), "success": success,
                                  "failure": len(results) - success, "canonical_ids": 0, "results": results})

    # OAuth2 ---------------------------------------------------------------------------

    def handle_token(self, request) -> None:
        self.token_requests += 1
        if self._token_endpoint_failures:
            status = self._token_endpoint_failures.popleft()
            return _send_json(request, status, {"error": "internal_failure",
                                                "error_description": "The token service failed."})
        form = parse_qs(request.content.read().decode("ascii", "replace"))
        grant_type = form.get("grant_type", [""])[0]
        assertion = form.get("assertion", [""])[0]
        if grant_type != JWT_BEARER_GRANT:
            return _send_json(request, 400, {"error": "unsupported_grant_type",
                                             "error_description": f"Invalid grant_type: {grant_type}"})
        problem = self.check_assertion(assertion)
        if problem is not None:
            error, description = problem
            return _send_json(request, 400, {"error": error, "error_description": description})
        access_token = "ya29.fake-" + secrets.token_urlsafe(32)
        self.access_tokens[access_token] = self.reactor.seconds() + self.token_lifetime
        self.token_fetches += 1
        self.issued.append(access_token)
        _send_json(request, 200, {"access_token": access_token, "expires_in": int(self.token_lifetime),
                                  "token_type": "Bearer"})

    def check_assertion(self, assertion: str) -> Optional[Tuple[str, str]]:
        """``(error, description)`` as Google's token endpoint words them, or None."""
        try:
            header = pyjwt.get_unverified_header(assertion)
            claims = pyjwt.decode(assertion, self._public_key_pem, algorithms=["RS256"],
                                  options={"verify_exp": False, "verify_iat": False, "verify_nbf": False,
                                           "verify_aud": False, "verify_iss": False})
        except pyjwt.InvalidTokenError:
            return "invalid_grant", "Invalid JWT Signature."
        if header.get("alg") != "RS256":
            return "invalid_grant", "Invalid JWT: the algorithm must be RS256."
        if claims.get("iss") != self.client_email:
            return "invalid_grant", "Invalid grant: account not found"
        if claims.get("aud") != self.token_uri:
            return "invalid_grant", "Invalid JWT: Failed audience check."
        scopes = str(claims.get("scope", "")).split()
        if FCM_SCOPE not in scopes:
            return "invalid_scope", "Invalid OAuth scope or ID token audience provided."
        now = self.wall_time()
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, (int, float)) or not isinstance(exp, (int, float)) \
                or iat > now + 60 or exp <= now or exp - iat > 3600:
            return "invalid_grant", ("Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                                     "reasonable timeframe. Check your iat and exp values in the JWT claim.")
        return None


class _FakeResource(Resource):
    isLeaf = True

    def __init__(self, fake: FakeFCM) -> None:
        super().__init__()
        self.fake = fake

    def render(self, request):
        self.fake.route(request)
        return server.NOT_DONE_YET


def validate_v1(document: Any) -> Optional[Tuple[str, str]]:
    """``(field, description)`` for the first reason FCM would refuse ``document``."""
    if not isinstance(document, dict):
        return "", "Invalid JSON payload received. Root element must be a message."
    for key in document:
        if key not in ("message", "validate_only"):
            return key, f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.'
    message = document.get("message")
    if not isinstance(message, dict):
        return "message", "Request contains an invalid argument: message is missing."
    targets = [key for key in ("token", "topic", "condition") if key in message]
    if len(targets) != 1:
        return "message", "Exactly one of token, topic or condition must be specified."
    target = message[targets[0]]
    if not isinstance(target, str):
        return f"message.{targets[0]}", f"Invalid value at 'message.{targets[0]}' (TYPE_STRING)"
    if targets[0] == "token" and (not target.strip() or any(c.isspace() for c in target)):
        return "message.token", "The registration token is not a valid FCM registration token"
    data = message.get("data")
    if data is not None:
        if not isinstance(data, dict):
            return "message.data", "Invalid value at 'message.data' (Map), must be an object"
        for index, (key, value) in enumerate(data.items()):
            if not isinstance(value, str):
                return (f"message.data[{index}].value",
                        f"Invalid value at 'message.data[{index}].value' (TYPE_STRING), {json.dumps(value)}")
    android = message.get("android")
    if android is not None:
        if not isinstance(android, dict):
            return "message.android", "Invalid value at 'message.android', must be an object"
        ttl = android.get("ttl")
        if ttl is not None and (not isinstance(ttl, str) or not _TTL.match(ttl)):
            return "message.android.ttl", f"Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration), {json.dumps(ttl)}"
        priority = android.get("priority")
        if priority is not None and (not isinstance(priority, str) or priority.lower() not in ("normal", "high")):
            return "message.android.priority", f"Invalid value at 'message.android.priority' (type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), {json.dumps(priority)}"
    return None


def _device_token(body: bytes) -> str:
    """The target token of a push body, for per-token delays ('' when none)."""
    try:
        document = json.loads(body.decode("utf-8"))
        message = document.get("message", document)
        return str(message.get("token") or message.get("to") or "")
    except (UnicodeDecodeError, ValueError, AttributeError):
        return ""


def _send_json(request, code: int, document: Dict[str, Any]) -> None:
    body = json.dumps(document).encode("utf-8")
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json; charset=UTF-8")
    request.setHeader(b"Content-Length", str(len(body)).encode())
    request.write(body)
    request.finish()


def _send_text(request, code: int, text: str, content_type: str = "text/plain") -> None:
    body = text.encode("utf-8")
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", content_type.encode() + b"; charset=UTF-8")
    request.setHeader(b"Content-Length", str(len(body)).encode())
    request.write(body)
    request.finish()


def _v1_error(request, code: int, status: str, message: str, error_code: Optional[str],
              retry_after: Optional[int] = None, violation: Optional[Tuple[str, str]] = None) -> None:
    error: Dict[str, Any] = {"code": code, "message": message, "status": status}
    details: List[Dict[str, Any]] = []
    if error_code:
        details.append({"@type": FCM_ERROR_TYPE, "errorCode": error_code})
    if violation:
        details.append({"@type": BAD_REQUEST_TYPE,
                        "fieldViolations": [{"field": violation[0], "description": violation[1]}]})
    if details:
        error["details"] = details
    if retry_after is not None:
        request.setHeader(b"Retry-After", str(retry_after).encode())
    _send_json(request, code, {"error": error})


def main(argv: Optional[List[str]] = None) -> int:
    """Run the fake until interrupted, after writing the files a demo configuration needs."""
    parser = fake_arguments("python -m sylkpush.testing.fake_fcm", __doc__.splitlines()[0], "com.example.fake.fcm",
                            "the CA certificate, the service-account file and the applications.ini sample")
    parser.add_argument("--project", default="sylk-fake", help="FCM project id")
    parser.add_argument("--token-lifetime", type=float, default=3600.0, help="access token lifetime, seconds")
    parser.add_argument("--legacy-key", default=None, help="server key accepted by /fcm/send")
    args = parser.parse_args(argv)
    from twisted.internet import reactor

    fake = FakeFCM(reactor, args.dir, host=args.host, port=args.port, delay=args.delay, project=args.project,
                   token_lifetime=args.token_lifetime, legacy_key=args.legacy_key)

    def details() -> List[str]:
        section = fake.applications_ini(args.app_id, app_type=args.app_type)
        legacy = fake.applications_ini(args.app_id + ".legacy", app_type=args.app_type, legacy=True)
        sample = os.path.join(fake.directory, APPLICATIONS_FILE_NAME)
        with open(sample, "w", encoding="utf-8") as stream:
            stream.write(section + "\n" + legacy)
        return [f"  v1 push URL:      {fake.push_url}",
                f"  legacy push URL:  {fake.legacy_url}",
                f"  token endpoint:   {fake.token_uri}",
                f"  CA certificate:   {fake.ca_file}",
                f"  service account:  {fake.service_account_file}",
                f"  applications.ini: {sample}"]

    return serve_fake(reactor, fake, "fake FCM", args, details)


if __name__ == "__main__":
    sys.exit(main())
