"""The API's connections: who may connect, how many, and how long a request may take.

- An address outside ``allowed_hosts`` is answered 403 as soon as its
  connection is accepted, before any of its request is read: a denied host
  cannot hold a connection by sending slowly.
- At most ``max_connections`` are open.  When a caller arrives at the limit,
  room is made by closing, in this order: connections already refused (still
  open for their caller to read the answer), idle ones (no request under way;
  the longest idle first), then the one that has been sending its request the
  longest.  A connection whose request is being answered is never closed for
  room; when every one is, the newcomer is answered 503.
- A connection with no request under way is closed after
  :data:`IDLE_TIMEOUT` seconds.
- A request must arrive whole, headers and body, within ``request_timeout``
  seconds of its first byte (an idle timer restarting at every byte would let
  a caller sending a byte at a time hold a connection for ever).  One timer,
  set for the first of these expiries, enforces both for all.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Protocol, ServerFactory

from sylkpush.http11 import HttpConnection, Site, answer_bytes
from sylkpush.transports import IStreamTransport

log = logging.getLogger(__name__)

#: seconds a refused or closed connection stays open for its caller to read the answer
LINGER = 2.0
#: descriptors left for everything but API connections (push services, logs, files)
RESERVED_DESCRIPTORS = 256
#: seconds between two warnings that the connection limit was reached
WARN_INTERVAL = 60.0
#: seconds a connection may stay open with no request under way
IDLE_TIMEOUT = 60.0


def _expired(table: Dict[Any, float], limit: float, now: float) -> List[Any]:
    """The keys of ``table`` (oldest first) whose time is ``limit`` seconds before ``now`` or more."""
    expired = []
    for key, since in table.items():
        if since + limit > now:
            break
        expired.append(key)
    return expired


def address_allowed(host: str, networks: Sequence[Any]) -> bool:
    """True when ``host`` (an address as text) is in one of ``networks``."""
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def close_all(protocols: Iterable[Any], waiters: "List[Deferred[None]]") -> "Deferred[None]":
    """Close the connection of each of ``protocols`` once its pending output
    is written; fires when :func:`all_closed` is called with ``waiters``
    (when the last is gone), at once when there are none."""
    if not protocols:
        return succeed(None)
    waiter: "Deferred[None]" = Deferred()
    waiters.append(waiter)
    for protocol in list(protocols):
        protocol.transport.loseConnection()
    return waiter


def all_closed(waiters: "List[Deferred[None]]") -> None:
    """Fire the Deferreds :func:`close_all` gave (the last connection is gone)."""
    fired, waiters[:] = list(waiters), []
    for waiter in fired:
        waiter.callback(None)


class RefusedConnection(Protocol):
    """Writes its answer at once, drops whatever the caller sends, and closes
    when the caller does or after :data:`LINGER` seconds (closing at once,
    with the request unread, would reset the connection and could lose the
    answer on its way)."""

    transport: IStreamTransport

    def __init__(self, connections: "ApiConnections", answer: bytes) -> None:
        self.connections = connections
        self.answer = answer
        self._timer: Any = None

    def connectionMade(self) -> None:  # noqa: N802 (Twisted's names)
        self.connections.refused[self] = None
        self.transport.write(self.answer)
        self._timer = self.connections.reactor.callLater(LINGER, self.close)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        pass

    def close(self) -> None:
        self.connections.refused.pop(self, None)
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        self.connections.refused.pop(self, None)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()


class ApiConnections(ServerFactory):
    """The API's factory: the access list, the connection limit and the
    request deadline, applied to connections before HTTP is parsed; it
    knows its open connections, so a shutdown can close them after their
    last answer is flushed (the reactor's own shutdown drops whatever is
    still in the write buffers)."""

    noisy = False

    def __init__(self, site: Site, reactor: Any, allowed: Sequence[Any] = (),
                 limit: int = 4096, request_timeout: float = 10.0,
                 refused: Callable[[int], None] = lambda code: None) -> None:
        self.site = site
        self.reactor = reactor
        #: the open connections (HttpConnection, see its protocol with us)
        self.protocols: Dict[HttpConnection, None] = {}
        self._closed: "List[Deferred[None]]" = []
        self.allowed = tuple(allowed)
        self.limit = limit
        self.request_timeout = request_timeout
        self.on_refused = refused
        #: answered and closing on their own, oldest first
        self.refused: Dict[RefusedConnection, None] = {}
        # each open connection is in at most one of these, oldest first
        #: connections with no request under way -> since when
        self._idle: Dict[HttpConnection, float] = {}
        #: connections receiving a request -> when it began, oldest first
        self._receiving: Dict[HttpConnection, float] = {}
        self._closing: Set[HttpConnection] = set()
        self._aborts: Dict[HttpConnection, Any] = {}
        #: fires at the first request deadline or idle expiry
        self._timer: Any = None
        self._stopped = False
        self._made_room = 0
        self._warned_at: Optional[float] = None

    # -- accepting ------------------------------------------------------------------

    def buildProtocol(self, addr: Any) -> Any:  # noqa: N802 (Twisted's names)
        host = getattr(addr, "host", str(addr))
        if self.allowed and not address_allowed(host, self.allowed):
            log.info("refused connection from %s: 403 not in allowed_hosts", host)
            self.on_refused(403)
            return RefusedConnection(self, answer_bytes(403, "access denied by access list"))
        if self.open_connections() >= self.limit and not self._make_room():
            log.info("refused connection from %s: 503 all %d connections are answering requests", host, self.limit)
            self.on_refused(503)
            return RefusedConnection(self, answer_bytes(503, "too many connections: try again later"))
        return HttpConnection(self, self.site)

    def open_connections(self) -> int:
        """Connections that count toward the limit (those being closed do not)."""
        return len(self.protocols) - len(self._closing) + len(self.refused)

    def _make_room(self) -> bool:
        if self.refused:
            next(iter(self.refused)).close()
        elif self._idle:
            self.close(next(iter(self._idle)))
        elif self._receiving:
            self.close(next(iter(self._receiving)), answer_bytes(503, "closed to make room for other callers"))
        else:
            return False
        self._made_room += 1
        now = self.reactor.seconds()
        if self._warned_at is None or now - self._warned_at >= WARN_INTERVAL:
            log.warning("%d API connections open, the limit (max_connections): %d closed to make room "
                        "since the last warning, idle ones first", self.limit, self._made_room)
            self._warned_at = now
            self._made_room = 0
        return True

    def close(self, connection: HttpConnection, answer: bytes = b"") -> None:
        """Close ``connection`` after ``answer``; it no longer counts toward the limit."""
        self._idle.pop(connection, None)
        self._receiving.pop(connection, None)
        self._closing.add(connection)
        connection.closed = True
        # a caller that reads nothing keeps its connection past loseConnection
        self._aborts[connection] = self.reactor.callLater(LINGER, connection.transport.abortConnection)
        if answer:
            connection.transport.write(answer)
        connection.transport.loseConnection()

    # -- the state of each connection ---------------------------------------------------

    def register(self, connection: HttpConnection) -> None:
        self.protocols[connection] = None
        self._idle[connection] = now = self.reactor.seconds()
        self._watch(now + IDLE_TIMEOUT)

    def unregister(self, connection: HttpConnection) -> None:
        self._idle.pop(connection, None)
        self._receiving.pop(connection, None)
        self._closing.discard(connection)
        abort = self._aborts.pop(connection, None)
        if abort is not None and abort.active():
            abort.cancel()
        self.protocols.pop(connection, None)
        if not self.protocols:
            all_closed(self._closed)

    def receiving(self, connection: HttpConnection) -> None:
        if connection.closed:
            return
        self._idle.pop(connection, None)
        connection.receiving_since = self._receiving[connection] = now = self.reactor.seconds()
        self._watch(now + self.request_timeout)

    def answering(self, connection: HttpConnection) -> None:
        connection.receiving_since = None
        connection.answering = True
        self._receiving.pop(connection, None)

    def idle(self, connection: HttpConnection) -> None:
        connection.answering = False
        if connection.closed or connection.receiving_since is not None:
            return
        self._idle.pop(connection, None)  # to the end: the longest idle stay first
        self._idle[connection] = now = self.reactor.seconds()
        self._watch(now + IDLE_TIMEOUT)

    def _watch(self, expiry: float) -> None:
        """Have the timer fire by ``expiry``: one timer, at the first expiry of
        either kind, serves every connection (none is set per request)."""
        if self._stopped:
            return
        timer = self._timer
        if timer is None:
            self._timer = self.reactor.callLater(max(0.0, expiry - self.reactor.seconds()), self._expire)
        elif timer.getTime() > expiry:
            timer.reset(max(0.0, expiry - self.reactor.seconds()))

    def _expire(self) -> None:
        """Close connections whose request is late (408) and those idle too long."""
        self._timer = None
        now = self.reactor.seconds()
        for connection in _expired(self._receiving, self.request_timeout, now):
            log.info("closed connection from %s: 408 its request did not arrive whole within %g s",
                     connection.transport.getPeer().host, self.request_timeout)
            self.on_refused(408)
            self.close(connection, answer_bytes(
                408, f"the request did not arrive whole within {self.request_timeout:g} s"))
        for connection in _expired(self._idle, IDLE_TIMEOUT, now):
            self.close(connection)
        if self._receiving:
            self._watch(next(iter(self._receiving.values())) + self.request_timeout)
        if self._idle:
            self._watch(next(iter(self._idle.values())) + IDLE_TIMEOUT)

    def close_all(self) -> "Deferred[None]":
        """Close every connection, refused ones included, once its pending
        output is written; fires when all are gone."""
        for refused in list(self.refused):
            refused.close()
        return close_all(self.protocols, self._closed)

    def stopFactory(self) -> None:  # noqa: N802
        """The port stopped listening: the server is stopping, and closes what is left itself."""
        super().stopFactory()
        self._stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
