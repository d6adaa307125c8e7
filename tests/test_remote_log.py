"""Remote HTTP logging: shape, key logging, dead and silent URLs, the cap."""

from __future__ import annotations

import json
import os
import socket
import time

from twisted.internet import defer, reactor, task
from twisted.trial import unittest
from twisted.web import resource, server

from sylkpush.config import AppConfig
from sylkpush.dispatch import PreparedPush
from sylkpush.notification import parse_notification
from sylkpush.pns.base import OutgoingPush, PushResult
from sylkpush.app_registry import Application
from sylkpush.remote_log import remote_record
from tests.doubles import DelayedClient, capture_logs, start_ops_server
from tests.helpers import post, wakeup


class LogCollector(resource.Resource):
    """Records each remote-log POST; answers ``{"log_id": n}``, or never when ``silent``."""

    isLeaf = True

    def __init__(self, silent=False):
        super().__init__()
        self.silent = silent
        self.received = []
        self.waiting = []

    def render_POST(self, request):
        self.received.append(json.loads(request.content.read()))
        if self.silent:
            self.waiting.append(request)
            return server.NOT_DONE_YET
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"log_id": f"L{len(self.received)}", "other": 1}).encode()


def app_section(urls, timeout=2, key=""):
    return f"""
[sylk-ios]
app_id = com.example.sylk
app_type = sylk
app_platform = apple
log_remote_urls = {", ".join(urls)}
log_remote_timeout = {timeout}
log_remote_key = {key}
"""


def free_port():
    """A loopback port nobody listens on."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


class RemoteLogTests(unittest.TestCase):

    def setUp(self):
        DelayedClient.instances = []
        self.logs = capture_logs(self)

    def collector(self, silent=False):
        collector = LogCollector(silent)
        port = reactor.listenTCP(0, server.Site(collector), interface="127.0.0.1")
        self.addCleanup(port.stopListening)

        def finish_waiting():
            for request in collector.waiting:
                if not request._disconnected:
                    request.finish()
        self.addCleanup(finish_waiting)
        return collector, f"http://127.0.0.1:{port.getHost().port}/log"

    @defer.inlineCallbacks
    def until_logged(self, push_server):
        while push_server.remote_log.in_flight:
            yield task.deferLater(reactor, 0.01, lambda: None)

    @defer.inlineCallbacks
    def test_posts_the_record_to_every_url_and_logs_the_key(self):
        first, url1 = self.collector()
        second, url2 = self.collector()
        push_server, url, _ = start_ops_server(self, app_section([url1, url2], key="log_id"))
        request = wakeup()
        code, _, _ = yield post(url + "/push", request)
        self.assertEqual(code, 200)
        yield self.until_logged(push_server)
        [record] = first.received
        self.assertEqual(second.received, [record])
        self.assertEqual(record["request"], request)
        response = record["response"]
        self.assertEqual(set(response), {"code", "description", "push_url", "incoming_body",
                                         "outgoing_headers", "outgoing_body"})
        self.assertEqual(response["code"], 200)
        self.assertEqual(response["description"], "OK")
        self.assertEqual(response["push_url"], "https://push.test/a1b2c3d4")
        self.assertEqual(response["outgoing_headers"]["apns-push-type"], "voip")
        self.assertEqual(response["outgoing_body"]["call-id"], "call-1@example.com")
        self.assertEqual(record["server_ip"], "127.0.0.1")
        self.assertTrue(record["timestamp"].endswith("Z"))
        lines = self.logs.matching("log_id = L1")
        self.assertEqual(len(lines), 2)
        self.assertIn("incoming_session-com.example.sylk-call-1@example.com", lines[0])

    @defer.inlineCallbacks
    def test_silent_url_never_delays_the_answers(self):
        collector, log_url = self.collector(silent=True)
        push_server, url, _ = start_ops_server(self, app_section([log_url], timeout=30))
        latencies = []
        for i in range(20):
            started = time.monotonic()
            code, _, _ = yield post(url + "/push", wakeup(token=f"t{i}"))
            latencies.append(time.monotonic() - started)
            self.assertEqual(code, 200)
        # every answer came back while the remote logs were still unanswered
        self.assertEqual(push_server.remote_log.in_flight, 20)
        while len(collector.received) < 20:  # they did reach the silent server
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(push_server.remote_log.in_flight, 20)
        if os.environ.get("SYLKPUSH_FIGURES"):
            _, plain_url, _ = start_ops_server(self, app_section([]))
            plain = []
            for i in range(20):
                started = time.monotonic()
                yield post(plain_url + "/push", wakeup(token=f"t{i}"))
                plain.append(time.monotonic() - started)
            print(f"\npush latency with a silent remote-log URL: mean {1000 * sum(latencies) / 20:.1f} ms, "
                  f"max {1000 * max(latencies):.1f} ms; without remote logging: mean "
                  f"{1000 * sum(plain) / 20:.1f} ms, max {1000 * max(plain):.1f} ms (client double: 10 ms)")

    @defer.inlineCallbacks
    def test_timeout_costs_one_line(self):
        _, log_url = self.collector(silent=True)
        push_server, url, _ = start_ops_server(self, app_section([log_url], timeout=0.1))
        code, _, _ = yield post(url + "/push", wakeup())
        self.assertEqual(code, 200)
        yield self.until_logged(push_server)
        [line] = self.logs.matching("remote log to")
        self.assertIn("failed: no answer within 0.1 s", line)
        self.assertIn("WARNING", line)

    @defer.inlineCallbacks
    def test_dead_url_costs_one_line_per_push(self):
        dead = f"http://127.0.0.1:{free_port()}/log"
        push_server, url, _ = start_ops_server(self, app_section([dead]))
        for i in range(3):
            code, body, _ = yield post(url + "/push", wakeup(token=f"t{i}"))
            self.assertEqual(code, 200)
            self.assertEqual(body["data"]["reason"], "OK")
        yield self.until_logged(push_server)
        lines = self.logs.matching(f"remote log to {dead} failed")
        self.assertEqual(len(lines), 3)
        self.assertEqual(push_server.remote_log.failed, 3)

    @defer.inlineCallbacks
    def test_cap_drops_and_counts(self):
        collector, log_url = self.collector(silent=True)
        push_server, url, _ = start_ops_server(self, app_section([log_url], timeout=30))
        push_server.remote_log.max_concurrent = 5
        for i in range(8):
            code, _, _ = yield post(url + "/push", wakeup(token=f"t{i}"))
            self.assertEqual(code, 200)
        self.assertEqual(push_server.remote_log.in_flight, 5)
        self.assertEqual(push_server.remote_log.dropped, 3)
        self.assertEqual(len(self.logs.matching("dropped")), 3)

    def test_secret_headers_never_sent(self):
        config = AppConfig(section="s", app_id="com.example.sylk", app_type="sylk", platform="apple")
        notification = parse_notification(wakeup(), "sylk", "apple")
        headers = {"apns-topic": "com.example.sylk", "authorization": "bearer eyJsecret",
                   "Authorization": "key=AAAAsecret"}
        push = OutgoingPush("id", "a1b2c3d4", headers, {"x": 1}, 0.0)
        prepared = PreparedPush(notification, Application(config, object, object, None), push, "127.0.0.1")
        record = remote_record(prepared, PushResult(200, "OK", "https://x/"), "192.0.2.1", now=0)
        self.assertEqual(record["response"]["outgoing_headers"], {"apns-topic": "com.example.sylk"})
        self.assertNotIn("secret", json.dumps(record))
        self.assertEqual(record["timestamp"], "1970-01-01T00:00:00.000Z")
