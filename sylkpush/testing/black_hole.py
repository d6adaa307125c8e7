"""A listener that accepts TCP connections and never says a word.

What a client meets when a load balancer or a half-dead host completes the
TCP handshake and then nothing happens: no TLS ServerHello, no HTTP/2
SETTINGS, no FIN.  Whatever arrives is read and thrown away, so the client's
writes never block.  Tests point one of a push service's addresses at it.
"""

from __future__ import annotations

from typing import Any, List

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.protocol import Factory, Protocol

from sylkpush.transports import IStreamTransport


class _Mute(Protocol):
    transport: IStreamTransport

    def __init__(self, hole: "BlackHole") -> None:
        self.hole = hole
        self.lost: Deferred = Deferred()

    def connectionMade(self) -> None:  # noqa: N802
        self.hole.connections.append(self)
        self.hole.accepted += 1

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        self.hole.connections.remove(self)
        self.lost.callback(None)


class BlackHole(Factory):
    """``BlackHole(reactor).listen()`` returns the port; ``stop()`` closes everything."""

    noisy = False

    def __init__(self, reactor: Any, host: str = "127.0.0.1") -> None:
        self.reactor = reactor
        self.host = host
        self.port = 0
        self.accepted = 0
        self.connections: List[_Mute] = []
        self._listening: Any = None

    def buildProtocol(self, addr: Any) -> _Mute:  # noqa: N802
        return _Mute(self)

    def listen(self) -> int:
        self._listening = self.reactor.listenTCP(0, self, interface=self.host)
        self.port = self._listening.getHost().port
        return self.port

    def stop(self) -> "Deferred[None]":
        waits = [connection.lost for connection in self.connections]
        for connection in list(self.connections):
            connection.transport.abortConnection()
        if self._listening is not None:
            waits.append(self._listening.stopListening())
            self._listening = None
        return DeferredList(waits).addCallback(lambda _: None)
