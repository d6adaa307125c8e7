"""/health and /metrics follow results, not only connections: an application
whose pushes keep failing is ``failing`` and not up, with when and why."""

from __future__ import annotations

import os

from twisted.internet import defer, reactor
from twisted.internet.interfaces import IHostnameResolver
from twisted.trial import unittest
from zope.interface import implementer

from sylkpush.pns.apple import AppleClient
from sylkpush.pns.firebase import FirebaseClient
from sylkpush.testing.fake_apns import FakeAPNs
from sylkpush.testing.fake_fcm import FakeFCM
from tests.doubles import capture_logs
from tests.firebase_helpers import wait_until
from tests.helpers import post, start_server, wakeup
from tests.test_monitoring import labels, samples

#: the wake-up is answered 202 at once and delivered in the background
ANSWER_AT_ONCE = "[server]\nreturn_async = false\n"


@implementer(IHostnameResolver)
class NoSuchNames:
    """A name resolver that finds nothing for ``*.invalid`` (as DNS would
    answer NXDOMAIN) and asks ``real`` for any other name: no test leaves
    the machine for a lookup."""

    def __init__(self, real):
        self.real = real

    def resolveHostName(self, receiver, hostName, portNumber=0, addressTypes=None,  # noqa: N802, N803
                        transportSemantics="TCP"):  # noqa: N803
        if not hostName.endswith(".invalid"):
            return self.real.resolveHostName(receiver, hostName, portNumber, addressTypes, transportSemantics)
        receiver.resolutionBegan(None)
        receiver.resolutionComplete()
        return None



class FailingApplicationTests(unittest.TestCase):

    def setUp(self):
        self.logs = capture_logs(self)

    @defer.inlineCallbacks
    def health(self, url):
        code, body, _ = yield post(url + "/health", None, method="GET")
        return code, body

    @defer.inlineCallbacks
    def test_firebase_host_that_does_not_resolve_is_failing_not_ready(self):
        self.patch(FirebaseClient, "reconnect_initial", 0.01)
        self.addCleanup(reactor.installNameResolver, reactor.installNameResolver(NoSuchNames(reactor.nameResolver)))
        fake = FakeFCM(reactor, os.path.abspath(self.mktemp()), project="sylk-test")
        yield fake.start()
        self.addCleanup(fake.stop)
        section = ("[sylk-android]\napp_id = com.example.sylk\napp_type = sylk\napp_platform = firebase\n"
                   "firebase_push_url = https://fcm.example.invalid/v1/projects/sylk-test/messages:send\n"
                   f"firebase_authorization_file = {fake.service_account_file}\ntls_ca_file = {fake.ca_file}\n")
        server, url = start_server(self, section, ANSWER_AT_ONCE, find_client=None)
        client = server.registry.get("com.example.sylk", "firebase").client
        code, _, _ = yield post(url + "/push", wakeup(platform="firebase"))
        self.assertEqual(code, 202)
        # the push waits while its connections cannot be made (HTTP/2 pool): connects fail, not attempts
        yield wait_until(lambda: client.connect_failures >= 3)
        code, body = yield self.health(url)
        self.assertEqual((code, body["description"]), (503, "no application can deliver"))
        status = body["data"]["firebase/com.example.sylk"]
        self.assertEqual((status["state"], status["up"], status["last_success"]), ("failing", False, None))
        self.assertGreaterEqual(status["connect_failures"], 3)
        self.assertRegex(status["last_failure"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertIn("connection to fcm.example.invalid failed: DNS lookup failed", status["last_failure_reason"])
        self.assertEqual(status["retrying"] + status["in_flight"] + status["queued"], 1)
        self.assertTrue(self.logs.matching("Firebase client of com.example.sylk failing: 3 connects in a row "
                                           "failed, the last: connection to fcm.example.invalid failed"))
        _, text, _ = yield post(url + "/metrics", None, method="GET")
        found = samples(text)
        app = labels(app="com.example.sylk", platform="firebase")
        self.assertEqual(found[("sylkpush_application_up", app)], 0.0)
        self.assertGreaterEqual(found[("sylkpush_consecutive_connect_failures", app)], 3.0)
        self.assertIn(("sylkpush_last_failure_timestamp_seconds", app), found)
        self.assertNotIn(("sylkpush_last_success_timestamp_seconds", app), found)

    @defer.inlineCallbacks
    def test_apple_answering_500_is_failing_until_it_delivers_again(self):
        self.patch(AppleClient, "retry_initial", 0.01)
        fake = FakeAPNs(reactor, directory=os.path.abspath(self.mktemp()))
        yield fake.start()
        self.addCleanup(fake.stop)
        fake.fail_all(500)
        server, url = start_server(self, fake.applications_ini("com.example.sylk", "sylk"), ANSWER_AT_ONCE,
                                   find_client=None)
        client = server.registry.get("com.example.sylk", "apple").client
        yield wait_until(lambda: client.connection_status()["state"] == "connected")
        code, body = yield self.health(url)
        self.assertEqual(body["data"]["apple/com.example.sylk"]["state"], "connected")
        yield post(url + "/push", wakeup())
        yield wait_until(lambda: client.consecutive_failures >= 3)
        code, body = yield self.health(url)
        status = body["data"]["apple/com.example.sylk"]
        self.assertEqual((code, status["state"], status["up"]), (503, "failing", False))
        self.assertEqual(status["connections"], 2)  # connected, and still failing
        self.assertEqual(status["last_failure_reason"], "500 InternalServerError - An internal server error occurred.")
        fake.fail_all(None)
        yield wait_until(lambda: client.last_success is not None)
        code, body = yield self.health(url)
        status = body["data"]["apple/com.example.sylk"]
        self.assertEqual((code, status["state"], status["up"], status["consecutive_failures"]),
                         (200, "connected", True, 0))
        self.assertRegex(status["last_success"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertEqual(len(fake.notifications), 1)
        self.assertTrue(self.logs.matching("APNs client of com.example.sylk delivers again after"))
        _, text, _ = yield post(url + "/metrics", None, method="GET")
        found = samples(text)
        app = labels(app="com.example.sylk", platform="apple")
        self.assertEqual(found[("sylkpush_last_success_timestamp_seconds", app)], client.last_success)
        self.assertEqual(found[("sylkpush_consecutive_failures", app)], 0.0)

    @defer.inlineCallbacks
    def test_apple_connects_that_keep_failing_are_failing_until_one_is_ready(self):
        self.patch(AppleClient, "reconnect_initial", 0.01)
        self.patch(AppleClient, "reconnect_max", 0.05)
        fake = FakeAPNs(reactor, directory=os.path.abspath(self.mktemp()))
        yield fake.start()
        self.addCleanup(fake.stop)
        yield fake.stop()
        server, url = start_server(self, fake.applications_ini("com.example.sylk", "sylk"), find_client=None)
        client = server.registry.get("com.example.sylk", "apple").client
        yield wait_until(lambda: client.connect_failures >= 3)
        code, body = yield self.health(url)
        status = body["data"]["apple/com.example.sylk"]
        self.assertEqual((code, status["state"], status["up"]), (503, "failing", False))
        self.assertIn(f"connection to {fake.authority} failed", status["last_failure_reason"])
        self.assertEqual(status["last_error"], status["last_failure_reason"])
        yield fake.start()
        yield wait_until(lambda: client.connection_status()["state"] == "connected")
        code, body = yield self.health(url)
        status = body["data"]["apple/com.example.sylk"]
        self.assertEqual((code, status["state"], status["connect_failures"]), (200, "connected", 0))
