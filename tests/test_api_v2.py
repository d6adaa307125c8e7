"""The v2 API over loopback: devices stored per account, pushes to an account, with a recording push client."""

from __future__ import annotations

from twisted.internet import defer, reactor, task
from twisted.internet.defer import Deferred
from twisted.trial import unittest

from sylkpush.pns.base import PushResult
from sylkpush.tokens import Device
from sylkpush.web import MAX_BODY
from tests.doubles import capture_logs
from tests.helpers import LINPHONE_APPLE, SYLK_APPLE, SYLK_FIREBASE, RecordingClient, overridden, post, start_server

ACCOUNT = "alice@example.com"


def registration(**overrides):
    return overridden({"app-id": "com.example.sylk", "platform": "apple", "token": "a1a1-b2b2",
                       "device-id": "<urn:uuid:0f0e-d00d>", "silent": True, "user-agent": "Sylk 5.1"}, overrides)


def call(**overrides):
    """A push body as the original's sylk-pushclient-v2 sends it (nulls included)."""
    body = {"media-type": "audio", "event": "incoming_session", "from": "bob@example.com",
            "from-display-name": "Bob", "to": ACCOUNT, "call-id": "call-7", "badge": 1, "reason": None,
            "filename": None, "filetype": None}
    body.update({key.replace("_", "-"): value for key, value in overrides.items()})
    return body


@defer.inlineCallbacks
def until(predicate, limit=10.0):
    waited = 0.0
    while not predicate():
        if waited > limit:
            raise AssertionError("condition not reached")
        yield task.deferLater(reactor, 0.005, lambda: None)
        waited += 0.005


class V2Case(unittest.TestCase):

    general = ""

    def setUp(self):
        RecordingClient.instances = []
        self.logs = capture_logs(self)
        self.server, self.url = start_server(self, SYLK_APPLE + SYLK_FIREBASE + LINPHONE_APPLE, self.general)
        self.tokens_url = f"{self.url}/v2/tokens/{ACCOUNT}"

    def client(self, platform="apple", app_id="com.example.sylk"):
        return self.server.registry.get(app_id, platform).client

    def register(self, account=ACCOUNT, **overrides):
        return post(f"{self.url}/v2/tokens/{account}", registration(**overrides))

    def push(self, body=None, device=None, account=ACCOUNT):
        url = f"{self.url}/v2/tokens/{account}/push" + (f"/{device}" if device else "")
        return post(url, body if body is not None else call())

    def stored(self, account=ACCOUNT):
        username, domain = account.split("@")
        return self.server.tokens.devices(username, domain)

    @defer.inlineCallbacks
    def three_devices(self):
        """Two Apple devices (one with a background token) and one Firebase device."""
        for body in (registration(device_id="ios-1", token="voip1-alert1"),
                     registration(device_id="ios-2", token="voip2"),
                     registration(device_id="android-1", platform="android", token="fcm-1:x")):
            code, answer, _ = yield post(self.tokens_url, body)
            self.assertEqual(code, 200, answer)


