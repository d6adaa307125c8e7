"""H2ClientProtocol against an in-memory h2 server, on a Clock: frames, not sockets."""

from __future__ import annotations

from typing import List, Tuple

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (ConnectionTerminated, DataReceived, PingAckReceived, PingReceived, RequestReceived,
                       SettingsAcknowledged, StreamEnded)
from h2.settings import SettingCodes, Settings
from hyperframe.frame import Frame, GoAwayFrame, HeadersFrame, PingFrame
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


def frame_types(data: bytes) -> List[str]:
    """The types of the frames in ``data``, in order (hyperframe reads them)."""
    types = []
    while data:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        types.append(frame.type)
        data = data[9 + length:]
    return [{0: "DATA", 1: "HEADERS", 3: "RST_STREAM", 4: "SETTINGS", 6: "PING", 7: "GOAWAY",
             8: "WINDOW_UPDATE", 9: "CONTINUATION"}.get(t, str(t)) for t in types]


def raw(kind: int, payload: bytes = b"", flags: int = 0, stream_id: int = 0, length: int = -1) -> bytes:
    """A frame made by hand, of ``length`` if it must lie about its payload's."""
    size = len(payload) if length < 0 else length
    return size.to_bytes(3, "big") + bytes((kind, flags)) + stream_id.to_bytes(4, "big") + payload


class H2PeerCase(TestCase):
    """The client against h2's server side: an HTTP/2 implementation of its own."""

    def connect(self, max_streams: int = 100, window: int = 65535, **settings: int) -> None:
        self.clock = Clock()
        self.listener = Listener()
        self.protocol = H2ClientProtocol(self.listener, self.clock, ping_interval=60, ping_timeout=20)
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 2197))
        self.protocol.makeConnection(self.transport)
        self.server = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        values = {SettingCodes.MAX_CONCURRENT_STREAMS: max_streams, SettingCodes.INITIAL_WINDOW_SIZE: window}
        values.update({SettingCodes[name.upper()]: value for name, value in settings.items()})
        self.server.local_settings = Settings(client=False, initial_values=values)
        self.server.initiate_connection()
        self.server_events = self.exchange()

    def exchange(self) -> list:
        """Carry bytes both ways once (after the client's reactor pass); the server's events."""
        self.clock.advance(0)  # the client writes what it made at the end of a pass
        data = self.transport.value()
        self.transport.clear()
        events = self.server.receive_data(data) if data else []
        reply = self.server.data_to_send()
        if reply:
            self.protocol.dataReceived(reply)
        return events

    def request(self, body: bytes = b"{}", headers: List[Tuple[str, str]] = HEADERS) -> Handler:
        handler = Handler()
        self.protocol.request(headers, body, handler)
        self.protocol.flush()
        self.clock.advance(0)
        return handler

    def respond(self, stream_id: int, status: int, body: bytes = b"") -> None:
        self.server.send_headers(stream_id, [(":status", str(status)), ("apns-id", f"id-{stream_id}")],
                                 end_stream=not body)
        if body:
            self.server.send_data(stream_id, body, end_stream=True)


class H2ClientProtocolTests(H2PeerCase):
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


