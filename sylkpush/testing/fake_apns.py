"""A fake APNs: a real TLS + ALPN h2 server on loopback that checks what Apple checks.

Tests, the benchmark and the ``make run`` demo point an Apple application at
it (see :meth:`FakeAPNs.applications_ini`).  It accepts both kinds of
authentication on the same port, as Apple does: a client certificate signed
by its CA, or a provider JWT (ES256, ``kid``, ``iss``, ``iat`` at most one hour
old) verified with the public half of the ``.p8`` key it wrote.

Everything a test needs to script is a method or attribute: answer a token
with a given status, delay answers, fail or reset the next requests (or fail
all of them), send GOAWAY, drop the connection mid-stream, stop reading and
answering one connection without closing it (a silent peer), advertise a
small stream limit, expire the provider token, stop and start again on the
same port.  Every
accepted notification is recorded in :attr:`FakeAPNs.notifications` and
counted per ``apns-id`` in :attr:`FakeAPNs.deliveries`.

A notification counts as delivered when its 200 answer is written, never
before: one that is dropped by GOAWAY or a lost connection was not delivered,
so a client that retries it does not deliver it twice.

Command line (for demos)::

    python -m sylkpush.testing.fake_apns --port 8443 --dir DIR --delay 0.05
"""

from __future__ import annotations

import json
import logging
import os
import string
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Set, Tuple

import jwt
from h2.errors import ErrorCodes
from h2.exceptions import H2Error
from h2.settings import SettingCodes
from hyperframe.frame import GoAwayFrame
from OpenSSL import crypto
from twisted.internet import ssl
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory
from zope.interface import implementer

from sylkpush.testing.certs import CertificateAuthority, new_ec_key, private_key_pem
from sylkpush.testing.control import fake_arguments, serve_fake
from sylkpush.testing.h2server import H2ServerProtocol

log = logging.getLogger("sylkpush.testing.fake_apns")  # not __main__ when run with -m

PUSH_TYPES = frozenset(("alert", "background", "location", "voip", "complication", "fileprovider",
                        "mdm", "liveactivity", "pushtotalk", "widgets", "controls"))
HEX = frozenset(string.hexdigits)
PAYLOAD_LIMIT = 4096
VOIP_PAYLOAD_LIMIT = 5120
#: Apple refuses provider tokens older than this
TOKEN_MAX_AGE = 3600


def _failure_reason(status: int) -> str:
    return {500: "InternalServerError", 503: "ServiceUnavailable"}.get(status, "InternalServerError")


@dataclass
class Delivery:
    """One notification the fake accepted."""

    token: str
    headers: Dict[str, str]
    payload: Dict[str, Any]
    apns_id: str
    auth: str  # "certificate" or "token"


@dataclass
class _Request:
    stream_id: int
    headers: List[Tuple[str, str]]
    data: List[bytes] = field(default_factory=list)
    timer: Any = None