class RegistrationTests(V2Case):

    @defer.inlineCallbacks
    def test_stored_and_answered(self):
        code, body, response = yield self.register()
        self.assertEqual(code, 200, body)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertEqual(body, {"code": 200, "description": "push token stored", "data": {
            "app-id": "com.example.sylk", "platform": "apple", "token": "a1a1", "background-token": "b2b2",
            "device-id": "0f0e-d00d", "silent": True, "user-agent": "Sylk 5.1"}})
        stored = yield self.stored()
        self.assertEqual(stored, [Device("alice", "example.com", "0f0e-d00d", "com.example.sylk", "a1a1", "b2b2",
                                         "apple", True, "Sylk 5.1")])
        self.assertTrue(self.logs.matching(
            "alice@example.com-com.example.sylk-0f0e-d00d: registration from 127.0.0.1: apple token a1a1 "
            "background token b2b2 silent True user agent Sylk 5.1"))

    @defer.inlineCallbacks
    def test_values_as_the_original_client_sends_them(self):
        code, body, _ = yield self.register(platform="android", token="fcm-token-with-dashes", silent="0",
                                            user_agent=None)
        self.assertEqual(code, 200, body)
        self.assertEqual((body["data"]["platform"], body["data"]["token"], body["data"]["background-token"],
                          body["data"]["silent"], body["data"]["user-agent"]),
                         ("firebase", "fcm-token-with-dashes", None, False, None))
        code, body, _ = yield self.register(platform="ios", silent="1", user_agent="None")
        self.assertEqual((code, body["data"]["platform"], body["data"]["silent"]), (200, "apple", True))

    @defer.inlineCallbacks
    def test_a_registration_replaces_the_same_device(self):
        yield self.register(token="old")
        yield self.register(token="new", device_id="0f0e-d00d")
        yield self.register(app_id="org.linphone.phone")
        stored = yield self.stored()
        self.assertEqual([(d.app_id, d.device_token) for d in stored],
                         [("com.example.sylk", "new"), ("org.linphone.phone", "a1a1")])
        self.assertEqual(self.server.tokens.status()["devices"], 2)

    @defer.inlineCallbacks
    def test_refusals(self):
        cases = [
            (registration(app_id=None), 400, "app-id is required", {"field": "app-id"}),
            (registration(platform="windows"), 400, "platform must be one of", {"field": "platform"}),
            (registration(token=None), 400, "token is required", {"field": "token"}),
            (registration(token=7), 400, "token must be a string", {"field": "token"}),
            (registration(device_id=None), 400, "device-id is required", {"field": "device-id"}),
            (registration(device_id="<urn:uuid:>"), 400, "device-id is required", {"field": "device-id"}),
            (registration(silent="maybe"), 400, "silent must be a boolean", {"field": "silent"}),
            (registration(user_agent=["x"]), 400, "user-agent must be a string", {"field": "user-agent"}),
            (registration(app_id="org.unknown"), 404, "Apple org.unknown app is not configured", {}),
            (["not", "an", "object"], 400, "request body must be a JSON object", {}),
        ]
        for request, status, description, data in cases:
            code, body, _ = yield post(self.tokens_url, request)
            self.assertEqual((code, body["code"]), (status, status), request)
            self.assertTrue(body["description"].startswith(description), body)
            self.assertEqual(body["data"], data)
        code, body, _ = yield post(self.tokens_url, None, raw=b"{not json")
        self.assertEqual(code, 400)
        self.assertIn("request body is not valid JSON", body["description"])
        code, body, _ = yield post(self.tokens_url, None, raw=b"{" + b" " * MAX_BODY + b"}")
        self.assertEqual(code, 413)
        stored = yield self.stored()
        self.assertEqual(stored, [])

    @defer.inlineCallbacks
    def test_accounts_must_be_user_at_domain(self):
        for account, description in (("alice", "account must be user@domain"),
                                     ("@example.com", "account must be user@domain"),
                                     ("al%01ice@example.com", "account must not contain control characters or lone surrogates"),
                                     ("al%ffice@example.com", "account must be UTF-8")):
            code, body, _ = yield self.register(account=account)
            self.assertEqual((code, body["description"], body["data"]), (400, description, {"field": "account"}))
        code, body, _ = yield self.register(account="alice%40example.com")  # percent-encoded is the same
        self.assertEqual(code, 200, body)
        stored = yield self.stored()
        self.assertEqual(len(stored), 1)

    @defer.inlineCallbacks
    def test_paths_and_methods(self):
        for method, path, status, allow in (
                ("GET", f"/v2/tokens/{ACCOUNT}", 405, [b"DELETE, POST"]),
                ("PUT", f"/v2/tokens/{ACCOUNT}/push", 405, [b"POST"]),
                ("GET", f"/v2/tokens/{ACCOUNT}/push/dev", 405, [b"POST"]),
                ("POST", "/v2", 404, None), ("POST", "/v2/", 404, None), ("POST", "/v2/tokens", 404, None),
                ("POST", "/v2/tokens/", 404, None), ("POST", "/v2/other/x", 404, None),
                ("POST", f"/v2/tokens/{ACCOUNT}/pull", 404, None),
                ("POST", f"/v2/tokens/{ACCOUNT}/push/dev/more", 404, None)):
            code, body, response = yield post(self.url + path, {}, method=method)
            self.assertEqual((code, body["code"]), (status, status), (method, path, body))
            self.assertEqual(response.headers.getRawHeaders(b"allow"), allow)
        code, body, _ = yield post(f"{self.url}/v2/tokens/{ACCOUNT}/", registration())
        self.assertEqual(code, 200, body)

    @defer.inlineCallbacks
    def test_metrics(self):
        yield self.register()
        yield self.register(device_id="other")
        yield post(self.tokens_url, {"app-id": "com.example.sylk", "device-id": "other"}, method="DELETE")
        _, text, _ = yield post(self.url + "/metrics", None, method="GET")
        self.assertIn("sylkpush_device_registrations_total 2.0", text)
        self.assertIn('sylkpush_device_removals_total{reason="caller"} 1.0', text)
        self.assertIn("sylkpush_devices_stored 1.0", text)

    @defer.inlineCallbacks
    def test_health_shows_the_storage(self):
        yield self.register()
        _, body, _ = yield post(self.url + "/health", None, method="GET")
        storage = body["data"]["token-storage"]
        self.assertEqual((storage["backend"], storage["up"], storage["state"], storage["devices"]),
                         ("sqlite", True, "open", 1))


