"""Certificates close to expiry: daily warnings, /health and /metrics."""

from __future__ import annotations

import logging
import os
import time

from treq.client import HTTPClient
from twisted.internet import defer, reactor, ssl
from twisted.internet.task import Clock
from twisted.trial import unittest
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from sylkpush.expiry import DAY, Credential, ExpiryWatch, pem_file_not_after
from sylkpush.testing.certs import CertificateAuthority
from tests.helpers import RecordingClient, post, start_server

APPLE_WITH_CERTIFICATE = """
[sylk-ios]
app_id = com.example.sylk
app_type = sylk
app_platform = apple
apple_certificate = {path}
"""


def credential(name, expires_in, clock, section="s"):
    return Credential("apple_certificate", f"/etc/{name}.pem", clock.seconds() + expires_in,
                      section, f"com.example.{name}", "apple")


class WatchTests(unittest.TestCase):
    """The daily warning, driven by a Clock."""

    def setUp(self):
        self.clock = Clock()
        self.credentials = []
        self.watch = ExpiryWatch(lambda: self.credentials, self.clock)
        self.messages = []
        handler = logging.Handler()
        handler.emit = lambda record: self.messages.append(record.getMessage())
        logger = logging.getLogger("sylkpush.expiry")
        logger.addHandler(handler)
        self.addCleanup(logger.removeHandler, handler)
        self.addCleanup(self.watch.stop)

    def days(self, count):
        for _ in range(count):
            self.clock.advance(DAY)

    def test_once_a_day_from_30_days_before(self):
        self.credentials.append(credential("a", 40 * DAY - 60, self.clock, "a-ios"))
        self.watch.start()
        self.days(9)
        self.assertEqual(self.messages, [])
        self.days(1)  # a minute less than 30 days left
        [first] = self.messages
        self.assertIn("application [a-ios] (Apple com.example.a): its apple_certificate /etc/a.pem expires on ", first)
        self.assertIn("(in 29 days): replace the file and reload (SIGHUP)", first)
        self.days(29)
        self.assertEqual(len(self.messages), 30)
        self.assertIn("(within a day)", self.messages[-1])
        self.days(2)
        self.assertEqual(len(self.messages), 32)
        self.assertIn("expired on", self.messages[-1])
        self.assertIn("(1 day ago)", self.messages[-1])

    def test_one_warning_per_certificate(self):
        self.credentials += [credential("a", 5 * DAY, self.clock), credential("b", 7 * DAY, self.clock),
                             credential("c", 90 * DAY, self.clock)]
        self.watch.start()
        self.assertEqual(len(self.messages), 2)
        self.days(1)
        self.assertEqual(len(self.messages), 4)

    def test_reload_warns_only_about_new_certificates(self):
        self.credentials.append(credential("a", 5 * DAY, self.clock))
        self.watch.start()
        self.watch.check(only_new=True)
        self.assertEqual(len(self.messages), 1)
        self.credentials.append(credential("b", 5 * DAY, self.clock))
        self.watch.check(only_new=True)
        self.assertEqual(len(self.messages), 2)
        self.assertIn("com.example.b", self.messages[-1])

    def test_stopped_watch_is_quiet(self):
        self.credentials.append(credential("a", 5 * DAY, self.clock))
        self.watch.start()
        self.watch.stop()
        self.days(3)
        self.assertEqual(len(self.messages), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class CertificateFileTests(unittest.TestCase):

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.ca = CertificateAuthority()

    def write(self, name, data):
        path = os.path.join(self.directory, name)
        with open(path, "wb") as stream:
            stream.write(data)
        return path

    def test_not_after_of_a_pem_file(self):
        issued = self.ca.client("push", days=10)
        expected = time.time() + 10 * DAY
        for data in (issued.cert_pem, issued.combined_pem, issued.key_pem + issued.cert_pem):
            not_after = pem_file_not_after(self.write("c.pem", data))
            self.assertTrue(abs(not_after - expected) < 120, (not_after, expected))

    def test_unreadable_is_none(self):
        self.assertIsNone(pem_file_not_after(self.write("junk.pem", b"not a certificate")))
        self.assertIsNone(pem_file_not_after(os.path.join(self.directory, "missing.pem")))


class ServerTests(unittest.TestCase):
    """An expiring certificate in a running server: the log, /health, /metrics, reload."""

    def setUp(self):
        RecordingClient.instances = []
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.ca = CertificateAuthority()
        self.cert_path, _ = self.ca.client("com.example.sylk", days=10).write(self.directory, "apns", combined=True)

    def start(self, general=""):
        logger = logging.getLogger("sylkpush.expiry")
        with self.assertLogs(logger, logging.WARNING) as captured:
            logger.warning("marker")  # assertLogs fails when nothing at all is logged
            self.server, self.url = start_server(self, APPLE_WITH_CERTIFICATE.format(path=self.cert_path), general)
        return [r.getMessage() for r in captured.records][1:]

    @defer.inlineCallbacks
    def test_warning_health_and_metrics(self):
        [warning] = self.start()
        self.assertIn(f"application [sylk-ios] (Apple com.example.sylk): its apple_certificate {self.cert_path} "
                      f"expires on ", warning)
        self.assertIn("(in 9 days)", warning)
        code, body, _ = yield post(self.url + "/health", None, method="GET")
        self.assertEqual(code, 200)
        certificate = body["data"]["apple/com.example.sylk"]["certificate"]
        self.assertEqual((certificate["file"], certificate["days_left"]), (self.cert_path, 9))
        self.assertRegex(certificate["expires"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertEqual(body["server"], {})
        code, text, _ = yield post(self.url + "/metrics", None, method="GET")
        [line] = [line for line in text.splitlines()
                  if line.startswith("sylkpush_certificate_expiry_timestamp_seconds{")]
        self.assertIn('app="com.example.sylk"', line)
        self.assertIn('certificate="apple_certificate"', line)
        not_after = float(line.rsplit(" ", 1)[1])
        self.assertEqual(not_after, self.server.registry.get("com.example.sylk", "apple").config
                         .apple_certificate_not_after)
        self.assertTrue(abs(not_after - (time.time() + 10 * DAY)) < 120)

    @defer.inlineCallbacks
    def test_renewed_certificate_is_loaded_on_reload(self):
        self.start()
        [old_client] = RecordingClient.instances
        renewed = self.ca.client("com.example.sylk", days=365)
        with open(self.cert_path, "wb") as stream:
            stream.write(renewed.combined_pem)
        applied = yield self.server.reload()
        self.assertTrue(applied)
        app = self.server.registry.get("com.example.sylk", "apple")
        self.assertIsNot(app.client, old_client)
        self.assertTrue(old_client.stopped)
        code, body, _ = yield post(self.url + "/health", None, method="GET")
        self.assertEqual(body["data"]["apple/com.example.sylk"]["certificate"]["days_left"], 364)

    @defer.inlineCallbacks
    def test_listener_certificate(self):
        api = self.ca.issue("127.0.0.1", server_names=("127.0.0.1",), days=3)
        pem, _ = api.write(self.directory, "api", combined=True)
        warnings = self.start(f"[server]\ntls_certificate = {pem}\n")
        self.assertEqual(len(warnings), 2)
        self.assertTrue(any(w.startswith(f"the API's tls_certificate {pem} expires on ") and
                            "(in 2 days): replace the file and restart the server" in w for w in warnings), warnings)
        trust = ssl.Certificate.loadPEM(self.ca.cert_pem)
        agent = Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=trust),
                      pool=HTTPConnectionPool(reactor, persistent=False))
        response = yield HTTPClient(agent).get(self.url + "/health")
        body = yield response.json()
        server_certificate = body["server"]["tls_certificate"]
        self.assertEqual((server_certificate["file"], server_certificate["days_left"]), (pem, 2))


class BrokenSourceTests(unittest.TestCase):

    def test_a_failing_check_does_not_stop_the_daily_check(self):
        clock = Clock()
        calls = []

        def credentials():
            calls.append(clock.seconds())
            raise RuntimeError("boom")
        watch = ExpiryWatch(credentials, clock)
        self.addCleanup(watch.stop)
        with self.assertLogs("sylkpush.expiry", logging.ERROR):
            watch.start()
            clock.advance(DAY)
        self.assertEqual(calls, [0, DAY])
