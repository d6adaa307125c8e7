"""Requests an attacker would send: each gets an honest 4xx naming what is
wrong, one log line that cannot be forged, and never a 500 or a push."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys

import treq
from twisted.internet import defer
from twisted.trial import unittest

from sylkpush import logs
from sylkpush.web import MAX_BODY
from tests.doubles import capture_logs
from tests.helpers import SYLK_APPLE, SYLK_FIREBASE, RecordingClient, post, start_server, wakeup

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
        self.log_file = os.path.abspath(self.mktemp())
        root = logging.getLogger()
        saved = (list(root.handlers), root.level)
        self.patch(logs, "_forward_twisted_logs", lambda: None)
        self.patch(sys, "stderr", io.StringIO())
        logs.setup_logging(foreground=True, log_file=self.log_file)

        def restore():
            logs.stop_logging()
            for handler in list(root.handlers):
                root.removeHandler(handler)
            for handler in saved[0]:
                root.addHandler(handler)
            root.setLevel(saved[1])
        self.addCleanup(restore)

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
        self.assertIn("INFO sylkpush.test: delivered lone \\udc80 surrogate \\x1b[2J", lines[-1])
