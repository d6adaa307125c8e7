"""The API's connections under attack: denied hosts, too many callers, slow
senders (the access list, max_connections, request_timeout)."""

from __future__ import annotations

import ipaddress
import resource

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.trial import unittest
from twisted.web import resource as web_resource
from twisted.web import server

from sylkpush.connections import IDLE_TIMEOUT, LINGER, ApiConnections
from sylkpush.http11 import Site
from sylkpush.service import connection_limit, raise_open_files_limit

REQUEST = b"POST /hold HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class Holding(web_resource.Resource):
    """Keeps every request unanswered until the test answers it."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.requests = []

    def render(self, request):
        self.requests.append(request)
        return server.NOT_DONE_YET


def connect(connections, host="127.0.0.1"):
    """A new connection from ``host`` to ``connections``, in memory: (protocol, transport)."""
    address = IPv4Address("TCP", host, 40000)
    connection = connections.buildProtocol(address)
    transport = StringTransportWithDisconnection(peerAddress=address)
    transport.protocol = connection
    connection.makeConnection(transport)
    return connection, transport


class ConnectionRules(unittest.TestCase):
    """The rules, exactly, on a Clock and in-memory transports."""

    def make(self, **options):
        self.clock = task.Clock()
        self.resource = Holding()
        site = Site(self.resource)
        self.refusals = []
        options.setdefault("request_timeout", 10.0)
        self.connections = ApiConnections(site, self.clock, refused=self.refusals.append, **options)
        return self.connections

    def connect(self, host="127.0.0.1"):
        return connect(self.connections, host)

    def test_denied_address_is_answered_403_before_its_request_is_read(self):
        self.make(allowed=[ipaddress.ip_network("192.0.2.0/24")])
        _, transport = self.connect("127.0.0.1")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 403 Forbidden\r\n"))
        self.assertIn(b"\r\nDate: ", transport.value())  # every answer is dated, refusals too
        self.assertTrue(transport.value().endswith(b'"access denied by access list", "data": {}}'))
        self.assertEqual((len(self.connections.protocols), self.refusals), (0, [403]))
        transport.protocol.dataReceived(b"POST /push HTTP/1.1\r\nContent-Length: 100000\r\n\r\n{")
        self.clock.advance(LINGER)  # closed whatever the caller still sends
        self.assertFalse(transport.connected)
        self.assertEqual(self.connections.refused, {})
        _, allowed = self.connect("192.0.2.9")
        self.assertEqual(allowed.value(), b"")

    def test_a_request_must_arrive_whole_within_the_timeout(self):
        self.make()
        connection, transport = self.connect()
        for piece in (b"POST /hold HTTP/1.1\r\n", b"Host: x\r\n", b"Content-Length: 2\r\n", b"\r\n"):
            connection.dataReceived(piece)  # every byte would restart Twisted's idle timer
            self.clock.advance(2)
        self.assertTrue(transport.connected)
        self.clock.advance(2)  # 10 s after the first byte
        self.assertFalse(transport.connected)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "))
        self.assertEqual(self.refusals, [408])
        self.assertEqual(self.resource.requests, [])

    def test_the_deadline_spares_answers_and_idle_keep_alive(self):
        self.make()
        connection, transport = self.connect()
        connection.dataReceived(REQUEST)
        [request] = self.resource.requests
        self.clock.advance(60)  # a push may take its time
        request.write(b"ok")
        request.finish()
        self.clock.advance(30)  # idle between requests: not a slow sender
        self.assertTrue(transport.connected)
        connection.dataReceived(REQUEST[:20])  # the next one is timed from its first byte
        self.clock.advance(9.9)
        self.assertTrue(transport.connected)
        self.clock.advance(0.2)
        self.assertFalse(transport.connected)

    def test_idle_connections_are_closed_after_the_idle_timeout(self):
        self.make()
        silent, silent_transport = self.connect()  # never sends a byte
        answered, answered_transport = self.connect()
        waiting, waiting_transport = self.connect()
        self.clock.advance(IDLE_TIMEOUT / 2)
        answered.dataReceived(REQUEST)
        waiting.dataReceived(REQUEST)
        first, _ = self.resource.requests
        first.write(b"ok")
        first.finish()  # idle from now on
        self.clock.advance(IDLE_TIMEOUT / 2)
        self.assertFalse(silent_transport.connected)
        self.assertTrue(answered_transport.connected)
        self.clock.advance(IDLE_TIMEOUT / 2)
        self.assertFalse(answered_transport.connected)
        self.assertEqual(answered_transport.value().count(b"HTTP/1.1 200 OK"), 1)  # nothing more was written
        self.clock.advance(IDLE_TIMEOUT * 10)  # a push may take its time
        self.assertTrue(waiting_transport.connected)
        self.assertEqual(self.refusals, [])

    def test_at_the_limit_idle_connections_go_first_then_slow_senders(self):
        self.make(limit=3)
        answering, _ = self.connect()
        answering.dataReceived(REQUEST)
        slow, slow_transport = self.connect()
        slow.dataReceived(b"POST /hold HTTP/1.1\r\n")
        self.clock.advance(1)
        idle, idle_transport = self.connect()
        newcomer, newcomer_transport = self.connect()  # at the limit: the idle one makes room
        self.assertFalse(idle_transport.connected)
        self.assertTrue(slow_transport.connected)
        newcomer.dataReceived(REQUEST)
        _, last_transport = self.connect()  # then the slowest sender, with a 503
        self.assertFalse(slow_transport.connected)
        self.assertIn(b"503 Service Unavailable", slow_transport.value())
        self.assertTrue(newcomer_transport.connected and last_transport.connected)
        self.assertEqual(len(self.connections.protocols), 3)
        self.assertEqual(len(self.resource.requests), 2)  # requests being answered are spared
        self.assertEqual(self.refusals, [])

    def test_a_newcomer_gets_503_when_every_connection_is_answering(self):
        self.make(limit=2)
        for _ in range(2):
            connection, _ = self.connect()
            connection.dataReceived(REQUEST)
        _, transport = self.connect()
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 503 Service Unavailable\r\n"))
        self.assertEqual(self.refusals, [503])
        self.assertEqual(len(self.resource.requests), 2)

    def test_refused_connections_make_room_first(self):
        self.make(limit=1, allowed=[ipaddress.ip_network("127.0.0.0/8")])
        _, denied = self.connect("192.0.2.1")
        _, allowed = self.connect()
        self.assertFalse(denied.connected)
        self.assertTrue(allowed.connected)


class DescriptorLimit(unittest.TestCase):

    def test_soft_limit_is_raised_to_the_hard_one(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        lowered = min(soft, 512)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
        now = raise_open_files_limit()
        expected = hard if hard != resource.RLIM_INFINITY else max(lowered, 1 << 20)
        self.assertEqual(now, expected)
        self.assertEqual(resource.getrlimit(resource.RLIMIT_NOFILE)[0], expected)

    def test_connection_limit_leaves_descriptors_for_the_rest(self):
        self.assertEqual(connection_limit(4096, 1 << 20), 4096)
        self.assertEqual(connection_limit(4096, 1024), 768)
        self.assertEqual(connection_limit(4096, 300), 150)
