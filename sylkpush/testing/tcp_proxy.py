"""A TCP proxy on loopback that tests cut, mute and restore: a server that goes away and comes back.

Clients connect to the proxy's port; each connection is relayed to the
target.  :meth:`TCPProxy.cut` closes every connection and stops listening (a
stopped server: new connections are refused), :meth:`TCPProxy.mute` keeps
the connections but drops what passes in either direction (a server that
stopped answering), and :meth:`TCPProxy.restore` listens again on the same
port and relays again.
"""

from __future__ import annotations

from typing import Any, List, Optional

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.protocol import ClientFactory, Factory, Protocol

from sylkpush.transports import IStreamTransport


class _Relay(Protocol):
    """One side of a relayed connection; ``peer`` is the other side."""

    transport: IStreamTransport

    def __init__(self, proxy: "TCPProxy") -> None:
        self.proxy = proxy
        self.peer: Optional["_Relay"] = None
        self.pending: List[bytes] = []
        self.lost: Deferred = Deferred()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self.proxy.muted:
            return
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            self.pending.append(data)

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        if self in self.proxy.relays:
            self.proxy.relays.remove(self)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.loseConnection()
        self.lost.callback(None)


class _Outgoing(_Relay):
    def connectionMade(self) -> None:  # noqa: N802
        self.proxy.relays.append(self)
        incoming = self.peer
        if incoming is None or incoming.transport is None:
            self.transport.loseConnection()
            return
        incoming.peer = self
        for data in incoming.pending:
            self.transport.write(data)
        incoming.pending = []
        incoming.transport.resumeProducing()


class _Incoming(_Relay):
    def connectionMade(self) -> None:  # noqa: N802
        self.proxy.relays.append(self)
        self.proxy.accepted += 1
        self.transport.pauseProducing()  # until the target answers
        outgoing = _Outgoing(self.proxy)
        outgoing.peer = self
        self.proxy.reactor.connectTCP(self.proxy.target_host, self.proxy.target_port,
                                      _OutgoingFactory(self, outgoing), timeout=5)


class _OutgoingFactory(ClientFactory):
    """Connects the target side of ``incoming``; when the target cannot be
    reached, ``incoming`` is closed."""

    def __init__(self, incoming: _Incoming, outgoing: _Outgoing) -> None:
        self.incoming = incoming
        self.outgoing = outgoing

    def buildProtocol(self, addr: Any) -> _Outgoing:  # noqa: N802
        self.outgoing.factory = self
        return self.outgoing

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:  # noqa: N802
        self.incoming.transport.loseConnection()


class TCPProxy(Factory):
    """``TCPProxy(reactor, host, port).listen()`` returns the port it listens on (127.0.0.1)."""

    noisy = False

    def __init__(self, reactor: Any, target_host: str, target_port: int) -> None:
        self.reactor = reactor
        self.target_host = target_host
        self.target_port = target_port
        self.relays: List[_Relay] = []
        self.port = 0
        self.accepted = 0
        self.muted = False
        self._listening: Any = None

    def buildProtocol(self, addr: Any) -> _Incoming:  # noqa: N802
        return _Incoming(self)

    def listen(self) -> int:
        self._listening = self.reactor.listenTCP(self.port, self, interface="127.0.0.1")
        self.port = self._listening.getHost().port
        return self.port

    def cut(self) -> Deferred:
        """Close every connection and stop listening; fires when all are closed."""
        stopped = self._listening.stopListening() if self._listening is not None else succeed(None)
        self._listening = None
        relays = list(self.relays)
        for relay in relays:
            relay.transport.abortConnection()
        return DeferredList([stopped] + [relay.lost for relay in relays])

    def mute(self) -> None:
        """Keep the connections and drop every byte, in both directions."""
        self.muted = True

    def restore(self) -> None:
        """Relay again, and listen again (on the same port) after :meth:`cut`."""
        self.muted = False
        if self._listening is None:
            self.listen()

    def stop(self) -> Deferred:
        return self.cut()
