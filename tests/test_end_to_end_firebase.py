"""/push through the daemon to the fake FCM: what arrives, and what the caller hears."""

from __future__ import annotations

import json
import os

from twisted.internet import defer, reactor
from twisted.trial import unittest

from sylkpush.applications.base import session_id
from sylkpush.testing.fake_fcm import FakeFCM
from tests.firebase_helpers import service_key
from tests.helpers import post, start_server, wakeup

TOKEN = "fcm-token-1:APA91b" + "x" * 20


class EndToEndFirebaseTests(unittest.TestCase):

    @defer.inlineCallbacks
    def setUp(self):
        self.fake = FakeFCM(reactor, os.path.abspath(self.mktemp()), service_key=service_key())
        yield self.fake.start()
        self.addCleanup(self.fake.stop)
        applications = (self.fake.applications_ini("com.example.sylk", app_type="sylk")
                        + self.fake.applications_ini("org.linphone.phone", app_type="linphone",
                                                             legacy=True))
        self.server, url = start_server(self, applications, find_client=None)
        self.push_url = url + "/push"

    def android(self, **overrides):
        return wakeup(platform="android", token=TOKEN, **overrides)

    @defer.inlineCallbacks
    def test_sylk_call(self):
        code, body, _ = yield post(self.push_url, self.android(from_display_name=None, **{"from-display-name": None}))
        self.assertEqual(code, 200, body)
        self.assertEqual(body["data"]["url"], self.fake.push_url)
        self.assertTrue(body["data"]["body"]["name"].startswith("projects/sylk-fake/messages/"))
        [message] = self.fake.messages
        self.assertEqual(message, {
            "token": TOKEN,
            "data": {"event": "incoming_session", "call-id": "call-1@example.com",
                     "session-id": session_id("call-1@example.com"), "media-type": "audio",
                     "from_uri": "alice@example.com", "from_display_name": "alice@example.com",
                     "to_uri": "bob@example.com"},
            "android": {"priority": "high", "ttl": "60s"}})

    @defer.inlineCallbacks
    def test_sylk_transfer_metadata_is_a_string(self):
        code, body, _ = yield post(self.push_url, self.android(
            event="transfer", media_type="file-transfer", filename="a.pdf", filetype="application/pdf"))
        self.assertEqual(code, 200, body)
        [message] = self.fake.messages
        self.assertEqual(json.loads(message["data"]["metadata"]),
                         {"filename": "a.pdf", "filetype": "application/pdf"})
        self.assertEqual(message["notification"]["title"], "New file")

    @defer.inlineCallbacks
    def test_linphone_legacy(self):
        code, body, _ = yield post(self.push_url, self.android(app_id="org.linphone.phone", event=None))
        self.assertEqual(code, 200, body)
        [document] = self.fake.legacy_messages
        data = dict(document["data"])
        self.assertRegex(data.pop("send-time"), r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
        self.assertEqual(data, {"call-id": "call-1@example.com", "sip-from": "alice@example.com",
                                "loc-key": "", "loc-args": "alice@example.com"})
        self.assertEqual((document["to"], document["priority"], document["time_to_live"]),
                         (TOKEN, "high", 2419199))

    @defer.inlineCallbacks
    def test_unregistered_token_answers_410(self):
        self.fake.unregister(TOKEN)
        code, body, _ = yield post(self.push_url, self.android())
        self.assertEqual(code, 410, body)
        self.assertIn("UNREGISTERED", json.dumps(body["data"]["body"]))
        code, body, _ = yield post(self.push_url, self.android(app_id="org.linphone.phone", event=None))
        self.assertEqual(code, 410, body)

    @defer.inlineCallbacks
    def test_other_errors_are_passed_on(self):
        self.fake.script(TOKEN, "SENDER_ID_MISMATCH")
        code, body, _ = yield post(self.push_url, self.android())
        self.assertEqual(code, 403, body)
        self.assertIn("SENDER_ID_MISMATCH", json.dumps(body["data"]["body"]))
