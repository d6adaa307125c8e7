"""A pool of long-lived HTTP/2 connections as the transport of the delivery engine.

:class:`H2PoolClient` is what the APNs and FCM clients share: it opens
``<platform>_connections`` connections to one host at start and keeps them
open, each an :class:`sylkpush.pns.http2.H2ClientProtocol` held by a
:class:`_Slot` through its lives.  The host name is resolved again at each
connect and the connections are spread over the addresses; TLS and the first
SETTINGS must come within :attr:`H2PoolClient.handshake_timeout`; a
connection that served pushes and is closed or says GOAWAY is replaced at
once, others after a jittered exponential backoff that only an answered push
resets.  Pushes go round the ready connections.

A subclass says what a push's request is (:meth:`H2PoolClient.request`) and
what an answer means (:meth:`H2PoolClient.answered`); how a stream failed is
mapped to the engine's outcomes here, once.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any, Dict, FrozenSet, List, Optional, Set, Tuple, TypeVar

from twisted.internet.address import IPv6Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IResolutionReceiver
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure
from zope.interface import implementer

from sylkpush.config import ConfigError
from sylkpush.pns.base import OutgoingPush
from sylkpush.pns.engine import DeliveryClient
from sylkpush.pns.http2 import REFUSED, RESET, UNPROCESSED, H2ClientProtocol
from sylkpush.pns.pending import DEFAULT_QUEUE_LIMIT, IN_FLIGHT, PendingPush, backoff_delay

log = logging.getLogger(__name__)

#: seconds before a waiting push's deadline when a connection attempt is made
#: whatever the backoff says (time to connect, handshake and be answered)
LAST_CHANCE = 2.0
#: HTTP/2 connections per application unless <platform>_connections says otherwise
DEFAULT_CONNECTIONS = 2
MAX_CONNECTIONS = 32

#: what a push's payload is once its requests' body holds it (see H2PoolClient.payload_body)
_DROPPED: Dict[str, Any] = {}

#: a request: its HTTP/2 headers (pseudo-headers first) and its body
Request = Tuple[List[Tuple[str, str]], bytes]


def authority(host: str, port: int) -> str:
    """``host[:port]`` as an HTTP/2 :authority (IPv6 in brackets, no port 443)."""
    name = f"[{host}]" if ":" in host else host
    return name if port == 443 else f"{name}:{port}"


def pool_size_of(app: Any, option: str = "apple_connections") -> int:
    """The pool size the application's ``option`` asks for (ConfigError when unusable)."""
    text = app.option(option, "").strip()
    if not text:
        return DEFAULT_CONNECTIONS
    try:
        size = int(text)
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_CONNECTIONS:
        raise ConfigError(f"{option} must be a whole number from 1 to {MAX_CONNECTIONS}")
    return size


def _where(address: Any) -> str:
    if address is None:
        return "?"
    return f"[{address.host}]:{address.port}" if ":" in address.host else f"{address.host}:{address.port}"


class H2Pending(PendingPush):
    """A push that is also the handler of its attempt's stream, with its
    request body (the push's payload as JSON, see :meth:`H2PoolClient.payload_body`)."""

    def __init__(self, push: OutgoingPush, owner: Any, url: str, body: bytes) -> None:
        super().__init__(push, owner, url)
        self.body = body

    #: the pool slot whose connection carries the current attempt (set
    #: when it is written: before that no stream can answer)
    slot: "_Slot"
    #: the connection and stream id of the current attempt
    protocol: Optional[H2ClientProtocol] = None
    stream_id = 0

    def response(self, status: int, headers: Dict[str, str], body: bytes) -> None:
        self.owner.stream_answered(self, status, headers, body)

    def failed(self, kind: str, reason: str) -> None:
        self.owner.stream_failed(self, kind, reason)


#: the kind of H2Pending a pool client makes
H2P = TypeVar("H2P", bound=H2Pending)


class _Slot:
    """One connection of the pool through its lives: connecting, ready,
    waiting to reconnect.  It is the listener of its H2ClientProtocol."""

    def __init__(self, client: "H2PoolClient", index: int) -> None:
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