class FramingTests(H2PeerCase):
    """What the client's own framing must get right, each against h2's server side."""

    def body_received(self, events: list) -> bytes:
        return b"".join(e.data for e in events if isinstance(e, DataReceived))

    def test_settings_said_and_acknowledged(self):
        self.connect()
        self.assertEqual(self.server.remote_settings.enable_push, 0)
        self.assertEqual(self.server.remote_settings.initial_window_size, 65535)
        self.assertTrue([e for e in self.exchange() if isinstance(e, SettingsAcknowledged)])

    def test_bodies_wait_for_the_connection_window(self):
        # streams may take a megabyte each, the connection 65535 bytes until
        # the server reads them: the third body and the small fourth wait
        # for the WINDOW_UPDATE
        self.connect(window=1 << 20)
        bodies = [bytes([n]) * 30000 for n in range(3)] + [b"small"]
        handlers = [self.request(body) for body in bodies]
        events = self.exchange()
        self.assertEqual(len(self.body_received(events)), 65535)
        self.assertLessEqual(max(len(e.data) for e in events if isinstance(e, DataReceived)), 16384)
        for event in events:
            if isinstance(event, DataReceived):
                self.server.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        self.exchange()  # the WINDOW_UPDATE reaches the client, which sends the rest
        events += self.exchange()
        received = {stream_id: b"".join(e.data for e in events if isinstance(e, DataReceived)
                                        and e.stream_id == stream_id) for stream_id in (1, 3, 5, 7)}
        self.assertEqual(received, {1: bodies[0], 3: bodies[1], 5: bodies[2], 7: bodies[3]})
        self.assertEqual(sorted(e.stream_id for e in events if isinstance(e, StreamEnded)), [1, 3, 5, 7])
        self.assertEqual([h.outcomes for h in handlers], [[], [], [], []])

    def test_a_bigger_initial_window_of_the_peer_releases_a_waiting_body(self):
        self.connect(window=100)
        body = bytes(range(250)) * 4
        self.request(body)
        self.assertEqual(self.body_received(self.exchange()), body[:100])
        self.server.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 5000})
        self.exchange()  # the new SETTINGS: the open stream's window grows by 4900
        events = self.exchange()
        self.assertTrue([e for e in events if isinstance(e, SettingsAcknowledged)])
        self.assertEqual(self.body_received(events), body[100:])
        self.assertTrue([e for e in events if isinstance(e, StreamEnded)])

    def test_the_peers_larger_frames_are_used(self):
        self.connect(window=1 << 20)
        self.server.update_settings({SettingCodes.MAX_FRAME_SIZE: 40000})
        self.exchange()
        self.exchange()  # h2 takes larger frames once the client acknowledged its SETTINGS
        self.request(b"x" * 40000)
        [data] = [e for e in self.exchange() if isinstance(e, DataReceived)]
        self.assertEqual(len(data.data), 40000)

    def test_a_long_header_block_goes_on_in_continuation_frames(self):
        self.connect()
        headers = HEADERS + [("x-long", "v" * 40000)]
        self.request(b"{}", headers=headers)
        self.assertEqual(frame_types(self.transport.value())[-4:], ["HEADERS", "CONTINUATION", "CONTINUATION",
                                                                    "DATA"])
        [event] = [e for e in self.exchange() if isinstance(e, RequestReceived)]
        self.assertEqual(event.headers, headers)

    def test_a_response_header_block_in_continuation_frames(self):
        self.connect()
        handler = self.request()
        self.exchange()
        self.server.send_headers(1, [(":status", "200"), ("x-long", "v" * 20000)], end_stream=True)
        reply = self.server.data_to_send()
        self.assertEqual(frame_types(reply), ["HEADERS", "CONTINUATION"])
        self.protocol.dataReceived(reply[:5000])  # and in pieces
        self.protocol.dataReceived(reply[5000:])
        self.assertEqual(handler.outcomes, [("response", 200, {"x-long": "v" * 20000}, b"")])

    def test_padded_and_prioritised_frames_from_the_peer(self):
        self.connect()
        first, second = self.request(), self.request()
        self.exchange()
        # a HEADERS frame with padding and a priority, made by hand with the
        # server's own encoder (h2 pads only DATA)
        frame = HeadersFrame(1, flags=["END_HEADERS", "END_STREAM", "PADDED", "PRIORITY"])
        frame.pad_length = 30
        frame.depends_on, frame.stream_weight = 0, 15
        frame.data = self.server.encoder.encode([(":status", "410"), ("apns-id", "padded")])
        self.protocol.dataReceived(frame.serialize())
        self.server.send_headers(3, [(":status", "200"), ("apns-id", "padded")])
        self.server.send_data(3, b'{"padded": true}', end_stream=True, pad_length=100)
        self.exchange()
        self.assertEqual(first.outcomes, [("response", 410, {"apns-id": "padded"}, b"")])
        self.assertEqual(second.outcomes, [("response", 200, {"apns-id": "padded"}, b'{"padded": true}')])

    def test_the_peers_header_table_is_followed_through_every_block(self):
        # the server indexes what it sends, and later blocks refer to it; the
        # block of a stream the client cancelled must be read all the same
        self.connect()
        handlers = [self.request() for _ in range(3)]  # streams 1, 3, 5
        self.exchange()
        self.protocol.cancel(3)  # its RST_STREAM reaches the server after the answer
        self.server.send_headers(1, [(":status", "200"), ("x-first", "one")], end_stream=True)
        self.server.send_headers(3, [(":status", "200"), ("x-second", "two")], end_stream=True)
        self.protocol.dataReceived(self.server.data_to_send())
        self.server.send_headers(5, [(":status", "200"), ("x-first", "one"), ("x-second", "two")],
                                 end_stream=True)
        block = self.server.data_to_send()
        self.assertLess(len(block), 9 + 4)  # three references to indexed headers
        self.protocol.dataReceived(block)
        self.assertEqual(handlers[0].outcomes, [("response", 200, {"x-first": "one"}, b"")])
        self.assertEqual(handlers[1].outcomes, [])
        self.assertEqual(handlers[2].outcomes, [("response", 200, {"x-first": "one", "x-second": "two"}, b"")])
        self.clock.advance(0)  # the end of the reactor pass
        self.assertEqual(frame_types(self.transport.value()), ["RST_STREAM"])

    def test_the_peers_header_table_followed_while_it_evicts(self):
        # each answer adds a header of its own to the server's table, which
        # soon evicts the oldest: hundreds of answers, read in batches
        self.connect(max_streams=1000)
        handlers = [self.request() for _ in range(300)]
        self.exchange()
        for n, stream_id in enumerate(range(1, 600, 2)):
            self.server.send_headers(stream_id, [(":status", "200"), ("apns-id", f"{n:036d}"), ("x-same", "s")],
                                     end_stream=True)
            if n % 7 == 6:
                self.protocol.dataReceived(self.server.data_to_send())
        self.protocol.dataReceived(self.server.data_to_send())
        self.assertLess(len(self.server.encoder.header_table.dynamic_entries), 100)
        self.assertEqual([h.outcomes for h in handlers],
                         [[("response", 200, {"apns-id": f"{n:036d}", "x-same": "s"}, b"")] for n in range(300)])

    def test_informational_answers_and_trailers_are_not_the_response(self):
        self.connect()
        handler = self.request()
        self.exchange()
        self.server.send_headers(1, [(":status", "100")])
        self.server.send_headers(1, [(":status", "200"), ("apns-id", "a")])
        self.server.send_data(1, b"body")
        self.server.send_headers(1, [("x-trailer", "t")], end_stream=True)
        self.exchange()
        self.assertEqual(handler.outcomes, [("response", 200, {"apns-id": "a"}, b"body")])

    def test_a_long_response_body_is_given_window_back(self):
        self.connect()
        handler = self.request()
        self.exchange()
        body = bytes(range(256)) * 800  # 204800 bytes: three times the first windows
        self.server.send_headers(1, [(":status", "200")])
        sent = 0
        for _ in range(100):
            size = min(self.server.local_flow_control_window(1), self.server.max_outbound_frame_size,
                       len(body) - sent)
            if size:
                self.server.send_data(1, body[sent:sent + size], end_stream=sent + size == len(body))
                sent += size
            self.exchange()
            if handler.outcomes:
                break
        self.assertEqual(handler.outcomes, [("response", 200, {}, body)])

    def test_a_table_size_of_the_peer_is_acknowledged_in_the_next_block(self):
        self.connect(header_table_size=0)
        self.exchange()  # the client's ACK: the server's decoder now allows no table
        self.request()
        [event] = [e for e in self.exchange() if isinstance(e, RequestReceived)]
        self.assertEqual(event.headers, HEADERS)
        self.assertEqual(self.server.decoder.header_table.maxsize, 0)

    def test_ping_of_the_peer_answered(self):
        self.connect()
        self.server.ping(b"12345678")
        self.exchange()
        [ack] = [e for e in self.exchange() if isinstance(e, PingAckReceived)]
        self.assertEqual(ack.ping_data, b"12345678")

    def test_an_ack_with_other_data_does_not_answer_our_ping(self):
        self.connect()
        self.clock.advance(60)
        ping = bytes(self.transport.value()[-8:])
        self.transport.clear()  # the PING never reaches the server
        wrong = PingFrame(0, flags=["ACK"])
        wrong.opaque_data = bytes(b ^ 0xFF for b in ping)
        self.protocol.dataReceived(wrong.serialize())
        self.clock.advance(20)
        self.assertTrue(self.transport.disconnecting)

    def test_goaway_with_debug_data_from_h2(self):
        self.connect()
        first, second = self.request(), self.request()
        self.exchange()
        self.respond(1, 200)
        self.server.close_connection(error_code=ErrorCodes.NO_ERROR, last_stream_id=1,
                                     additional_data=b"maintenance")
        self.exchange()
        self.assertEqual(first.outcomes[0][:2], ("response", 200))
        self.assertEqual(second.outcomes[0][:2], ("failed", UNPROCESSED))
        self.assertEqual(self.listener.goaway, ["server sent GOAWAY (NO_ERROR maintenance)"])
        self.assertTrue(self.transport.disconnecting)

    #: frames a server must not send, and the error of the GOAWAY each must get
    BROKEN = [
        ("frame larger than allowed", raw(0x0, b"x" * 16385, stream_id=1), ErrorCodes.FRAME_SIZE_ERROR),
        ("frame header alone, announcing too much", raw(0x0, length=1 << 16, stream_id=1),
         ErrorCodes.FRAME_SIZE_ERROR),
        ("WINDOW_UPDATE of 3 bytes", raw(0x8, b"\x00\x00\x01"), ErrorCodes.FRAME_SIZE_ERROR),
        ("WINDOW_UPDATE of 0", raw(0x8, bytes(4)), ErrorCodes.PROTOCOL_ERROR),
        ("PING of 7 bytes", raw(0x6, b"1234567"), ErrorCodes.FRAME_SIZE_ERROR),
        ("SETTINGS of 5 bytes", raw(0x4, b"\x00\x03\x00\x00\x00"), ErrorCodes.FRAME_SIZE_ERROR),
        ("SETTINGS_ENABLE_PUSH 1", raw(0x4, b"\x00\x02\x00\x00\x00\x01"), ErrorCodes.PROTOCOL_ERROR),
        ("SETTINGS_MAX_FRAME_SIZE 100", raw(0x4, b"\x00\x05\x00\x00\x00\x64"), ErrorCodes.PROTOCOL_ERROR),
        ("SETTINGS_INITIAL_WINDOW_SIZE 2**31", raw(0x4, b"\x00\x04\x80\x00\x00\x00"),
         ErrorCodes.FLOW_CONTROL_ERROR),
        ("DATA on stream 0", raw(0x0, b"x"), ErrorCodes.PROTOCOL_ERROR),
        ("HEADERS on a server stream", raw(0x1, b"\x88", flags=0x5, stream_id=2), ErrorCodes.PROTOCOL_ERROR),
        ("HEADERS on a stream never opened", raw(0x1, b"\x88", flags=0x5, stream_id=99), ErrorCodes.PROTOCOL_ERROR),
        ("HEADERS that HPACK cannot decode", raw(0x1, b"\x80", flags=0x5, stream_id=1), ErrorCodes.COMPRESSION_ERROR),
        ("HEADERS resizing the HPACK table beyond our 4096", raw(0x1, b"\x3f\xe2\x1f\x88", flags=0x5, stream_id=1),
         ErrorCodes.COMPRESSION_ERROR),
        ("HEADERS with Huffman padding of zeros", raw(0x1, b"\x88\x00\x81\x18\x00", flags=0x5, stream_id=1),
         ErrorCodes.COMPRESSION_ERROR),
        ("DATA padded beyond its length", raw(0x0, b"\x05xy", flags=0x9, stream_id=1), ErrorCodes.PROTOCOL_ERROR),
        ("CONTINUATION of nothing", raw(0x9, b"\x88", flags=0x4, stream_id=1), ErrorCodes.PROTOCOL_ERROR),
        ("HEADERS not continued", raw(0x1, b"\x88", stream_id=1) + raw(0x6, bytes(8)), ErrorCodes.PROTOCOL_ERROR),
        ("header block continued without end", raw(0x1, b"\x88", stream_id=1) + raw(0x9, bytes(16000), stream_id=1) * 5,
         ErrorCodes.ENHANCE_YOUR_CALM),
        ("PUSH_PROMISE", raw(0x5, b"\x00\x00\x00\x02\x82", flags=0x4, stream_id=1), ErrorCodes.PROTOCOL_ERROR),
        ("RST_STREAM of 3 bytes", raw(0x3, bytes(3), stream_id=1), ErrorCodes.FRAME_SIZE_ERROR),
        ("GOAWAY of 7 bytes", raw(0x7, bytes(7)), ErrorCodes.FRAME_SIZE_ERROR),
    ]

    def test_a_broken_frame_ends_the_connection_with_goaway_and_fails_its_streams(self):
        for name, frame, code in self.BROKEN:
            self.connect()
            self.exchange()
            handler = self.request()
            self.exchange()
            self.protocol.dataReceived(frame)
            self.assertEqual(handler.outcomes[0][:2], ("failed", LOST), name)
            self.assertIn("HTTP/2 protocol error", handler.outcomes[0][2], name)
            [goaway] = [e for e in self.exchange() if isinstance(e, ConnectionTerminated)]
            self.assertEqual(goaway.error_code, code, name)
            self.assertTrue(self.transport.disconnecting, name)
            self.assertEqual(self.protocol.available_streams(), 0, name)
            self.protocol.dataReceived(raw(0x6, bytes(8)))
            self.assertEqual(self.transport.value(), b"", name)  # nothing more is read (no PING answered)
            self.protocol.connectionLost(Failure(ConnectionDone()))
            self.assertEqual(self.listener.closed, [handler.outcomes[0][2]], name)

    def test_a_connection_that_does_not_close_is_dropped_after_ping_timeout(self):
        self.connect()
        self.protocol.dataReceived(raw(0x6))  # a PING of no bytes
        self.assertTrue(self.transport.disconnecting)
        self.assertFalse(self.transport.disconnected)  # the GOAWAY goes out first
        self.clock.advance(20)
        self.assertTrue(self.transport.disconnected)  # the peer never took it


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

    def test_the_smallest_and_the_last_table_size_are_signalled(self):
        from hpack import Decoder

        encoder, decoder = LiteralEncoder(), Decoder()
        for size in (100, 0, 4096):  # three SETTINGS between two requests
            encoder.header_table_size = size
        block = encoder.encode(HEADERS)
        self.assertEqual(block[:4], b"\x20\x3f\xe1\x1f")  # 0, then 4096
        self.assertEqual(decoder.decode(block), HEADERS)
        self.assertEqual(decoder.header_table.maxsize, 4096)
        encoder.header_table_size = 4096  # no change
        self.assertEqual(encoder.encode(HEADERS)[:1], b"\x83")
        encoder.header_table_size = 1000
        self.assertEqual(encoder.encode(HEADERS)[:3], b"\x3f\xc9\x07")  # 1000 alone