class RemovalTests(V2Case):

    @defer.inlineCallbacks
    def test_removed_once(self):
        yield self.register()
        yield self.register(device_id="kept")
        removal = {"app-id": "com.example.sylk", "device-id": "<urn:uuid:0f0e-d00d>"}
        code, body, _ = yield post(self.tokens_url, removal, method="DELETE")
        self.assertEqual((code, body["description"], body["data"]),
                         (200, "push token removed", {"app-id": "com.example.sylk", "device-id": "0f0e-d00d"}))
        code, body, _ = yield post(self.tokens_url, removal, method="DELETE")
        self.assertEqual((code, body["description"], body["data"]),
                         (404, "Push token not found", {"app-id": "com.example.sylk", "device-id": "0f0e-d00d",
                                                       "account": ACCOUNT}))
        stored = yield self.stored()
        self.assertEqual([d.device_id for d in stored], ["kept"])

    @defer.inlineCallbacks
    def test_refusals(self):
        for removal, description in (({"device-id": "d"}, "app-id is required"),
                                     ({"app-id": "com.example.sylk"}, "device-id is required"),
                                     ({"app-id": "com.example.sylk", "device-id": 3}, "device-id must be a string"),
                                     ("text", "request body must be a JSON object")):
            code, body, _ = yield post(self.tokens_url, removal, method="DELETE")
            self.assertEqual((code, body["description"]), (400, description))


