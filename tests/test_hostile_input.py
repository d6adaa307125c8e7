"""Requests an attacker would send: each gets an honest 4xx naming what is
wrong, one log line that cannot be forged, and never a 500 or a push."""

from __future__ import annotations

import json
import logging
import re

import treq
from twisted.internet import defer, protocol, reactor
from twisted.internet.defer import Deferred
from twisted.trial import unittest

from sylkpush import logs
from sylkpush.web import MAX_BODY
from tests.doubles import capture_logs, log_to_file
from tests.helpers import SYLK_APPLE, SYLK_FIREBASE, RecordingClient, post, start_server, wakeup
from tests.test_reload import until

FORGED = "\r\n2024-01-01 00:00:00,000 ERROR sylkpush.web: injected"


class HostileBodies(unittest.TestCase):

    def setUp(self):
        RecordingClient.instances = []
        self.server, self.url = start_server(self, SYLK_APPLE + SYLK_FIREBASE)
        self.push_url = self.url + "/push"
        self.logs = capture_logs(self, logging.INFO)

    def sent(self):
        return sum(len(client.sent) for client in RecordingClient.instances)

    @defer.inlineCallbacks
    def send(self, data: bytes, content_type=b"application/json"):
        headers = {b"content-type": [content_type]} if content_type is not None else {}
        response = yield treq.post(self.push_url, data=data, headers=headers, persistent=False)
        body = yield response.json()
        self.assertEqual(body["code"], response.code)
        return response.code, body

    # item 1: the 404 line logs the app-id, whatever its length

    @defer.inlineCallbacks
    def test_a_huge_field_is_logged_capped(self):
        app_id = "eyJ" * 21000
        code, _, _ = yield post(self.push_url, wakeup(app_id=app_id))
        self.assertEqual(code, 404)
        [line] = self.logs.matching("refused request")
        self.assertLess(len(line), 10_000)
        self.assertRegex(line, r"…\(630\d\d bytes\)$")

    # item 3: control characters and lone surrogates

    @defer.inlineCallbacks
    def test_control_characters_in_a_field_are_refused_naming_it(self):
        for field in ("call-id", "from", "to", "device-id", "app-id", "token", "from-display-name"):
            for bad in (FORGED, "a\x1b[31mred", "a\x00b", "a\x85b"):
                code, body, _ = yield post(self.push_url, wakeup(**{field.replace("-", "_"): bad}))
                self.assertEqual(code, 400, (field, bad))
                self.assertEqual(body["data"], {"field": field})
                self.assertEqual(body["description"], f"{field} must not contain control characters "
                                                      "or lone surrogates")
        self.assertEqual(self.sent(), 0)
        for line in self.logs.lines:
            self.assertNotIn("\n", line)
            self.assertNotIn("\r", line)
            self.assertNotIn("\x1b", line)
        self.assertTrue(self.logs.matching("(call-id \\r\\n2024-01-01 00:00:00,000 ERROR sylkpush.web: injected)"))

    @defer.inlineCallbacks
    def test_a_message_body_may_span_lines(self):
        code, body, _ = yield post(self.push_url, wakeup(event="message", media_type="sms",
                                                      content="first line\nsecond\tline\r\n"))
        self.assertEqual(code, 200, body)
        code, body, _ = yield post(self.push_url, wakeup(event="message", media_type="sms", content="bell\x07"))
        self.assertEqual((code, body["data"]), (400, {"field": "content"}))

    # item 6: 500s for bad input

    @defer.inlineCallbacks
    def test_lone_surrogates_are_refused_naming_the_field(self):
        for field in ("call-id", "from", "token"):
            raw = json.dumps(wakeup()).replace('"' + wakeup()[field] + '"', '"a\\ud800b"').encode()
            code, body = yield self.send(raw)
            self.assertEqual((code, body["data"]), (400, {"field": field}), field)
        self.assertEqual(self.sent(), 0)

    @defer.inlineCallbacks
    def test_deep_nesting_is_refused(self):
        for raw in (b"[" * 30000, b"{\"a\":" * 12000, json.dumps(wakeup(extra=[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]])
                    ).encode()):
            code, body = yield self.send(raw)
            self.assertEqual(code, 400)
            self.assertRegex(body["description"], r"^request body is nested deeper than \d+ levels$")
        code, body = yield self.send(json.dumps(wakeup(extra=[[["fine"]]])).encode())
        self.assertEqual(code, 200, body)

    # item 9: content types a browser can send cross-site

    @defer.inlineCallbacks
    def test_content_types_other_than_json_are_refused(self):
        raw = json.dumps(wakeup()).encode()
        for content_type in (b"text/plain", b"text/plain;charset=UTF-8", b"application/x-www-form-urlencoded",
                             b"multipart/form-data; boundary=x", b"application/octet-stream"):
            code, body = yield self.send(raw, content_type)
            self.assertEqual(code, 415, content_type)
            self.assertIn("send application/json", body["description"])
        self.assertEqual(self.sent(), 0)
        for content_type in (b"application/json", b"application/json; charset=utf-8", b"APPLICATION/JSON",
                             b"application/vnd.example+json", None):
            code, body = yield self.send(raw, content_type)
            self.assertEqual(code, 200, (content_type, body))
        self.assertEqual(self.sent(), 5)

    # item 10

    @defer.inlineCallbacks
    def test_duplicate_keys_are_refused(self):
        raw = json.dumps(wakeup())[:-1].encode() + b', "platform": "firebase"}'
        code, body = yield self.send(raw)
        self.assertEqual((code, body["description"]), (400, "request body has the key 'platform' more than once"))
        self.assertEqual(self.sent(), 0)

    @defer.inlineCallbacks
    def test_badge_takes_ascii_digits_only(self):
        for badge in ("  7 ", "\u0667", "7\u00a0", "1_0", "+7", "-1", -1, 7.5, True):
            code, body, _ = yield post(self.push_url, wakeup(event="message", media_type="sms", badge=badge))
            self.assertEqual((code, body["data"]), (400, {"field": "badge"}), badge)
        code, body, _ = yield post(self.push_url, wakeup(event="message", media_type="sms", badge="7"))
        self.assertEqual(code, 200, body)
        [push] = [p for client in RecordingClient.instances for p in client.sent]
        self.assertEqual(push.payload["aps"]["badge"], 7)

    @defer.inlineCallbacks
    def test_refusals_are_logged_with_the_call_id(self):
        call = "refused-call@example.com"
        yield self.send(b'{"call-id": "' + call.encode() + b'", not json')
        yield self.send(json.dumps(wakeup(call_id=call, content="x" * MAX_BODY)).encode())
        yield self.send(json.dumps(wakeup(call_id=call, media_type="fax")).encode())
        yield self.send(json.dumps(wakeup(call_id=call)).encode(), b"text/plain")
        yield self.send(b"[1, 2")
        lines = self.logs.matching("refused request from 127.0.0.1")
        self.assertEqual(len(lines), 5, lines)
        for line, code in zip(lines, (400, 413, 400, 415, 400)):
            self.assertIn(f": {code} ", line)
        for line in lines[:3]:
            self.assertIn(f"(call-id {call})", line)
        self.assertNotIn("call-id", lines[4])


