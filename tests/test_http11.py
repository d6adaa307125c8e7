"""The API's HTTP/1.1 server (sylkpush.http11) byte by byte: heads in
pieces, pipelining, bodies by length and chunked, the limits, and every
malformed request answered once with a JSON error before the connection is
closed.  In memory, on a Clock; hypothesis splits and mixes the requests."""

from __future__ import annotations

import json
import logging
import re
from typing import List, Optional, Tuple

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.trial import unittest

from sylkpush.connections import ApiConnections
from sylkpush.http11 import MAX_BODY, MAX_HEAD, MAX_HEADERS, Site
from sylkpush.web import AnsweringResource, JsonResource, Root, write_json
from tests.doubles import capture_logs
from tests.test_connections import Holding, connect
from tests.test_properties import EXAMPLES


class Echo(JsonResource):
    """Answers POST with what it read of the body."""

    def render_POST(self, request):
        data = {"length": len(request.content.read()), "too_large": request.body_too_large,
                "agent": (request.getHeader(b"user-agent") or b"").decode()}
        return write_json(request, 200, "read", data)

    def render_GET(self, request):
        return write_json(request, 200, "got", {"path": request.uri.decode()})


def request(path=b"/echo", body=b"{}", version=b"HTTP/1.1", extra=b"", method=b"POST") -> bytes:
    return (method + b" " + path + b" " + version + b"\r\nHost: x\r\nContent-Type: application/json\r\n"
            + b"Content-Length: %d\r\n" % len(body) + extra + b"\r\n" + body)


def chunked(body: bytes, sizes: List[int], path=b"/echo") -> bytes:
    out, rest = [], body
    for size in sizes:
        piece, rest = rest[:size], rest[size:]
        if piece:
            out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
    if rest:
        out.append(b"%x\r\n%s\r\n" % (len(rest), rest))
    return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(out) + b"0\r\n\r\n")


ANSWER = re.compile(rb"HTTP/1\.[01] (\d{3}) [^\r]*\r\n((?:[^\r]+\r\n)*)\r\n")


def answers(raw: bytes) -> List[Tuple[int, dict, Optional[dict]]]:
    """(status, headers, JSON body) of each answer in ``raw``, checking each length."""
    found = []
    while raw:
        head = ANSWER.match(raw)
        assert head, raw
        headers = {}
        for line in head.group(2).split(b"\r\n"):
            if line:
                name, _, value = line.partition(b": ")
                headers[name.lower().decode()] = value.decode()
        raw = raw[head.end():]
        length = int(headers["content-length"])
        body, raw = raw[:length], raw[length:]
        found.append((int(head.group(1)), headers, json.loads(body) if body else None))
    return found


class _Harness:
    """A server on a Clock with /echo and /held, and in-memory connections to it."""

    def setUp(self):
        self.clock = task.Clock()
        self.root = root = Root()
        root.putChild(b"echo", Echo())
        self.held = Holding()
        root.putChild(b"held", self.held)
        self.refusals: List[int] = []
        self.connections = ApiConnections(Site(root), self.clock, refused=self.refusals.append)
        self.logs = capture_logs(self, logging.INFO)

    def connect(self):
        return connect(self.connections)

    def exchange(self, *segments: bytes):
        connection, transport = self.connect()
        for segment in segments:
            connection.dataReceived(segment)
        return answers(transport.value()), transport

    def assertRefused(self, raw: bytes, code: int, words: str):
        found, transport = self.exchange(raw + request())
        [(status, headers, body)] = found  # the request after it is never read
        self.assertEqual((status, body["code"]), (code, code))
        self.assertIn(words, body["description"])
        self.assertEqual((headers["connection"], headers["content-type"]), ("close", "application/json"))
        self.assertRegex(headers["date"], r"^\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT$")
        self.assertFalse(transport.connected)
        self.assertEqual(self.refusals[-1], code)
        self.assertTrue(self.logs.matching(f"refused request from 127.0.0.1: {code} "))