class AccountPushTests(V2Case):

    @defer.inlineCallbacks
    def test_every_device_at_once(self):
        yield self.three_devices()
        apple, firebase = self.client(), self.client("firebase")
        waiting = {token: Deferred() for token in ("voip1", "voip2", "fcm-1:x")}
        apple.answers.update({t: waiting[t] for t in ("voip1", "voip2")})
        firebase.answers["fcm-1:x"] = waiting["fcm-1:x"]
        answer = self.push()
        # all three pushes are with the push services before any of them is answered
        yield until(lambda: len(apple.sent) == 2 and len(firebase.sent) == 1)
        self.assertFalse(answer.called)
        for token, deferred in waiting.items():
            deferred.callback(PushResult(200, "OK", f"https://push.test/{token}", {"id": token}))
        code, body, _ = yield answer
        self.assertEqual((code, body["code"], body["description"]), (200, 200, "push notification responses"))
        # in the order of the stored devices: by device id
        self.assertEqual([(r["code"], r["platform"], r["token"], r["call_id"]) for r in body["data"]],
                         [(200, "firebase", "fcm-1:x", "call-7"), (200, "apple", "voip1", "call-7"),
                          (200, "apple", "voip2", "call-7")])
        self.assertEqual(body["data"][1], {"code": 200, "reason": "OK", "url": "https://push.test/voip1",
                                           "platform": "apple", "call_id": "call-7", "token": "voip1",
                                           "body": {"id": "voip1"}})
        self.assertEqual({p.request_id for p in apple.sent + firebase.sent},
                         {"incoming_session-alice@example.com-call-7"})
        self.assertEqual(apple.sent[0].payload["from_display_name"], "Bob")
        self.assertTrue(self.logs.matching(
            "incoming_session-alice@example.com-call-7: android-1 (com.example.sylk) 200, "
            "ios-1 (com.example.sylk) 200, ios-2 (com.example.sylk) 200"))

    @defer.inlineCallbacks
    def test_cancels_and_messages_use_the_background_token(self):
        yield self.three_devices()
        for event, extra in (("cancel", {"reason": "answered elsewhere", "media-type": None}),
                             ("message", {"media-type": "sms", "content": "hi", "content-type": "text/plain"})):
            code, body, _ = yield self.push(call(event=event, **extra))
            self.assertEqual(code, 200, body)
            self.assertEqual(sorted(r["token"] for r in body["data"]), ["alert1", "fcm-1:x", "voip2"])
        self.assertEqual([p.headers["apns-push-type"] for p in self.client().sent],
                         ["background", "background", "alert", "alert"])

    @defer.inlineCallbacks
    def test_a_device_gone_is_removed_and_still_listed(self):
        yield self.three_devices()
        self.client().answers["voip2"] = PushResult(410, "Unregistered - gone", "https://push.test/voip2")
        code, body, _ = yield self.push()
        self.assertEqual(code, 200)
        self.assertEqual([r["code"] for r in body["data"]], [200, 200, 410])
        stored = yield self.stored()
        self.assertEqual([d.device_id for d in stored], ["android-1", "ios-1"])
        self.assertTrue(self.logs.matching("ios-2 (com.example.sylk) 410 removed"))
        _, text, _ = yield post(self.url + "/metrics", None, method="GET")
        self.assertIn('sylkpush_device_removals_total{reason="410"} 1.0', text)
        self.assertIn('sylkpush_v2_pushes_total{code="410"} 1.0', text)
        self.assertIn('sylkpush_v2_pushes_total{code="200"} 2.0', text)

    @defer.inlineCallbacks
    def test_a_device_registered_again_meanwhile_is_kept(self):
        yield self.register(token="stale")
        pending = Deferred()
        self.client().answers["stale"] = pending
        answer = self.push()
        yield until(lambda: self.client().sent)
        code, _, _ = yield self.register(token="fresh")
        self.assertEqual(code, 200)
        pending.callback(PushResult(410, "Unregistered", "https://push.test/stale"))
        code, body, _ = yield answer
        self.assertEqual((code, [r["code"] for r in body["data"]]), (200, [410]))
        [kept] = yield self.stored()
        self.assertEqual(kept.device_token, "fresh")

    @defer.inlineCallbacks
    def test_one_device_answers_what_v1_would(self):
        yield self.register(token="t1")
        self.client().answers["t1"] = PushResult(503, "push service unreachable", "https://push.test/t1")
        code, body, _ = yield self.push()
        self.assertEqual((code, body["code"], body["description"]), (503, 503, "push notification responses"))
        self.assertEqual([r["code"] for r in body["data"]], [503])

    @defer.inlineCallbacks
    def test_one_device_by_id(self):
        yield self.three_devices()
        code, body, _ = yield self.push(device="%3Curn:uuid:ios-2%3E")
        self.assertEqual((code, [r["token"] for r in body["data"]]), (200, ["voip2"]))
        self.assertEqual(len(self.client().sent), 1)

    @defer.inlineCallbacks
    def test_nobody_there(self):
        code, body, _ = yield self.push()
        self.assertEqual((code, body["description"], body["data"]),
                         (404, "Push request was not sent: user not found", {"account": ACCOUNT}))
        yield self.register()
        code, body, _ = yield self.push(device="nope")
        self.assertEqual((code, body["description"], body["data"]),
                         (404, "Push request was not sent: device not found", {"device_id": "nope"}))
        self.assertEqual(self.client().sent, [])

    @defer.inlineCallbacks
    def test_invalid_requests_are_refused_before_any_push(self):
        yield self.three_devices()
        for body, status, description in (
                (call(**{"call-id": None}), 400, "call-id is required"),
                (call(**{"media-type": "fax"}), 400, "media-type must be one of"),
                (call(badge="many"), 400, "badge must be an integer"),
                (["a list"], 400, "request body must be a JSON object")):
            code, answer, _ = yield self.push(body)
            self.assertEqual((code, answer["code"]), (status, status), answer)
            self.assertTrue(answer["description"].startswith(description), answer)
        self.assertEqual(self.client().sent + self.client("firebase").sent, [])

    @defer.inlineCallbacks
    def test_original_client_values(self):
        yield self.register()
        code, body, _ = yield self.push(call(badge="3", reason=None))
        self.assertEqual(code, 200, body)

    @defer.inlineCallbacks
    def test_devices_that_cannot_take_the_push_are_listed(self):
        yield self.register(device_id="sylk")
        yield self.register(device_id="linphone", app_id="org.linphone.phone")
        yield self.server.tokens.store(Device("alice", "example.com", "retired", "org.retired", "t9", None,
                                              "apple", True, None))
        code, body, _ = yield self.push(call(event="cancel", **{"media-type": None}))
        self.assertEqual(code, 200, body)
        self.assertEqual([(r["code"], r["reason"]) for r in body["data"]], [
            (400, "event must be incoming_session for linphone applications"), (404, "Apple org.retired app is not configured"),
            (200, "OK")])
        self.assertEqual(body["data"][1], {"code": 404, "reason": "Apple org.retired app is not configured",
                                           "url": "", "platform": "apple", "call_id": "call-7", "token": "t9",
                                           "body": {}})

    @defer.inlineCallbacks
    def test_storage_failure_is_503(self):
        yield self.server.tokens.close()
        code, body, _ = yield self.push()
        self.assertEqual(code, 503)
        self.assertEqual(body["description"], "token storage unavailable: the token store is closed")
        code, body, _ = yield self.register()
        self.assertEqual((code, body["description"]), (503, "token storage unavailable: the token store is closed"))
        code, body, _ = yield post(self.url + "/health", None, method="GET")
        self.assertEqual(code, 200)  # /push still works
        storage = body["data"]["token-storage"]
        self.assertEqual((storage["up"], storage["state"]), (False, "closed"))