class H2PoolClient(DeliveryClient[H2P]):
    """Sends the pushes of one application over a pool of HTTP/2 connections.

    ``H2PoolClient(app, reactor, host, port, tls, pool_size, clock=None,
    queue_limit=10000)``: ``tls`` is the connection creator (ALPN h2).  The
    timing attributes below may be changed before :meth:`start`.
    """

    reconnect_initial = 1.0
    reconnect_max = 60.0
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

    def __init__(self, app: Any, reactor: Any, host: str, port: int, tls: Any, pool_size: int,
                 clock: Any = None, queue_limit: int = DEFAULT_QUEUE_LIMIT) -> None:
        super().__init__(app, reactor, clock=clock, queue_limit=queue_limit)
        self.tls = tls
        self.host = host
        self.port = port
        self.authority = authority(host, port)
        self.base_url = f"https://{self.authority}"
        self.pool_size = pool_size
        self.slots = [_Slot(self, index) for index in range(pool_size)]
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
        #: renderer header name -> its HTTP/2 (lower case) form
        self._header_names: Dict[Any, str] = {}

    # -- what a subclass provides ------------------------------------------------

    def request(self, pending: H2P) -> Request:
        """The headers and body of ``pending``'s attempt (credentials included)."""
        raise NotImplementedError

    def answered(self, pending: H2P, status: int, headers: Dict[str, str], body: bytes) -> None:
        """The service answered ``pending``'s attempt: report the outcome to the engine."""
        raise NotImplementedError

    def payload_body(self, push: OutgoingPush, encoder: json.JSONEncoder) -> bytes:
        """``push``'s payload as the JSON body of its requests.  Unless remote
        logging will read it, the payload is dropped then (``push.payload``
        is emptied): a push held during an outage costs less.
        :meth:`take_waiting` gives it back to the pushes handed to another
        client."""
        body = encoder.encode(push.payload).encode("utf-8")
        if not self.app.log_remote_urls:
            push.payload = _DROPPED
        return body

    def take_waiting(self) -> List[H2P]:
        taken = super().take_waiting()
        for pending in taken:
            if pending.push.payload is _DROPPED:
                pending.push.payload = json.loads(pending.body)
        return taken

    def rendered_headers(self, push: OutgoingPush, leave_out: FrozenSet[str] = frozenset()) -> List[Tuple[str, str]]:
        """The renderer's headers of ``push`` in HTTP/2 form (lower-case
        names, text values), without those named in ``leave_out``; made for
        each try rather than held while the push waits."""
        names = self._header_names
        headers = []
        for name, value in push.headers.items():
            lowered = names.get(name)
            if lowered is None:
                if len(names) > 256:  # a renderer that makes up names: do not keep them all
                    names.clear()
                lowered = names[name] = str(name).lower()
            if lowered not in leave_out:
                headers.append((lowered, value if type(value) is str else str(value)))
        return headers

    # -- the transport of the engine -------------------------------------------

    @property
    def peer(self) -> str:
        return self.authority

    def push_url(self, push: OutgoingPush) -> str:
        return self.base_url

    def open(self) -> None:
        for slot in self.slots:
            self._connect(slot)

    def capacity(self) -> int:
        room = 0
        for protocol in self.ready:
            room += protocol.available_streams()
        return room

    def attempt(self, pending: H2P) -> None:
        protocol = self._free_connection()
        if protocol is None:
            self.not_processed(pending, f"no connection to {self.authority} has a free stream")
            return
        self.send_on(protocol, pending, *self.request(pending))

    def send_on(self, protocol: H2ClientProtocol, pending: H2P, headers: List[Tuple[str, str]],
                body: bytes) -> None:
        """Write ``pending``'s attempt on ``protocol`` (one with a free stream)."""
        pending.slot = protocol.listener
        pending.protocol = protocol
        pending.written = True
        pending.stream_id = protocol.request(headers, body, pending)

    def _free_connection(self) -> Optional[H2ClientProtocol]:
        """The next ready connection round the pool with a free stream."""
        ready = self.ready
        count = len(ready)
        for step in range(count):
            protocol = ready[(self._next + step) % count]
            if protocol.available_streams() > 0:
                self._next = (self._next + step + 1) % count
                return protocol
        return None

    def flush(self) -> None:
        for protocol in self.ready:
            protocol.flush()

    def abandon_attempt(self, pending: H2P) -> None:
        """The engine gave up on the attempt: its stream is reset and forgotten."""
        protocol = pending.protocol
        if protocol is not None and pending.stream_id:
            protocol.cancel(pending.stream_id)
            protocol.flush()

    def queued(self, pending: H2P) -> None:
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

    def waiting_reason(self, pending: H2P) -> str:
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
                      connections=len(self.ready), pool_size=self.pool_size)
        if state != "connected":
            result["last_error"] = self.connection_failure or "not connected yet"
        return result

    # -- outcomes of a stream ------------------------------------------------------

    def stream_answered(self, pending: H2P, status: int, headers: Dict[str, str], body: bytes) -> None:
        pending.slot.failures = 0  # an answer: this connection works
        pending.protocol = None
        self.answered(pending, status, headers, body)

    def stream_failed(self, pending: H2P, kind: str, reason: str) -> None:
        pending.protocol = None
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
        self._never_ready(slot, f"connection to {where} failed: {message}")

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
            protocol.close(f"the {self.name} client stopped")
            return
        self.ready.append(protocol)
        if slot.address is not None:
            self._address_failures.pop((slot.address.host, slot.address.port), None)
        self.connect_succeeded()
        log.info("%s connection %d of %s to %s ready (up to %d streams)", self.name, slot.index + 1,
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
                        "%s connection %d of %s to %s closed: %s", self.name, slot.index + 1, self.app.app_id,
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
        log.warning("%s client for %s: %s", self.name, self.app.app_id, reason)
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
            log.info("%s client for %s reconnects to %s in %.2f s", self.name, self.app.app_id, self.authority,
                     delay)
        self.reconnects += 1
        slot.reconnect_timer = self.reactor.callLater(delay, self._connect, slot)

    def _before_deadlines(self, delay: float, deadline: Optional[float] = None) -> float:
        """``delay``, shortened so the pushes waiting get one more connection
        attempt before their deadline: a 60 s backoff must not outlast a
        call's 64 s budget while the service may be back already."""
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
            protocol.close(f"the {self.name} client stopped")
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
            protocol.abort(f"still open {self.close_grace:g} s after the {self.name} client stopped")

    def _check_closed(self) -> None:
        if self._all_closed is None or self._all_closed.called or self._open_protocols():
            return
        if self._close_timer is not None and self._close_timer.active():
            self._close_timer.cancel()
        self._close_timer = None
        self._all_closed.callback(None)
