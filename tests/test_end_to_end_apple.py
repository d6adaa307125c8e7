"""/push through the daemon to the fake APNs: what arrives, and what the caller hears."""

from __future__ import annotations

import os
import time

from twisted.internet import defer, reactor
from twisted.trial import unittest

from sylkpush.applications.base import session_id
from sylkpush.testing.fake_apns import FakeAPNs
from tests.helpers import post, start_server, wakeup

TOKEN = "0a1b2c3d" * 8


class EndToEndAppleTests(unittest.TestCase):

    @defer.inlineCallbacks
    def setUp(self):
        self.fake = FakeAPNs(reactor, directory=os.path.abspath(self.mktemp()))
        yield self.fake.start()
        self.addCleanup(self.fake.stop)
        applications = (self.fake.applications_ini("com.example.sylk.prod", "sylk", auth="certificate", voip=True)
                        + self.fake.applications_ini("org.linphone.phone", "linphone", auth="token"))
        self.server, url = start_server(self, applications, find_client=None)
        self.push_url = url + "/push"
        # the clients connect at start-up; wait until both are up
        for _ in range(100):
            if all(app.client.status()["state"] == "connected" for app in self.server.registry):
                break
            yield deferLater(0.02)

    @defer.inlineCallbacks
    def test_sylk_call_certificate_auth(self):
        before = int(time.time())
        code, body, _ = yield post(self.push_url, wakeup(app_id="com.example.sylk.prod", token=TOKEN))
        self.assertEqual(code, 200, body)
        self.assertEqual(body["data"]["url"], f"https://{self.fake.authority}/3/device/{TOKEN}")
        self.assertEqual((body["data"]["platform"], body["data"]["token"]), ("apple", TOKEN))
        [delivery] = self.fake.notifications
        self.assertEqual(delivery.auth, "certificate")
        self.assertEqual(delivery.token, TOKEN)
        headers = delivery.headers
        self.assertEqual((headers["apns-push-type"], headers["apns-topic"], headers["apns-priority"]),
                         ("voip", "com.example.sylk.voip", "10"))
        self.assertTrue(before + 120 <= int(headers["apns-expiration"]) <= int(time.time()) + 120)
        self.assertNotIn("authorization", headers)
        self.assertEqual(delivery.payload, {
            "event": "incoming_session", "call-id": "call-1@example.com",
            "session-id": session_id("call-1@example.com"), "media-type": "audio",
            "from_uri": "alice@example.com", "from_display_name": "Alice", "to_uri": "bob@example.com"})

    @defer.inlineCallbacks
    def test_sylk_cancel(self):
        code, body, _ = yield post(self.push_url, wakeup(app_id="com.example.sylk.prod", token=TOKEN,
                                                         event="cancel", media_type=None, reason="busy"))
        self.assertEqual(code, 200, body)
        [delivery] = self.fake.notifications
        self.assertEqual((delivery.headers["apns-push-type"], delivery.headers["apns-topic"],
                          delivery.headers["apns-priority"]), ("background", "com.example.sylk", "5"))
        self.assertEqual(delivery.payload, {
            "event": "cancel", "call-id": "call-1@example.com",
            "session-id": session_id("call-1@example.com"), "reason": "busy",
            "aps": {"content-available": 1}})

    @defer.inlineCallbacks
    def test_linphone_call_token_auth(self):
        code, body, _ = yield post(self.push_url, wakeup(app_id="org.linphone.phone", token=TOKEN,
                                                         event=None, silent=False))
        self.assertEqual(code, 200, body)
        [delivery] = self.fake.notifications
        self.assertEqual(delivery.auth, "token")
        self.assertEqual((delivery.headers["apns-push-type"], delivery.headers["apns-topic"]),
                         ("voip", "org.linphone.phone.voip"))
        payload = dict(delivery.payload)
        send_time = payload.pop("send-time")
        self.assertRegex(send_time, r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
        self.assertEqual(payload, {
            "aps": {"alert": {"loc-key": "IC_MSG", "loc-args": ["alice@example.com"]},
                    "sound": "msg.caf", "badge": 1},
            "pn_ttl": 2592000, "call-id": "call-1@example.com"})

    @defer.inlineCallbacks
    def test_invalid_tokens_answer_410(self):
        self.fake.answer_token(TOKEN, 410, "Unregistered")
        code, body, _ = yield post(self.push_url, wakeup(app_id="com.example.sylk.prod", token=TOKEN))
        self.assertEqual(code, 410)
        self.assertTrue(body["data"]["reason"].startswith("Unregistered - "), body)
        self.assertEqual(body["data"]["body"]["reason"], "Unregistered")
        code, body, _ = yield post(self.push_url, wakeup(app_id="com.example.sylk.prod", token="not-hex"))
        self.assertEqual(code, 410)
        self.assertTrue(body["data"]["reason"].startswith("BadDeviceToken - "), body)
        self.assertEqual(self.fake.notifications, [])

    @defer.inlineCallbacks
    def test_other_refusals_are_passed_on(self):
        self.fake.answer_token(TOKEN, 400, "BadTopic")
        code, body, _ = yield post(self.push_url, wakeup(app_id="com.example.sylk.prod", token=TOKEN))
        self.assertEqual(code, 400)
        self.assertTrue(body["description"].startswith("push notification failed: BadTopic - "), body)


def deferLater(delay):
    from twisted.internet import task
    return task.deferLater(reactor, delay, lambda: None)


class CustomApplicationAppleTests(unittest.TestCase):
    """config/applications/myapp.py rendering its own payload, delivered by the fake APNs."""

    @defer.inlineCallbacks
    def test_myapp_through_the_fake(self):
        fake = FakeAPNs(reactor, directory=os.path.abspath(self.mktemp()))
        yield fake.start()
        self.addCleanup(fake.stop)
        templates = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                 "config", "applications")
        _, url = start_server(self, fake.applications_ini("com.example.myapp", "myapp", auth="token"),
                              f"[applications]\nextra_applications_dir = {templates}\n", find_client=None)
        code, body, _ = yield post(url + "/push", wakeup(app_id="com.example.myapp", token=TOKEN,
                                                         event="message", media_type="chat", badge=4))
        self.assertEqual(code, 200, body)
        [delivery] = fake.notifications
        self.assertEqual((delivery.headers["apns-push-type"], delivery.headers["apns-topic"],
                          delivery.headers["apns-priority"]), ("alert", "com.example.myapp", "5"))
        self.assertEqual(delivery.payload, {
            "aps": {"alert": {"title": "Alice", "body": "message from alice@example.com"},
                    "sound": "default", "badge": 4},
            "event": "message", "call-id": "call-1@example.com"})
