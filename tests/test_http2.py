"""H2ClientProtocol against an in-memory h2 server, on a Clock: frames, not sockets."""

from __future__ import annotations

from typing import List

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import DataReceived, PingReceived, RequestReceived, StreamEnded
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from sylkpush.pns.h2frames import LiteralEncoder
from sylkpush.pns.http2 import LOST, REFUSED, RESET, UNPROCESSED, H2ClientProtocol

HEADERS = [(":method", "POST"), (":scheme", "https"), (":authority", "apns.test"),
           (":path", "/3/device/00")]


class Listener:
    def __init__(self) -> None:
        self.ready: List[H2ClientProtocol] = []
        self.available = 0
        self.goaway: List[str] = []
        self.closed: List[str] = []

    def connection_ready(self, protocol):
        self.ready.append(protocol)

    def streams_available(self, protocol):
        self.available += 1

    def connection_goaway(self, protocol, reason):
        self.goaway.append(reason)

    def connection_silent(self, protocol):
        self.silent = True

    def connection_closed(self, protocol, reason):
        self.closed.append(reason)


class Handler:
    def __init__(self) -> None:
        self.outcomes: list = []

    def response(self, status, headers, body):
        self.outcomes.append(("response", status, headers, body))

    def failed(self, kind, reason):
        self.outcomes.append(("failed", kind, reason))