class ForgedLinesInTheLogFile(unittest.TestCase):
    """Through the daemon's own logging set-up: every line of push.log is a
    record of ours, and a lone surrogate no longer loses a line."""

    def setUp(self):
        self.log_file = log_to_file(self)

    @defer.inlineCallbacks
    def test_every_line_is_a_record(self):
        _, url = start_server(self, SYLK_APPLE)
        for field in ("call-id", "from", "app-id"):
            code, _, _ = yield post(url + "/push", wakeup(**{field.replace("-", "_"): FORGED}))
            self.assertEqual(code, 400)
        raw = json.dumps(wakeup(call_id="surrogate-call")).replace("surrogate-call", "lone\\udc80").encode()
        response = yield treq.post(url + "/push", data=raw, headers={b"content-type": [b"application/json"]},
                                   persistent=False)
        self.assertEqual(response.code, 400)
        yield response.content()
        logging.getLogger("sylkpush.test").info("delivered %s", "lone \udc80 surrogate \x1b[2J")
        logs.stop_logging()
        with open(self.log_file, encoding="utf-8") as stream:
            lines = stream.read().splitlines()
        stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [a-z.]+: ")
        self.assertEqual([line for line in lines if not stamp.match(line)], [])
        self.assertFalse([line for line in lines if "ERROR" in line.split(":", 3)[2]])
        self.assertTrue([line for line in lines if "refused request" in line and "lone\\udc80" not in line])
        # other threads (the token storage's) may log after this test's line
        self.assertIn("INFO sylkpush.test: delivered lone \\udc80 surrogate \\x1b[2J", "\n".join(lines))