@implementer(IHandshakeListener)
class FakeAPNsProtocol(H2ServerProtocol):
    """One client connection to the fake."""

    def __init__(self, fake: "FakeAPNs") -> None:
        super().__init__(fake.reactor, fake.max_concurrent_streams)
        self.fake = fake
        self.client_certificate = False
        self.requests: Dict[int, _Request] = {}
        self.last_answered = 0
        self.last_received = 0
        #: after a graceful GOAWAY: answering what it took, then closing
        self.draining = False
        #: reads nothing and answers nothing, and never closes (see go_silent)
        self.silent = False
        self.lost: "Deferred[None]" = Deferred()

    def connectionMade(self) -> None:  # noqa: N802
        self.fake._connections.add(self)
        self.fake.connections_made += 1
        super().connectionMade()

    def handshakeCompleted(self) -> None:  # noqa: N802
        self.client_certificate = self.transport.getPeerCertificate() is not None

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        super().connectionLost(reason)
        for request in self.requests.values():
            if request.timer is not None and request.timer.active():
                request.timer.cancel()
        self.requests.clear()
        self.fake._connections.discard(self)
        self.lost.callback(None)

    # -- H2ServerProtocol hooks -------------------------------------------------

    def open_streams(self) -> int:
        return len(self.requests)

    def reading(self) -> bool:
        return not (self.closing or self.silent)

    def protocol_error(self, error: H2Error) -> None:
        self.fake.protocol_errors.append(str(error))
        log.warning("fake APNs: HTTP/2 error from client: %s", error)

    def request_received(self, stream_id: int, headers: List[Tuple[str, str]]) -> None:
        if self.draining:  # opened after our GOAWAY: never processed
            self.conn.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        self.last_received = max(self.last_received, stream_id)
        self.requests[stream_id] = _Request(stream_id, headers)
        fake = self.fake
        fake.max_open_streams = max(fake.max_open_streams, len(self.requests))
        if fake._drop_next > 0:
            # the connection dies with the request half received
            fake._drop_next -= 1
            fake.dropped += 1
            self.crash()

    def body_received(self, stream_id: int, data: bytes) -> None:
        request = self.requests.get(stream_id)
        if request is not None:
            request.data.append(data)

    def request_complete(self, stream_id: int) -> None:
        request = self.requests.get(stream_id)
        if request is not None:
            self.fake._handle(self, request)

    def stream_reset(self, stream_id: int) -> None:
        self._forget(stream_id)

    # -- used by FakeAPNs -----------------------------------------------------

    def crash(self) -> None:
        """Die with the requests not yet answered.  Answers already counted as
        delivered are flushed first: were they dropped with the connection, a
        client that retried them would be blamed for a duplicate the fake made."""
        self.flush()
        self.closing = True
        if self.silent:  # it reads nothing: a TLS close would wait for its peer forever
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    def answer(self, request: _Request, status: int, apns_id: str, body: Optional[dict]) -> bool:
        """Write the answer of ``request``; False when the stream or connection is gone."""
        if self.closing or self.silent or self.requests.pop(request.stream_id, None) is None:
            return False
        headers = [("apns-id", apns_id)]
        data = b""
        if body is not None:
            data = json.dumps(body).encode()
            headers.append(("content-type", "application/json"))
        if not self.respond(request.stream_id, status, headers, data):
            return False
        self.last_answered = max(self.last_answered, request.stream_id)
        if self.draining and not self.requests:
            self.flush()
            self.closing = True
            self.transport.loseConnection()
        return True

    def go_silent(self) -> None:
        """Stop reading and answering, without FIN or RST: what a client sees
        when a NAT or firewall on the way forgets the connection, or the
        server's host dies.  Requests not answered yet are never delivered."""
        if self.closing or self.silent:
            return
        self.flush()  # answers counted as delivered go out first
        self.silent = True
        for request in self.requests.values():
            if request.timer is not None and request.timer.active():
                request.timer.cancel()
        self.requests.clear()
        self.transport.pauseProducing()  # the TCP transport under TLS: the kernel buffers fill up

    def goaway_gracefully(self) -> None:
        """GOAWAY naming the last stream received, as a server that shuts
        down does: those streams are still answered, then it closes."""
        if self.closing or self.draining:
            return
        self.flush()
        frame = GoAwayFrame(0)
        frame.last_stream_id = self.last_received
        frame.error_code = ErrorCodes.NO_ERROR
        # written by hand: h2 would refuse to answer anything after its own GOAWAY
        self.transport.write(frame.serialize())
        self.draining = True
        if not self.requests:
            self.closing = True
            self.transport.loseConnection()

    def reset(self, request: _Request) -> None:
        if self.requests.pop(request.stream_id, None) is not None and not self.closing and not self.silent:
            self.conn.reset_stream(request.stream_id, ErrorCodes.INTERNAL_ERROR)
            self.flush_soon()

    def goaway(self, reason: str = "") -> None:
        """GOAWAY naming the last answered stream; unanswered ones are dropped undelivered."""
        if self.closing:
            return
        for request in self.requests.values():
            if request.timer is not None and request.timer.active():
                request.timer.cancel()
        self.requests.clear()
        extra = json.dumps({"reason": reason}).encode() if reason else None
        self.conn.close_connection(error_code=ErrorCodes.NO_ERROR, additional_data=extra,
                                   last_stream_id=self.last_answered)
        self.flush()
        self.closing = True
        self.transport.loseConnection()

    def set_max_concurrent_streams(self, value: int) -> None:
        if not self.closing:
            self.conn.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: value})
            self.flush()

    def _forget(self, stream_id: int) -> None:
        request = self.requests.pop(stream_id, None)
        if request is not None and request.timer is not None and request.timer.active():
            request.timer.cancel()


