"""Writing to Twisted's transports the quick way (sylkpush.transports)."""

from __future__ import annotations

from typing import List, Tuple

from twisted.internet.defer import Deferred
from twisted.trial import unittest


class SendNowTests(unittest.TestCase):
    """Answers go straight to the socket when nothing is queued; what the
    socket does not take follows through Twisted's own write, in order."""

    def test_more_than_the_socket_takes_arrives_whole_and_in_order(self):
        from twisted.internet import protocol, reactor

        from sylkpush.transports import send_now

        data = bytes(range(256)) * (16 * 1024)  # 4 MiB: more than a socket buffer
        sent: List[Tuple[bool, bool]] = []

        class Sender(protocol.Protocol):
            def connectionMade(self):
                send_now(self.transport, data[:10])  # taken whole by the socket
                sent.append((bool(self.transport.dataBuffer), bool(self.transport._tempDataBuffer)))
                send_now(self.transport, data[10:])  # partly, the rest queued
                sent.append((bool(self.transport.dataBuffer), bool(self.transport._tempDataBuffer)))
                send_now(self.transport, b"end")  # behind what is queued
                self.transport.loseConnection()

        received = bytearray()
        done: Deferred = Deferred()

        class Receiver(protocol.Protocol):
            def dataReceived(self, chunk):
                received.extend(chunk)

            def connectionLost(self, reason):
                done.callback(None)

        port = reactor.listenTCP(0, protocol.Factory.forProtocol(Sender), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        protocol.ClientCreator(reactor, Receiver).connectTCP("127.0.0.1", port.getHost().port)

        def check(_):
            self.assertEqual(sent[0], (False, False))
            self.assertTrue(any(sent[1]))
            self.assertEqual(len(received), len(data) + 3)
            self.assertTrue(bytes(received) == data + b"end")
        return done.addCallback(check)