class RefusedAddresses(unittest.TestCase):
    """Item 8: access-list refusals are logged and counted, whatever the method."""

    @defer.inlineCallbacks
    def test_denied_requests_are_logged_counted_and_refused_for_every_method(self):
        captured = capture_logs(self, logging.INFO)
        server, url = start_server(self, SYLK_APPLE, "[server]\nallowed_hosts = 192.0.2.0/24\n")
        answer = yield raw_exchange(server.port.getHost().port, b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 403 "), answer)
        self.assertIn(b'"access denied by access list"', answer)
        code, _, _ = yield post(url + "/push", wakeup())
        self.assertEqual(code, 403)
        self.assertEqual(len(captured.matching("refused connection from 127.0.0.1: 403 not in allowed_hosts")), 2)
        text = server.metrics.exposition().decode()
        self.assertIn('sylkpush_refused_requests_total{code="403"} 2.0', text)


PUSH_REQUEST = b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class _Raw(protocol.Protocol):
    """A caller that sends what it is told, when it is told."""

    def __init__(self):
        self.received = b""
        self.closed: Deferred = Deferred()

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason=None):
        self.closed.callback(self.received)


@defer.inlineCallbacks
def open_raw(port):
    """A new TCP connection to the server."""
    raw = _Raw()
    yield protocol.ClientCreator(reactor, lambda: raw).connectTCP("127.0.0.1", port)
    return raw


@defer.inlineCallbacks
def raw_exchange(port: int, request: bytes):
    """Send ``request`` on a new TCP connection; all bytes received until the server closes it."""
    raw = yield open_raw(port)
    raw.transport.write(request)
    received = yield raw.closed
    return received


class Attacks(unittest.TestCase):
    """The attacks of the report, on loopback against a running server."""

    timeout = 60

    @defer.inlineCallbacks
    def test_half_sent_requests_from_a_denied_host_hold_no_connection(self):
        server, _ = start_server(self, SYLK_APPLE, "[server]\nallowed_hosts = 192.0.2.0/24\n")
        callers = []
        for _ in range(20):
            raw = yield open_raw(server.port.getHost().port)
            raw.transport.write(b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
            callers.append(raw)
        answers = yield defer.gatherResults([raw.closed for raw in callers])
        for answer in answers:
            self.assertTrue(answer.startswith(b"HTTP/1.1 403 "), answer)
        self.assertEqual(len(server.connections.protocols), 0)

    @defer.inlineCallbacks
    def test_idle_connections_at_the_limit_do_not_stop_pushes(self):
        server, url = start_server(self, SYLK_APPLE, "[server]\nmax_connections = 4\n")
        port = server.port.getHost().port
        idle = []
        for _ in range(4):
            idle.append((yield open_raw(port)))
        yield until(lambda: len(server.connections.protocols) == 4)
        for _ in range(3):
            code, _, _ = yield post(url + "/push", wakeup())
            self.assertEqual(code, 200)
        yield idle[0].closed  # the longest idle made room
        for _ in range(2):  # at the limit again with the second one
            idle.append((yield open_raw(port)))
        yield idle[1].closed  # the next longest idle made room
        self.assertEqual([raw.closed.called for raw in idle], [True, True, False, False, False, False])
        for raw in idle[2:]:
            raw.transport.loseConnection()

    @defer.inlineCallbacks
    def test_a_slow_sender_is_cut_at_the_request_timeout(self):
        server, url = start_server(self, SYLK_APPLE, "[server]\nrequest_timeout = 0.5\n")
        raw = yield open_raw(server.port.getHost().port)
        request = iter(bytes([byte]) for byte in PUSH_REQUEST * 10)

        timer = []

        def drip():
            raw.transport.write(next(request))
            timer[:] = [reactor.callLater(0.05, drip)]
        drip()
        answer = yield raw.closed
        timer[0].cancel()
        self.assertTrue(answer.startswith(b"HTTP/1.1 408 "), answer)
        code, _, _ = yield post(url + "/push", wakeup())
        self.assertEqual(code, 200)