class _FakeFactory(Factory):
    noisy = False  # no "Starting factory" line at each (re)start

    def __init__(self, fake: "FakeAPNs") -> None:
        self.fake = fake

    def buildProtocol(self, addr: Any) -> FakeAPNsProtocol:  # noqa: N802
        return FakeAPNsProtocol(self.fake)


class FakeAPNs:
    """The fake APNs server.  ``start()`` listens and returns ``Deferred[port]``.

    ``directory``: where the CA, client certificate and ``.p8`` key are written.  Files: ``ca.crt`` (trust it with
    ``tls_ca_file``), ``client.crt`` and ``client.key`` (certificate auth),
    ``AuthKey_<key_id>.p8`` (token auth).
    """

    def __init__(self, reactor: Any, directory: str, host: str = "127.0.0.1", port: int = 0,
                 delay: float = 0.0, max_concurrent_streams: int = 1000,
                 key_id: str = "FAKEKEY123", team_id: str = "FAKETEAM12",
                 topics: Tuple[str, ...] = (), require_certificate: bool = False) -> None:
        self.reactor = reactor
        self.host = host
        self.port = port
        self.delay = delay
        self.max_concurrent_streams = max_concurrent_streams
        self.key_id = key_id
        self.team_id = team_id
        #: when not empty, apns-topic must be one of these (else 400 BadTopic)
        self.topics = tuple(topics)
        self.directory = os.path.abspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self.ca = CertificateAuthority("Fake APNs CA")
        server_names = ("localhost", "127.0.0.1", "::1") if host in ("127.0.0.1", "::1", "localhost") \
            else (host, "localhost", "127.0.0.1", "::1")
        self._server = self.ca.server(server_names)
        self.ca_file = self.ca.write(self.directory, "ca")
        self.client_cert_file, self.client_key_file = self.ca.client(
            "Apple Push Services: fake", uid="com.example.fake").write(self.directory, "client")
        signing_key = new_ec_key()
        self.auth_key_file = os.path.join(self.directory, f"AuthKey_{key_id}.p8")
        with open(self.auth_key_file, "wb") as stream:
            stream.write(private_key_pem(signing_key))
        self._public_key = signing_key.public_key()
        self._tls = self._server_options(require_certificate)
        #: while True, (re)starts present a certificate from another CA
        self.wrong_certificate = False
        self._listening: Any = None
        self._connections: Set[FakeAPNsProtocol] = set()
        # what was received
        self.notifications: List[Delivery] = []
        self.deliveries: Counter = Counter()
        self.answers: Counter = Counter()
        self.requests_received = 0
        #: the apns-id of each request received ("" when it had none)
        self.apns_ids_received: List[str] = []
        self.connections_made = 0
        self.max_open_streams = 0
        self.dropped = 0
        self.protocol_errors: List[str] = []
        self.tokens_seen: Set[str] = set()
        # scripts
        self._token_answers: Dict[str, Tuple[int, str]] = {}
        self._fail_next: List[Tuple[int, str]] = []
        #: (status, reason) for every valid request, or None
        self._fail_all: Optional[Tuple[int, str]] = None
        self.silenced = 0
        self._reset_next = 0
        self._drop_next = 0
        self._goaway_after: Optional[int] = None
        self._good_jwts: Dict[str, int] = {}
        self._expired_jwts: Set[str] = set()

    # -- life cycle -------------------------------------------------------------

    def _server_options(self, require_certificate: bool) -> Any:
        server = ssl.PrivateCertificate.loadPEM(self._server.combined_pem)
        ca = crypto.load_certificate(crypto.FILETYPE_PEM, self.ca.cert_pem)
        return ssl.CertificateOptions(
            privateKey=server.privateKey.original, certificate=server.original,
            verify=True, caCerts=[ca], requireCertificate=require_certificate,
            acceptableProtocols=[b"h2"], raiseMinimumTo=ssl.TLSVersion.TLSv1_2)

    def start(self) -> "Deferred[int]":
        """Listen (again, on the same port after the first start)."""
        if self._listening is None:
            tls = self._impostor_options() if self.wrong_certificate else self._tls
            self._listening = self.reactor.listenSSL(self.port, _FakeFactory(self), tls,
                                                     interface=self.host)
            self.port = self._listening.getHost().port
        return succeed(self.port)

    def stop(self) -> "Deferred[None]":
        """Stop listening and drop every connection (what a crash looks like)."""
        waits = [connection.lost for connection in list(self._connections)]
        for connection in list(self._connections):
            connection.crash()
        if self._listening is not None:
            waits.append(self._listening.stopListening())
            self._listening = None
        return DeferredList(waits).addCallback(lambda _: None)

    def restart(self) -> "Deferred[int]":
        """Crash and come back on the same port (what a restarted APNs node looks like)."""
        return self.stop().addCallback(lambda _: self.start())

    def present_wrong_certificate(self, wrong: bool = True) -> "Deferred[int]":
        """Restart presenting a certificate from another CA (``wrong``) or the right one."""
        self.wrong_certificate = wrong
        return self.restart()

    def _impostor_options(self) -> Any:
        impostor = CertificateAuthority("Impostor CA").server(("localhost", "127.0.0.1", "::1"))
        server = ssl.PrivateCertificate.loadPEM(impostor.combined_pem)
        return ssl.CertificateOptions(privateKey=server.privateKey.original, certificate=server.original,
                                      acceptableProtocols=[b"h2"], raiseMinimumTo=ssl.TLSVersion.TLSv1_2)

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    # -- scripting ----------------------------------------------------------

    def answer_token(self, token: str, status: int, reason: str) -> None:
        """Answer every push to ``token`` with ``status`` and ``reason``."""
        self._token_answers[token.lower()] = (status, reason)

    def fail_next(self, count: int, status: int = 500) -> None:
        """Answer the next ``count`` valid requests with 500 or 503."""
        self._fail_next.extend([(status, _failure_reason(status))] * count)

    def fail_all(self, status: Optional[int] = 500) -> None:
        """Answer every valid request with ``status`` (500 or 503) from now on; None: stop."""
        self._fail_all = (status, _failure_reason(status)) if status else None

    def silence_one(self) -> bool:
        """One connection (the one with most requests waiting) stops reading
        and answering, without closing; False when none is open."""
        open_ones = [c for c in self._connections if not c.closing and not c.silent]
        if not open_ones:
            return False
        max(open_ones, key=lambda c: len(c.requests)).go_silent()
        self.silenced += 1
        return True

    def reset_next(self, count: int) -> None:
        """Reset the streams of the next ``count`` requests (RST_STREAM INTERNAL_ERROR)."""
        self._reset_next += count

    def drop_next(self, count: int = 1) -> None:
        """Abort the connection when each of the next ``count`` requests arrives."""
        self._drop_next += count

    def goaway_after(self, count: int) -> None:
        """Send GOAWAY right after answering the ``count``-th next request."""
        self._goaway_after = count

    def goaway_gracefully(self) -> None:
        """Graceful GOAWAY on every connection: what was received is still answered."""
        for connection in list(self._connections):
            connection.goaway_gracefully()

    def goaway_now(self, reason: str = "") -> None:
        """GOAWAY on every connection now; unanswered requests are not delivered."""
        for connection in list(self._connections):
            connection.goaway(reason)

    def set_max_concurrent_streams(self, value: int) -> None:
        """Advertise a new stream limit, to open connections and to new ones."""
        self.max_concurrent_streams = value
        for connection in list(self._connections):
            connection.set_max_concurrent_streams(value)

    def expire_provider_tokens(self) -> None:
        """Every provider token seen so far is now answered ExpiredProviderToken."""
        self._expired_jwts.update(self._good_jwts)
        self._good_jwts.clear()

    def delivered(self, apns_id: str) -> int:
        return self.deliveries.get(apns_id, 0)

    # -- writing settings for a client ----------------------------------------

    def applications_ini(self, app_id: str = "com.example.fake", app_type: str = "sylk",
                         auth: str = "certificate", section: Optional[str] = None,
                         voip: bool = False, apns_id: bool = True) -> str:
        """An applications.ini section that points an Apple app at this fake
        (``apns_id``: with our own apns-id, by which the fake counts deliveries)."""
        lines = [f"[{section or app_id}]", f"app_id = {app_id}", f"app_type = {app_type}",
                 "app_platform = apple", f"apple_push_url = {self.authority}",
                 f"tls_ca_file = {self.ca_file}", f"voip = {'true' if voip else 'false'}"]
        if apns_id:
            lines.append("apple_apns_id = true")
        if auth == "token":
            lines += [f"apple_key = {self.auth_key_file}", f"key_id = {self.key_id}",
                      f"team_id = {self.team_id}"]
        else:
            lines += [f"apple_certificate = {self.client_cert_file}",
                      f"apple_key = {self.client_key_file}"]
        return "\n".join(lines) + "\n"

    def app_config(self, app_id: str = "com.example.fake", auth: str = "certificate",
                   app_type: str = "sylk", apns_id: bool = True) -> Any:
        """An :class:`sylkpush.config.AppConfig` for this fake (no config files needed)."""
        from sylkpush.config import AppConfig
        common: Dict[str, Any] = dict(section=app_id, app_id=app_id, app_type=app_type, platform="apple",
                      apple_host=self.host, apple_port=self.port, tls_ca_file=self.ca_file,
                      apple_apns_id=apns_id)
        if auth == "token":
            return AppConfig(apple_key=self.auth_key_file, key_id=self.key_id, team_id=self.team_id,
                             **common)
        return AppConfig(apple_certificate=self.client_cert_file, apple_key=self.client_key_file,
                         **common)

    # -- handling a request ---------------------------------------------------

    def _handle(self, connection: FakeAPNsProtocol, request: _Request) -> None:
        self.requests_received += 1
        headers = dict(request.headers)
        self.apns_ids_received.append(headers.get("apns-id", ""))
        apns_id = headers.get("apns-id") or str(uuid.uuid4())
        if self._reset_next > 0:
            self._reset_next -= 1
            connection.reset(request)
            return
        status, reason, delivery = self._check(connection, request, headers)
        if status == 200 and self._fail_next:
            status, reason = self._fail_next.pop(0)
            delivery = None
        elif status == 200 and self._fail_all is not None:
            status, reason = self._fail_all
            delivery = None
        goaway = False
        if self._goaway_after is not None:
            self._goaway_after -= 1
            if self._goaway_after <= 0:
                self._goaway_after = None
                goaway = True
        if self.delay > 0:
            request.timer = self.reactor.callLater(self.delay, self._answer, connection, request,
                                                   status, reason, apns_id, delivery, goaway)
        else:
            self._answer(connection, request, status, reason, apns_id, delivery, goaway)

    def _answer(self, connection: FakeAPNsProtocol, request: _Request, status: int, reason: str,
                apns_id: str, delivery: Optional[Delivery], goaway: bool) -> None:
        request.timer = None
        body: Optional[dict] = None
        if status != 200:
            body = {"reason": reason}
            if status == 410:
                body["timestamp"] = int(time.time() * 1000)
        if connection.answer(request, status, apns_id, body):
            self.answers[status] += 1
            if delivery is not None:
                delivery.apns_id = apns_id
                self.notifications.append(delivery)
                self.deliveries[apns_id] += 1
        if goaway:
            connection.goaway()

    def _check(self, connection: FakeAPNsProtocol, request: _Request,
               headers: Dict[str, str]) -> Tuple[int, str, Optional[Delivery]]:
        """Apple's checks, in Apple's order; (status, reason, delivery)."""
        if headers.get(":method") != "POST":
            return 405, "MethodNotAllowed", None
        path = headers.get(":path", "")
        if not path.startswith("/3/device/"):
            return 404, "BadPath", None
        token = path[len("/3/device/"):]
        if not token:
            return 400, "MissingDeviceToken", None
        if "/" in token:
            return 404, "BadPath", None
        if not set(token) <= HEX:
            return 400, "BadDeviceToken", None
        names = [name for name, _ in request.headers]
        if len(names) != len(set(names)):
            return 400, "DuplicateHeaders", None
        auth = "certificate"
        if not connection.client_certificate:
            auth = "token"
            problem = self._check_provider_token(headers.get("authorization", ""))
            if problem:
                return 403, problem, None
        apns_id = headers.get("apns-id")
        if apns_id is not None:
            try:
                uuid.UUID(apns_id)
            except ValueError:
                return 400, "BadMessageId", None
        topic = headers.get("apns-topic")
        if not topic:
            return 400, "MissingTopic", None
        if self.topics and topic not in self.topics:
            return 400, "BadTopic", None
        push_type = headers.get("apns-push-type")
        if push_type is not None and push_type not in PUSH_TYPES:
            return 400, "InvalidPushType", None
        if headers.get("apns-priority", "10") not in ("5", "10"):
            return 400, "BadPriority", None
        expiration = headers.get("apns-expiration", "0")
        if not expiration.isdigit():
            return 400, "BadExpirationDate", None
        if len(headers.get("apns-collapse-id", "").encode()) > 64:
            return 400, "BadCollapseId", None
        raw = b"".join(request.data)
        if not raw:
            return 400, "PayloadEmpty", None
        limit = VOIP_PAYLOAD_LIMIT if push_type == "voip" else PAYLOAD_LIMIT
        if len(raw) > limit:
            return 413, "PayloadTooLarge", None
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            # Apple documents no reason for this; the fake names it plainly
            return 400, "BadPayload", None
        scripted = self._token_answers.get(token.lower())
        if scripted is not None:
            return scripted[0], scripted[1], None
        delivery = Delivery(token, {k: v for k, v in headers.items() if not k.startswith(":")},
                            payload, apns_id or "", auth)
        return 200, "", delivery

    def _check_provider_token(self, authorization: str) -> str:
        """The 403 reason for ``authorization``, or "" when it is good."""
        if not authorization:
            return "MissingProviderToken"
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return "InvalidProviderToken"
        self.tokens_seen.add(token)
        if token in self._expired_jwts:
            return "ExpiredProviderToken"
        iat = self._good_jwts.get(token)
        if iat is None:
            try:
                header = jwt.get_unverified_header(token)
                claims = jwt.decode(token, self._public_key, algorithms=["ES256"],
                                    options={"verify_iat": False, "verify_exp": False,
                                             "verify_nbf": False, "verify_aud": False})
            except jwt.PyJWTError:
                return "InvalidProviderToken"
            if header.get("kid") != self.key_id or claims.get("iss") != self.team_id:
                return "InvalidProviderToken"
            iat = claims.get("iat")
            if not isinstance(iat, int):
                return "InvalidProviderToken"
            self._good_jwts[token] = iat
        now = self.reactor.seconds()
        if now - iat > TOKEN_MAX_AGE:
            return "ExpiredProviderToken"
        if iat > now + 60:
            return "InvalidProviderToken"
        return ""