class Server(_Harness, unittest.TestCase):
    # -- reading -------------------------------------------------------------------------

    def test_a_head_and_body_byte_by_byte(self):
        raw = request(body=b'{"x": 1}', extra=b"User-Agent: slow\r\n")
        found, transport = self.exchange(*[raw[i:i + 1] for i in range(len(raw))])
        [(status, headers, body)] = found
        self.assertEqual((status, body["data"]), (200, {"length": 8, "too_large": False, "agent": "slow"}))
        self.assertTrue(headers["date"].endswith("GMT"))
        self.assertTrue(transport.connected)

    def test_pipelined_requests_in_one_segment_are_answered_in_order(self):
        found, _ = self.exchange(request(body=b"[1]") + request(path=b"/nowhere") + request(body=b"[1, 2]"))
        self.assertEqual([(status, body["data"].get("length")) for status, _, body in found],
                         [(200, 3), (404, None), (200, 6)])

    def test_a_pipelined_request_waits_for_the_answer_before_it(self):
        connection, transport = self.connect()
        connection.dataReceived(request(path=b"/held") + request(body=b"[1]"))
        self.assertEqual(transport.value(), b"")  # the second waits behind the first
        [held] = self.held.requests
        held.write(write_json(held, 202, "later"))
        held.finish()
        held.finish()  # a second finish sends nothing
        self.assertEqual([status for status, _, _ in answers(transport.value())], [202, 200])

    def test_an_answer_after_the_caller_left_is_dropped(self):
        connection, transport = self.connect()
        connection.dataReceived(request(path=b"/held"))
        transport.loseConnection()
        [held] = self.held.requests
        self.assertTrue(held._disconnected)
        held.write(b"late")
        held.finish()
        self.assertEqual(transport.value(), b"")
        self.assertEqual(len(self.connections.protocols), 0)

    def test_chunked_bodies(self):
        body = json.dumps({"x": "y" * 300}).encode()
        found, _ = self.exchange(chunked(body, [1, 7, 100]), request(body=b"[]"))
        self.assertEqual([(s, b["data"]["length"]) for s, _, b in found], [(200, len(body)), (200, 2)])
        found, transport = self.exchange(chunked(b" " * (MAX_BODY + 10), [40000, 40000]) + request())
        self.assertEqual([(s, b["data"]["too_large"]) for s, _, b in found], [(200, True), (200, False)])
        self.assertTrue(transport.connected)

    def test_a_huge_chunk_is_dropped_as_it_comes(self):
        connection, transport = self.connect()
        connection.dataReceived(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % (MAX_BODY * 4))
        for _ in range(4):
            connection.dataReceived(b" " * MAX_BODY)
            _, reader = connection.reading
            self.assertLessEqual(len(reader.body) + len(reader.pending), MAX_BODY + 1)
        connection.dataReceived(b"\r\n0\r\nX-Trailer: 1\r\n\r\n" + request())
        self.assertEqual([(s, b["data"]["too_large"]) for s, _, b in answers(transport.value())],
                         [(200, True), (200, False)])

    def test_a_body_over_the_limit_is_read_and_dropped(self):
        raw = request(body=b" " * (MAX_BODY + 1))
        found, transport = self.exchange(raw[:1000], raw[1000:50000], raw[50000:] + request(body=b"[]"))
        self.assertEqual([(s, b["data"]["too_large"]) for s, _, b in found], [(200, True), (200, False)])
        self.assertTrue(transport.connected)

    def test_a_blank_line_before_a_request_is_ignored(self):
        found, _ = self.exchange(b"\r\n" + request())
        self.assertEqual([status for status, _, _ in found], [200])

    def test_expect_100_continue(self):
        raw = request(body=b"[1]", extra=b"Expect: 100-continue\r\n")
        head, body = raw.split(b"\r\n\r\n")
        connection, transport = self.connect()
        connection.dataReceived(head + b"\r\n\r\n")
        self.assertEqual(transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        transport.clear()
        connection.dataReceived(body)
        self.assertEqual([status for status, _, _ in answers(transport.value())], [200])

    # -- answering -------------------------------------------------------------------------

    def test_keep_alive_after_an_error_answer(self):
        found, transport = self.exchange(request(path=b"/nowhere"), request(body=b"not json", method=b"PUT"),
                                         request())
        self.assertEqual([status for status, _, _ in found], [404, 405, 200])
        self.assertTrue(transport.connected)
        self.assertEqual(self.refusals, [])

    def test_http_1_0_is_answered_in_kind_and_closed(self):
        found, transport = self.exchange(request(version=b"HTTP/1.0") + request())
        self.assertTrue(transport.value().startswith(b"HTTP/1.0 200 OK\r\n"))
        [(_, headers, _)] = found
        self.assertNotIn("connection", headers)
        self.assertFalse(transport.connected)

    def test_connection_close_is_honoured(self):
        connection, transport = self.connect()
        connection.dataReceived(request(path=b"/held", extra=b"Connection: keep-alive, close\r\n"))
        connection.dataReceived(request())  # after the last request: dropped
        [held] = self.held.requests
        held.write(write_json(held, 200, "done"))
        held.finish()
        [(status, headers, _)] = answers(transport.value())
        self.assertEqual((status, headers["connection"]), (200, "close"))
        self.assertFalse(transport.connected)

    def test_head_has_the_length_of_get_and_no_body(self):
        connection, transport = self.connect()
        connection.dataReceived(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        [(_, got, _)] = answers(transport.value())
        transport.clear()
        connection.dataReceived(b"HEAD /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, rest = transport.value().partition(b"\r\n\r\n")
        self.assertEqual(rest, b"")
        self.assertIn(b"Content-Length: %s\r\n" % got["content-length"].encode(), head + b"\r\n")

    def test_work_that_fails_is_answered_500_once(self):
        work = Deferred()
        later = AnsweringResource(dispatcher=None)
        later.render_POST = lambda request: later.answer_later(request, work, "rid-1")
        self.root.putChild(b"later", later)
        connection, transport = self.connect()
        connection.dataReceived(request(path=b"/later"))
        self.assertEqual(len(later.waiting), 1)
        work.errback(RuntimeError("bug"))
        [(status, _, body)] = answers(transport.value())
        self.assertEqual((status, body["description"]), (500, "internal server error"))
        self.assertEqual(later.waiting, {})
        self.assertTrue(self.logs.matching("rid-1: unexpected error"))

    def test_an_exception_in_a_resource_is_answered_500_once(self):
        self.held.render = lambda request: 1 / 0
        found, transport = self.exchange(request(path=b"/held"), request())
        self.assertEqual([(s, b["description"]) for s, _, b in found],
                         [(500, "internal server error"), (200, "read")])
        self.flushLoggedErrors(ZeroDivisionError)

    # -- malformed requests ----------------------------------------------------------------

    def test_oversized_head(self):
        self.assertRefused(b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n", 431, "request head over")
        # refused as soon as it is too long, before its end arrives
        found, transport = self.exchange(b"GET / HTTP/1.1\r\nX: ", b"a" * (MAX_HEAD + 1))
        self.assertEqual([status for status, _, _ in found], [431])

    def test_too_many_header_fields(self):
        fields = b"".join(b"X-%d: y\r\n" % n for n in range(MAX_HEADERS + 1))
        self.assertRefused(b"GET / HTTP/1.1\r\n" + fields + b"\r\n", 431, f"more than {MAX_HEADERS} header fields")
        found, _ = self.exchange(b"GET /echo HTTP/1.1\r\n" + fields[:-len(b"X-100: y\r\n")] + b"\r\n")
        self.assertEqual([status for status, _, _ in found], [200])

    def test_bad_content_length(self):
        for value in (b"abc", b"-1", b"+5", b"1 2", b"0x10", b"1" * 19, b"\xd9\xa1"):
            self.assertRefused(b"POST /echo HTTP/1.1\r\nContent-Length: " + value + b"\r\n\r\n", 400,
                               "Content-Length must be a decimal number")
        self.assertRefused(b"POST /echo HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}", 400,
                           "content-length header field more than once")

    def test_content_length_with_transfer_encoding(self):
        self.assertRefused(b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"0\r\n\r\n", 400, "both Content-Length and Transfer-Encoding")
        self.assertRefused(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400,
                           "Transfer-Encoding must be chunked")

    def test_malformed_chunks(self):
        for chunks in (b"0x2\r\n{}\r\n0\r\n\r\n", b"-2\r\n{}\r\n0\r\n\r\n", b"2\r\n{}xx0\r\n\r\n",
                       b"2;ext\x00\r\n{}\r\n0\r\n\r\n", b"1" * 17 + b"\r\n"):
            self.assertRefused(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks, 400, "chunk")

    def test_obsolete_line_folding(self):
        self.assertRefused(b"GET /echo HTTP/1.1\r\nX-A: one\r\n two\r\n\r\n", 400, "obsolete line folding")

    def test_bare_lf(self):
        self.assertRefused(b"GET /echo HTTP/1.1\nHost: x\n\n", 400, "bare LF")
        self.assertRefused(b"GET /echo HTTP/1.1\r\nHost: x\nX: y\r\n\r\n", 400, "bare LF")
        self.assertRefused(b"GET /echo HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", 400, "bare CR")

    def test_malformed_lines(self):
        self.assertRefused(b"hello\r\n\r\n", 400, "malformed request line")
        self.assertRefused(b"GET  /echo HTTP/1.1\r\n\r\n", 400, "malformed request line")
        self.assertRefused(b"G(T /echo HTTP/1.1\r\n\r\n", 400, "malformed request line")
        self.assertRefused(b"GET /echo HTTP/2.0\r\n\r\n", 505, "only HTTP/1.1 and HTTP/1.0")
        self.assertRefused(b"GET /echo HTTP/1.1\r\nHost x\r\n\r\n", 400, "malformed header field")
        self.assertRefused(b"GET /echo HTTP/1.1\r\nHost : x\r\n\r\n", 400, "malformed header field")
        self.assertRefused(b"GET /echo HTTP/1.1\r\nX: a\x00b\r\n\r\n", 400, "NUL")

    def test_a_refusal_after_good_requests_answers_them_first(self):
        found, transport = self.exchange(request() + request() + b"GET / HTTP/9\r\n\r\n")
        self.assertEqual([status for status, _, _ in found], [200, 200, 400])
        self.assertFalse(transport.connected)


class ServerProperties(_Harness, unittest.TestCase):
    """Whatever the pieces the bytes arrive in, the answers are the same."""

    bodies = st.lists(st.binary(max_size=40).map(lambda raw: json.dumps(raw.hex()).encode()), min_size=1,
                      max_size=4)

    @EXAMPLES
    @given(bodies, st.lists(st.integers(min_value=1, max_value=60), max_size=30), st.booleans())
    def test_any_split_of_pipelined_requests(self, bodies, cuts, use_chunks):
        raw = b"".join(chunked(body, [3, 5]) if use_chunks and n % 2 else request(body=body)
                       for n, body in enumerate(bodies))
        segments, rest = [], raw
        for cut in cuts:
            segments.append(rest[:cut])
            rest = rest[cut:]
        segments.append(rest)
        found, transport = self.exchange(*[segment for segment in segments if segment])
        self.assertEqual([(s, b["data"]["length"]) for s, _, b in found], [(200, len(body)) for body in bodies])
        self.assertTrue(transport.connected)
        self.assertEqual(self.refusals, [])

    @EXAMPLES
    @given(st.binary(max_size=200), st.sampled_from([b"", b"\r\n\r\n", b"\r\n"]))
    def test_arbitrary_bytes_are_answered_json_or_wait(self, raw, end):
        found, transport = self.exchange(b"POST /echo HTTP/1.1\r\n" + raw + end)
        for status, headers, body in found:
            self.assertEqual(body["code"], status)
            self.assertEqual(headers["content-type"], "application/json")
            self.assertIn(status, (200, 400, 404, 405, 415, 431))
        refused = [headers for _, headers, _ in found if headers.get("connection") == "close"]
        self.assertEqual(transport.connected, not refused)
        self.assertEqual([line for line in self.logs.lines if " ERROR " in line], [])