class H2ClientProtocolTests(TestCase):
    def connect(self, max_streams: int = 100, window: int = 65535) -> None:
        self.clock = Clock()
        self.listener = Listener()
        self.protocol = H2ClientProtocol(self.listener, self.clock, ping_interval=60, ping_timeout=20)
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 2197))
        self.protocol.makeConnection(self.transport)
        self.server = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self.server.local_settings = Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: max_streams,
            SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.server.initiate_connection()
        self.exchange()

    def exchange(self) -> list:
        """Carry bytes both ways once; the server's events."""
        data = self.transport.value()
        self.transport.clear()
        events = self.server.receive_data(data) if data else []
        reply = self.server.data_to_send()
        if reply:
            self.protocol.dataReceived(reply)
        return events

    def request(self, body: bytes = b"{}") -> Handler:
        handler = Handler()
        self.protocol.request(HEADERS, body, handler)
        self.protocol.flush()
        return handler

    def respond(self, stream_id: int, status: int, body: bytes = b"") -> None:
        self.server.send_headers(stream_id, [(":status", str(status)), ("apns-id", f"id-{stream_id}")],
                                 end_stream=not body)
        if body:
            self.server.send_data(stream_id, body, end_stream=True)

    def test_ready_after_the_peer_settings(self):
        self.connect(max_streams=3)
        self.assertEqual(self.listener.ready, [self.protocol])
        self.assertEqual(self.protocol.available_streams(), 3)

    def test_each_response_reaches_its_request(self):
        self.connect()
        first, second = self.request(b'{"n":1}'), self.request(b'{"n":2}')
        events = self.exchange()
        bodies = {e.stream_id: e.data for e in events if isinstance(e, DataReceived)}
        self.assertEqual(bodies, {1: b'{"n":1}', 3: b'{"n":2}'})
        self.respond(3, 410, b'{"reason":"Unregistered"}')
        self.respond(1, 200)
        self.exchange()
        self.assertEqual(first.outcomes, [("response", 200, {"apns-id": "id-1"}, b"")])
        self.assertEqual(second.outcomes, [("response", 410, {"apns-id": "id-3"},
                                            b'{"reason":"Unregistered"}')])

    def test_stream_limit(self):
        self.connect(max_streams=2)
        self.request()
        self.request()
        self.assertEqual(self.protocol.available_streams(), 0)
        self.exchange()
        self.respond(1, 200)
        self.exchange()
        self.assertEqual(self.protocol.available_streams(), 1)
        self.assertEqual(self.listener.available, 1)

    def test_body_waits_for_the_peer_window(self):
        self.connect(window=100)
        body = bytes(range(250)) * 4
        handler = self.request(body)
        events = self.exchange()
        received = b"".join(e.data for e in events if isinstance(e, DataReceived))
        self.assertEqual(received, body[:100])
        self.assertFalse([e for e in events if isinstance(e, StreamEnded)])
        self.server.increment_flow_control_window(2000, stream_id=1)
        self.exchange()  # the WINDOW_UPDATE reaches the client, which sends the rest
        events = self.exchange()
        received += b"".join(e.data for e in events if isinstance(e, DataReceived))
        self.assertEqual(received, body)
        self.assertTrue([e for e in events if isinstance(e, StreamEnded)])
        self.assertEqual(handler.outcomes, [])

    def goaway(self, last_stream_id: int, error: ErrorCodes = ErrorCodes.NO_ERROR) -> None:
        """The server's GOAWAY, before whatever it sends next."""
        frame = GoAwayFrame(0)
        frame.last_stream_id = last_stream_id
        frame.error_code = error
        self.protocol.dataReceived(frame.serialize())

    def test_goaway_refuses_unprocessed_streams_and_drains_the_others(self):
        self.connect()
        handlers = [self.request() for _ in range(3)]  # streams 1, 3, 5
        self.exchange()
        self.respond(1, 200)
        self.exchange()
        self.goaway(last_stream_id=3)
        self.assertEqual(handlers[0].outcomes[0][:2], ("response", 200))
        self.assertEqual(handlers[1].outcomes, [])  # the server still answers stream 3
        self.assertEqual(handlers[2].outcomes[0][:2], ("failed", UNPROCESSED))
        self.assertEqual(len(self.listener.goaway), 1)
        self.assertEqual(self.protocol.available_streams(), 0)
        self.assertFalse(self.transport.disconnecting)
        self.respond(3, 200, b'{"late": true}')
        self.exchange()
        self.assertEqual(handlers[1].outcomes, [("response", 200, {"apns-id": "id-3"}, b'{"late": true}')])
        self.assertTrue(self.transport.disconnecting)

    def test_goaway_without_the_promised_answers_gives_up_after_ping_timeout(self):
        self.connect()
        handler = self.request()
        self.exchange()
        self.goaway(last_stream_id=1, error=ErrorCodes.INTERNAL_ERROR)
        self.assertEqual(handler.outcomes, [])
        self.clock.advance(19)
        self.assertEqual(handler.outcomes, [])
        self.clock.advance(1)
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(handler.outcomes[0][:2], ("failed", LOST))
        self.assertIn("GOAWAY (INTERNAL_ERROR)", handler.outcomes[0][2])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_goaway_with_nothing_open_closes_at_once(self):
        self.connect()
        self.goaway(last_stream_id=0)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.protocol.available_streams(), 0)

    def test_reset_streams(self):
        self.connect()
        refused, reset = self.request(), self.request()
        self.exchange()
        self.server.reset_stream(1, ErrorCodes.REFUSED_STREAM)
        self.server.reset_stream(3, ErrorCodes.INTERNAL_ERROR)
        self.exchange()
        self.assertEqual(refused.outcomes[0][:2], ("failed", REFUSED))
        self.assertEqual(reset.outcomes[0][:2], ("failed", RESET))
        self.assertIn("INTERNAL_ERROR", reset.outcomes[0][2])

    def test_ping_when_idle(self):
        self.connect()
        self.clock.advance(59)
        self.assertFalse([e for e in self.exchange() if isinstance(e, PingReceived)])
        self.clock.advance(1)
        self.assertTrue([e for e in self.exchange() if isinstance(e, PingReceived)])
        # the server's ACK went back in the same exchange
        self.clock.advance(30)
        self.assertFalse(self.transport.disconnecting)

    def test_no_ping_ack_drops_the_connection(self):
        self.connect()
        self.clock.advance(60)
        self.transport.clear()  # the PING never reaches the server
        self.clock.advance(20)
        self.assertTrue(self.transport.disconnecting)

    def test_connection_lost_fails_open_streams(self):
        self.connect()
        handler = self.request()
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(handler.outcomes[0][:2], ("failed", LOST))
        self.assertEqual(len(self.listener.closed), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_request_headers_sent_as_given(self):
        self.connect()
        self.request()
        [event] = [e for e in self.exchange() if isinstance(e, RequestReceived)]
        self.assertEqual(event.headers, HEADERS)


class LiteralEncoderTests(TestCase):
    """The client's HPACK encoder: no dynamic table, pieces kept."""

    def test_any_decoder_reads_what_it_writes(self):
        from hpack import Decoder, NeverIndexedHeaderTuple

        encoder, decoder = LiteralEncoder(), Decoder()
        headers = HEADERS + [("apns-topic", "com.example.app"), ("content-type", "application/json"),
                             ("authorization", "bearer " + "j" * 300), ("x-" + "n" * 200, "v" * 20000)]
        for _ in range(2):  # again from the kept pieces
            block = encoder.encode(headers)
            self.assertEqual(decoder.decode(block), headers)
            self.assertEqual(decoder.decode(encoder.encode([(k.encode(), v.encode()) for k, v in headers])),
                             headers)
        # whole static entries are one byte; nothing is added to the decoder's table
        self.assertEqual(encoder.encode([(":method", "POST"), (":scheme", "https")]), b"\x83\x87")
        self.assertEqual(len(decoder.header_table.dynamic_entries), 0)
        # the credential is a never-indexed literal, so no proxy on the way indexes it either
        [authorization] = decoder.decode(encoder.encode([("authorization", "bearer x")]))
        self.assertIsInstance(authorization, NeverIndexedHeaderTuple)

    def test_a_smaller_table_of_the_peer_is_acknowledged(self):
        from hpack import Decoder

        encoder, decoder = LiteralEncoder(), Decoder()
        encoder.header_table_size = 256  # what h2 does on the peer's SETTINGS_HEADER_TABLE_SIZE
        block = encoder.encode(HEADERS)
        self.assertEqual(block[:2], b"\x3f\xe1")  # dynamic table size update to 256
        self.assertEqual(decoder.decode(block), HEADERS)
        self.assertEqual(decoder.header_table.maxsize, 256)
        self.assertEqual(encoder.encode(HEADERS)[:1], b"\x83")  # signalled once