def main(argv: Optional[List[str]] = None) -> int:
    """Run the fake until interrupted, after writing the files a demo configuration needs."""
    parser = fake_arguments("python -m sylkpush.testing.fake_apns", "A fake APNs server for tests and demos (loopback).",
                            "com.example.fake", "ca.crt, client.crt, client.key, AuthKey_<key id>.p8 and fake-apns.ini")
    parser.add_argument("--max-streams", type=int, default=1000,
                        help="SETTINGS_MAX_CONCURRENT_STREAMS advertised")
    parser.add_argument("--auth", choices=("certificate", "token"), default="certificate",
                        help="authentication fake-apns.ini uses (the server accepts both)")
    args = parser.parse_args(argv)
    from twisted.internet import reactor

    fake = FakeAPNs(reactor, args.dir, host=args.host, port=args.port, delay=args.delay,
                    max_concurrent_streams=args.max_streams)

    def details() -> List[str]:
        section = fake.applications_ini(args.app_id, app_type=args.app_type, auth=args.auth)
        ini = os.path.join(fake.directory, "fake-apns.ini")
        with open(ini, "w", encoding="utf-8") as stream:
            stream.write(section)
        return [f"applications.ini section written to {ini}:", section]

    return serve_fake(reactor, fake, "fake APNs", args, details)


if __name__ == "__main__":
    sys.exit(main())
