"""What the daemon and the fakes write to their logs: no line per connection
from Twisted's factories, count lines that say which fake, one format for
the headers of every push service."""

from __future__ import annotations

import dataclasses
import json
import logging
import os

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial import unittest
from twisted.web import server

from sylkpush.config import load_settings
from sylkpush.http_pool import connection_pool
from sylkpush.service import PushServer
from sylkpush.testing.control import report_periodically
from sylkpush.testing.fake_apns import FakeAPNs
from sylkpush.testing.fake_fcm import FakeFCM
from tests.apple_helpers import FakeAPNsMixin
from tests.doubles import capture_logs
from tests.firebase_helpers import FakeFCMMixin, push_for, service_key, wait_until
from tests.helpers import post, wakeup
from tests.test_custom_modules import FakeMypns, config_dir_with_templates, mypns_app
from tests.test_remote_log import LogCollector


def quiet_site(resource):
    site = server.Site(resource)
    site.noisy = False  # the test's own listeners must not be what is heard
    return site


class FactoryLinesTests(unittest.TestCase):
    """Twisted logs "Starting factory"/"Stopping factory" for each noisy
    factory it starts: for a pool, at every connection and reconnection."""

    def setUp(self):
        self.heard = []

        def observer(event):
            text = event.get("log_format") or " ".join(str(part) for part in event.get("message", ()))
            if "Starting factory" in text or "Stopping factory" in text:
                self.heard.append(repr(event.get("factory", text)))
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        capture_logs(self)

    def listen(self, resource):
        port = reactor.listenTCP(0, quiet_site(resource), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}/"

    @defer.inlineCallbacks
    def test_connections_and_reconnections_say_nothing(self):
        apns = FakeAPNs(reactor, directory=os.path.abspath(self.mktemp()))
        yield apns.start()
        self.addCleanup(apns.stop)
        fcm = FakeFCM(reactor, os.path.abspath(self.mktemp()), project="sylk-test", service_key=service_key())
        yield fcm.start()
        self.addCleanup(fcm.stop)
        collector = LogCollector()
        log_url = self.listen(collector) + "log"
        mypns = FakeMypns()
        applications = "".join(
            section + f"log_remote_urls = {log_url}\n" for section in (
                apns.applications_ini("com.example.sylk", "sylk"),
                "\n" + fcm.applications_ini("com.example.sylk", section="sylk-android"),
                mypns_app(self.listen(mypns) + "send")))
        directory = config_dir_with_templates(applications)
        settings = dataclasses.replace(load_settings(directory, host="127.0.0.1", port=0),
                                       spool_dir=os.path.join(directory, "spool"))
        push_server = PushServer(settings, reactor)
        push_server.startService()
        self.addCleanup(push_server.stopService)
        url = f"http://127.0.0.1:{push_server.port.getHost().port}/push"
        apple = push_server.registry.get("com.example.sylk", "apple").client
        caller = connection_pool(reactor)  # the test's own requests must not be what is heard either
        self.addCleanup(caller.closeCachedConnections)
        for round_ in range(2):
            yield wait_until(lambda: apple.connection_status()["state"] == "connected")
            for platform, app_id in (("apple", "com.example.sylk"), ("firebase", "com.example.sylk"),
                                     ("mypns", "com.example.mine")):
                request = wakeup(platform=platform, call_id=f"{platform}-{round_}", **{"app-id": app_id})
                code, body, _ = yield post(url, request, pool=caller)
                self.assertEqual(code, 200, body)
            yield wait_until(lambda: not push_server.remote_log.in_flight)
            if not round_:  # both fakes crash and come back: every client connects again
                yield apns.restart()
                yield fcm.restart()
        self.assertEqual(len(collector.received), 6)
        self.assertEqual(self.heard, [])


class FakeCountLineTests(unittest.TestCase):

    def test_each_count_line_names_its_fake(self):
        logs = capture_logs(self)
        clock = Clock()
        fake = FakeAPNs(clock, directory=os.path.abspath(self.mktemp()), port=18443)
        fake.requests_received = 3
        report_periodically(clock, fake, f"fake APNs {fake.authority}").clock.advance(10)
        [line] = logs.matching("requests")
        self.assertIn("INFO sylkpush.testing.control: fake APNs 127.0.0.1:18443: requests 3, delivered 0", line)


class HeaderLineTests:
    """Debug lines of a push: ``outgoing headers`` and ``incoming <status>
    headers`` hold one JSON object, the authorization value redacted."""

    def header_lines(self, logs):
        found = {}
        for line in logs.lines:
            for kind in ("outgoing headers ", "incoming 200 headers "):
                if kind in line:
                    found[kind.strip()] = json.loads(line.split(kind, 1)[1])
        return found


class AppleHeaderLineTests(HeaderLineTests, FakeAPNsMixin, unittest.TestCase):

    auth = "token"

    @defer.inlineCallbacks
    def test_headers_are_json(self):
        logs = capture_logs(self, logging.DEBUG)
        result = yield self.client.send(self.push())
        self.assertEqual(result.code, 200)
        found = self.header_lines(logs)
        self.assertEqual(found["outgoing headers"]["authorization"], "<redacted>")
        self.assertEqual(found["outgoing headers"][":method"], "POST")
        self.assertIn("apns-id", found["incoming 200 headers"])
        self.assertTrue(logs.matching("incoming body"))


class FirebaseHeaderLineTests(HeaderLineTests, FakeFCMMixin, unittest.TestCase):

    @defer.inlineCallbacks
    def test_headers_are_json(self):
        logs = capture_logs(self, logging.DEBUG)
        result = yield self.client().send(push_for("token-1", reactor))
        self.assertEqual(result.code, 200)
        found = self.header_lines(logs)
        # HTTP/2: header names are lower case
        self.assertEqual(found["outgoing headers"]["authorization"], "<redacted>")
        self.assertIn("content-type", found["incoming 200 headers"])
        self.assertTrue(logs.matching("incoming body"))
