"""The v2 API through the daemon to the fake APNs and FCM: stored devices, pushes to an account, 410s."""

from __future__ import annotations

import os

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from sylkpush.testing.fake_apns import FakeAPNs
from sylkpush.testing.fake_fcm import FakeFCM
from tests.firebase_helpers import service_key
from tests.helpers import post, start_server

VOIP_1, ALERT_1, VOIP_2 = "0a" * 32, "0b" * 32, "0c" * 32
FCM = "fcm-token-1:APA91b" + "y" * 20


class EndToEndV2Tests(unittest.TestCase):

    @defer.inlineCallbacks
    def setUp(self):
        self.apns = FakeAPNs(reactor, directory=os.path.abspath(self.mktemp()))
        self.fcm = FakeFCM(reactor, os.path.abspath(self.mktemp()), service_key=service_key())
        yield self.apns.start()
        yield self.fcm.start()
        self.addCleanup(self.apns.stop)
        self.addCleanup(self.fcm.stop)
        applications = (self.apns.applications_ini("com.example.sylk.prod", "sylk", voip=True)
                        + self.fcm.applications_ini("com.example.sylk.prod", section="fcm", app_type="sylk"))
        self.server, url = start_server(self, applications, find_client=None)
        self.tokens = url + "/v2/tokens/alice@example.com"
        for _ in range(200):
            if all(app.client.status()["state"] in ("connected", "ready") for app in self.server.registry):
                break
            yield task.deferLater(reactor, 0.02, lambda: None)
        for device, platform, token in (("iphone", "apple", f"{VOIP_1}-{ALERT_1}"), ("ipad", "apple", VOIP_2),
                                        ("pixel", "android", FCM)):
            code, body, _ = yield post(self.tokens, {"app-id": "com.example.sylk.prod", "platform": platform,
                                                     "token": token, "device-id": f"<urn:uuid:{device}>"})
            self.assertEqual(code, 200, body)

    def call(self, **changes):
        body = {"event": "incoming_session", "call-id": "c-1", "from": "bob@example.com", "to": "alice@example.com",
                "media-type": "video"}
        body.update(changes)
        return body

    @defer.inlineCallbacks
    def test_every_device_gets_the_call(self):
        code, body, _ = yield post(self.tokens + "/push", self.call())
        self.assertEqual(code, 200, body)
        self.assertEqual([(r["code"], r["platform"], r["token"]) for r in body["data"]],
                         [(200, "apple", VOIP_2), (200, "apple", VOIP_1), (200, "firebase", FCM)])
        self.assertEqual(sorted(d.token for d in self.apns.notifications), sorted([VOIP_1, VOIP_2]))
        self.assertEqual({d.headers["apns-push-type"] for d in self.apns.notifications}, {"voip"})
        [message] = self.fcm.messages
        self.assertEqual((message["token"], message["data"]["media-type"]), (FCM, "video"))

    @defer.inlineCallbacks
    def test_cancel_reaches_the_background_token(self):
        code, body, _ = yield post(self.tokens + "/push/iphone", self.call(event="cancel", reason="busy",
                                                                           **{"media-type": None}))
        self.assertEqual(code, 200, body)
        [delivery] = self.apns.notifications
        self.assertEqual((delivery.token, delivery.headers["apns-push-type"]), (ALERT_1, "background"))

    @defer.inlineCallbacks
    def test_tokens_the_push_services_reject_are_forgotten(self):
        self.apns.answer_token(VOIP_2, 410, "Unregistered")
        self.fcm.unregister(FCM)
        code, body, _ = yield post(self.tokens + "/push", self.call())
        self.assertEqual(code, 200, body)
        self.assertEqual([r["code"] for r in body["data"]], [410, 200, 410])
        self.assertTrue(body["data"][0]["reason"].startswith("Unregistered - "))
        remaining = yield self.server.tokens.devices("alice", "example.com")
        self.assertEqual([d.device_id for d in remaining], ["iphone"])
        code, body, _ = yield post(self.tokens + "/push/pixel", self.call(**{"call-id": "c-2"}))
        self.assertEqual(code, 404, body)
