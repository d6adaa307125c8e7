"""One bad application section leaves out that application only: at start
and on reload, whatever goes wrong while it is set up."""

from __future__ import annotations

import logging
import os

from twisted.internet import defer, reactor
from twisted.trial import unittest

from sylkpush.testing.fake_apns import FakeAPNs
from tests.doubles import capture_logs, start_ops_server, write_applications
from tests.helpers import SYLK_APPLE, RecordingClient, post, wakeup

TOKEN = "0a1b2c3d" * 8
NON_ASCII_FCM = """
[fcm-non-ascii]
app_id = com.example.fcm
app_type = sylk
app_platform = firebase
firebase_push_url = https://fcm.googleäpis.com/v1/projects/p/messages:send
firebase_authorization_key = AAAAlegacy
"""
EMPTY_LABEL = """
[apple-empty-label]
app_id = com.example.label
app_type = sylk
app_platform = apple
apple_push_url = a..b
"""


class RealClientsTests(unittest.TestCase):
    """The report's two sections, with the real Apple and Firebase clients."""

    @defer.inlineCallbacks
    def setUp(self):
        self.fake = FakeAPNs(reactor, directory=os.path.abspath(self.mktemp()))
        yield self.fake.start()
        self.addCleanup(self.fake.stop)
        self.good = self.fake.applications_ini("com.example.good", section="good")
        self.logs = capture_logs(self, logging.INFO)
        certificate = f"apple_certificate = {self.fake.client_cert_file}\napple_key = {self.fake.client_key_file}\n"
        self.bad = NON_ASCII_FCM + EMPTY_LABEL + certificate

    def assert_reported(self):
        [fcm] = self.logs.matching("application [fcm-non-ascii] disabled")
        self.assertRegex(fcm, r"line \d+: firebase_push_url must be an http\(s\) URL with a valid host name, in ASCII$")
        [label] = self.logs.matching("application [apple-empty-label] disabled")
        self.assertRegex(label, r"line \d+: apple_push_url must be host or host:port, with a valid host name$")
        self.assertFalse(self.logs.matching("Traceback"))

    @defer.inlineCallbacks
    def assert_in_health(self, url):
        """/health names the sections left out and why, not only the log."""
        _, body, _ = yield post(url + "/health", None, method="GET")
        problems = body["problems"]
        self.assertEqual(sorted(problems), ["apple-empty-label", "fcm-non-ascii"])
        self.assertEqual(problems["fcm-non-ascii"]["state"], "disabled")
        self.assertRegex(problems["fcm-non-ascii"]["reason"], r"firebase_push_url must be an http\(s\) URL")
        self.assertRegex(problems["apple-empty-label"]["reason"], r"apple_push_url must be host or host:port")

    @defer.inlineCallbacks
    def test_at_start(self):
        server, url, _ = start_ops_server(self, self.good + self.bad, find_client=None)
        self.assertEqual([app.config.section for app in server.registry], ["good"])
        self.assert_reported()
        yield self.assert_in_health(url)
        code, body, _ = yield post(url + "/push", wakeup(app_id="com.example.good", token=TOKEN))
        self.assertEqual(code, 200, body)

    @defer.inlineCallbacks
    def test_on_reload(self):
        server, url, directory = start_ops_server(self, self.good, find_client=None)
        added = self.fake.applications_ini("com.example.added", section="added")
        write_applications(directory, self.good + self.bad + added)
        applied = yield server.reload()
        self.assertTrue(applied)
        self.assert_reported()
        yield self.assert_in_health(url)
        for app_id in ("com.example.good", "com.example.added"):
            code, body, _ = yield post(url + "/push", wakeup(app_id=app_id, token=TOKEN))
            self.assertEqual(code, 200, body)


class Buggy(RecordingClient):
    """A client whose set-up fails in ways nobody planned for."""

    def __init__(self, app, reactor):
        if app.option("fail") == "init":
            raise RuntimeError("bug in __init__")
        super().__init__(app, reactor)

    def start(self):
        if self.app.option("fail") == "start":
            raise KeyError("bug in start")
        super().start()


def buggy_client_class(platform, extra_dir):
    return Buggy


def section(name, fail=""):
    return (f"[{name}]\napp_id = com.example.{name}\napp_type = sylk\napp_platform = apple\n"
            + (f"fail = {fail}\n" if fail else ""))


class AnyFailureTests(unittest.TestCase):

    def setUp(self):
        RecordingClient.instances = []
        self.logs = capture_logs(self, logging.INFO)

    def assert_serving(self, url, *names):
        return defer.gatherResults([post(url + "/push", wakeup(app_id=f"com.example.{name}")) for name in names])

    @defer.inlineCallbacks
    def test_at_start(self):
        server, url, _ = start_ops_server(self, SYLK_APPLE + section("init", "init") + section("start", "start")
                                          + section("fine"), find_client=buggy_client_class)
        self.assertEqual(sorted(app.config.section for app in server.registry), ["fine", "sylk-ios"])
        [init] = self.logs.matching("application [init] disabled")
        self.assertIn("cannot be set up: RuntimeError: bug in __init__", init)
        [start] = self.logs.matching("application [start] disabled")
        self.assertIn("cannot be started: KeyError: 'bug in start'", start)
        [stopped] = [client for client in RecordingClient.instances if client.app.section == "start"]
        self.assertTrue(stopped.stopped)
        answers = yield self.assert_serving(url, "sylk", "fine")
        self.assertEqual([code for code, _, _ in answers], [200, 200])
        self.flushLoggedErrors(RuntimeError, KeyError)

    @defer.inlineCallbacks
    def test_on_reload(self):
        server, url, directory = start_ops_server(self, SYLK_APPLE + section("start"),
                                                  find_client=buggy_client_class)
        working = server.registry.get("com.example.start", "apple").client
        write_applications(directory, SYLK_APPLE + section("init", "init") + section("start", "start")
                           + section("added"))
        applied = yield server.reload()
        self.assertTrue(applied)
        # the section whose new client does not start keeps its working one
        self.assertIs(server.registry.get("com.example.start", "apple").client, working)
        self.assertIsNone(server.registry.get("com.example.init", "apple"))
        [kept] = self.logs.matching("application [start]:")  # one warning (besides the bug's traceback)
        self.assertIn("WARNING sylkpush.app_registry: application [start]: new settings not applied, its previous "
                      "working settings stay active: cannot be started: KeyError: 'bug in start'", kept)
        answers = yield self.assert_serving(url, "sylk", "start", "added")
        self.assertEqual([code for code, _, _ in answers], [200, 200, 200])
        self.flushLoggedErrors(RuntimeError, KeyError)