class AccessListTests(V2Case):

    general = "[server]\nallowed_hosts = 192.0.2.0/24\n"

    @defer.inlineCallbacks
    def test_v2_obeys_allowed_hosts(self):
        for method, path in (("POST", ""), ("DELETE", ""), ("POST", "/push"), ("POST", "/push/dev")):
            code, body, _ = yield post(self.tokens_url + path, registration(), method=method)
            self.assertEqual((code, body["description"]), (403, "access denied by access list"))


class AsyncAnswerTests(V2Case):

    general = "[server]\nreturn_async = false\n"

    @defer.inlineCallbacks
    def test_push_accepted_then_sent(self):
        code, body, _ = yield self.register()
        self.assertEqual(code, 200)  # registrations are stored before they are answered
        code, body, _ = yield self.push()
        self.assertEqual((code, body), (202, {"code": 202, "description": "accepted for delivery", "data": {}}))
        yield until(lambda: self.client().sent)
        self.assertEqual(self.client().sent[0].token, "a1a1")


class ShutdownTests(V2Case):

    @defer.inlineCallbacks
    def test_new_requests_are_refused_and_waiting_ones_answered(self):
        self.server.drain_timeout = 0.2
        yield self.register()
        never = self.client().answers["a1a1"] = Deferred()
        # the client never answers: fire it at the end so the dispatcher's deadline timer goes
        self.addCleanup(lambda: never.called or never.callback(PushResult(200, "OK", "")))
        waiting = self.push()
        yield until(lambda: self.client().sent)
        stopping = self.server.stopService()
        code, body, _ = yield waiting
        # handed to a client that cannot tell whether it went out: maybe delivered
        self.assertEqual(code, 504)
        self.assertIn("sent, no answer from the push service before shutdown", body["description"])
        yield stopping
