"""FirebaseClient against the fake FCM: delivery, error mapping, OAuth tokens, logging."""

from __future__ import annotations

import json
import logging
import os

from twisted.internet import defer, reactor
from twisted.trial import unittest

from sylkpush.config import ConfigError
from sylkpush.pns.base import OutgoingPush
from sylkpush.pns.firebase import FirebaseClient, parse_retry_after
from tests.doubles import capture_logs
from tests.firebase_helpers import FakeFCMMixin, app_for, push_for, v1_payload


class V1DeliveryTests(FakeFCMMixin, unittest.TestCase):

    @defer.inlineCallbacks
    def test_delivered(self):
        client = self.client()
        push = push_for("device-1", reactor)
        message = push.payload["message"]  # the client holds the payload as JSON only, once sent
        result = yield client.send(push)
        self.assertEqual(result.code, 200)
        self.assertEqual(result.reason, "OK")
        self.assertEqual(result.url, self.fake.push_url)
        self.assertTrue(result.body["name"].startswith("projects/sylk-test/messages/"))
        self.assertEqual(self.fake.messages, [message])
        self.assertEqual(self.fake.deliveries["device-1"], 1)

    @defer.inlineCallbacks
    def test_renderer_headers_are_sent_but_not_authorization(self):
        client = self.client()
        push = OutgoingPush("r1", "device-h", {"X-Extra": "1", "Authorization": "bearer nonsense"},
                            v1_payload("device-h"), reactor.seconds() + 10)
        result = yield client.send(push)
        self.assertEqual(result.code, 200)

    @defer.inlineCallbacks
    def test_one_token_for_a_thousand_pushes(self):
        client = self.client()
        results = yield defer.gatherResults([client.send(push_for(f"device-{i}", reactor)) for i in range(1000)])
        self.assertEqual({r.code for r in results}, {200})
        self.assertEqual(self.fake.token_fetches, 1)
        self.assertEqual(set(self.fake.authorizations), {self.fake.issued[0]})
        self.assertEqual(len(self.fake.messages), 1000)
        self.assertEqual(set(self.fake.deliveries.values()), {1})
        self.assertEqual(client.status()["token_refreshes"], 1)

    @defer.inlineCallbacks
    def test_401_forces_one_refresh_and_one_retry(self):
        client = self.client()
        yield client.send(push_for("device-a", reactor))
        self.fake.revoke_access_tokens()
        results = yield defer.gatherResults([client.send(push_for(f"device-b{i}", reactor)) for i in range(50)])
        self.assertEqual({r.code for r in results}, {200})
        # fifty 401s for the same token, one refresh
        self.assertEqual(self.fake.token_fetches, 2)
        self.assertEqual(sum(self.fake.deliveries.values()), 51)

    @defer.inlineCallbacks
    def test_401_again_after_the_refresh_is_returned(self):
        self.fake.token_lifetime = 0  # every token is dead on arrival
        client = self.client()
        result = yield client.send(push_for("device-a", reactor))
        self.assertEqual(result.code, 401)
        self.assertIn("UNAUTHENTICATED", result.reason)
        self.assertEqual(result.body["error"]["status"], "UNAUTHENTICATED")
        self.assertEqual(self.fake.deliveries, {})

    @defer.inlineCallbacks
    def test_project_from_the_service_account(self):
        client = self.client(app=app_for(self.fake, firebase_push_url=""))
        self.assertEqual(client.url, "https://fcm.googleapis.com/v1/projects/sylk-test/messages:send")
        yield client.stop()


class HTTP2Tests(FakeFCMMixin, unittest.TestCase):
    """Pushes go over a few multiplexed HTTP/2 connections; the token endpoint over HTTP/1.1."""

    @defer.inlineCallbacks
    def test_pushes_are_multiplexed_on_the_pool(self):
        self.fake.delay = 0.05  # answers take a while: requests pile up on the connections
        client = self.client()
        results = yield defer.gatherResults([client.send(push_for(f"mux-{i}", reactor)) for i in range(400)])
        self.assertEqual({r.code for r in results}, {200})
        self.assertEqual(self.fake.protocols, {"h2": 400, "http/1.1": self.fake.token_requests})
        self.assertEqual(self.fake.h2_connections, client.pool_size)
        # many requests at once on a connection, never more than the service allows
        self.assertGreater(self.fake.max_open_streams, 10)
        self.assertLessEqual(self.fake.max_open_streams, 100)
        legacy = self.client(legacy=True)
        result = yield legacy.send(push_for("mux-legacy", reactor, legacy=True))
        self.assertEqual(result.code, 200)
        self.assertEqual(self.fake.protocols["h2"], 401)

    @defer.inlineCallbacks
    def test_firebase_connections(self):
        client = self.client(app=app_for(self.fake, options=(("firebase_connections", "3"),)))
        self.assertEqual(client.pool_size, 3)
        yield defer.gatherResults([client.send(push_for(f"three-{i}", reactor)) for i in range(30)])
        self.assertEqual(self.fake.h2_connections, 3)
        with self.assertRaisesRegex(ConfigError, "firebase_connections must be a whole number from 1 to 32"):
            FirebaseClient(app_for(self.fake, options=(("firebase_connections", "0"),)), reactor)


class V1ErrorMappingTests(FakeFCMMixin, unittest.TestCase):

    @defer.inlineCallbacks
    def send(self, token, payload=None):
        client = self.client()
        result = yield client.send(push_for(token, reactor, payload=payload))
        return result

    @defer.inlineCallbacks
    def test_unregistered_is_410(self):
        self.fake.unregister("gone")
        result = yield self.send("gone")
        self.assertEqual(result.code, 410)
        self.assertTrue(result.reason.startswith("UNREGISTERED - Requested entity was not found."), result.reason)
        self.assertEqual(result.body["error"]["details"][0]["errorCode"], "UNREGISTERED")

    @defer.inlineCallbacks
    def test_invalid_token_is_410(self):
        result = yield self.send("bad token with spaces")
        self.assertEqual(result.code, 410)
        self.assertIn("INVALID_ARGUMENT", result.reason)
        self.assertIn("registration token", result.reason)

    @defer.inlineCallbacks
    def test_scripted_invalid_token_is_410(self):
        self.fake.script("stale", "INVALID_ARGUMENT", times=1)
        result = yield self.send("stale")
        self.assertEqual(result.code, 410)

    @defer.inlineCallbacks
    def test_invalid_payload_is_400_not_410(self):
        payload = v1_payload("device-x")
        payload["message"]["data"]["metadata"] = {"filename": "a.png"}  # FCM wants strings only
        result = yield self.send("device-x", payload)
        self.assertEqual(result.code, 400)
        self.assertTrue(result.reason.startswith("INVALID_ARGUMENT - Invalid value at 'message.data[2].value'"),
                        result.reason)
        self.assertEqual(result.body["error"]["code"], 400)
        self.assertEqual(self.fake.deliveries, {})

    @defer.inlineCallbacks
    def test_bad_ttl_is_400(self):
        payload = v1_payload("device-t")
        payload["message"]["android"]["ttl"] = 60
        result = yield self.send("device-t", payload)
        self.assertEqual(result.code, 400)
        self.assertIn("android.ttl", result.reason)

    @defer.inlineCallbacks
    def test_sender_id_mismatch_is_403(self):
        self.fake.script("other-app", "SENDER_ID_MISMATCH")
        result = yield self.send("other-app")
        self.assertEqual(result.code, 403)
        self.assertTrue(result.reason.startswith("SENDER_ID_MISMATCH - SenderId mismatch"), result.reason)

    @defer.inlineCallbacks
    def test_wrong_project_is_403(self):
        client = self.client(app=app_for(self.fake, firebase_push_url=self.fake.push_url.replace("sylk-test", "x")))
        result = yield client.send(push_for("device-p", reactor))
        self.assertEqual(result.code, 403)
        self.assertIn("PERMISSION_DENIED", result.reason)

    @defer.inlineCallbacks
    def test_third_party_auth_error_is_not_retried_as_oauth(self):
        self.fake.script("ios-device", "THIRD_PARTY_AUTH_ERROR")
        result = yield self.send("ios-device")
        self.assertEqual(result.code, 401)
        self.assertIn("THIRD_PARTY_AUTH_ERROR", result.reason)
        self.assertEqual(self.fake.token_fetches, 1)


class LegacyTests(FakeFCMMixin, unittest.TestCase):

    @defer.inlineCallbacks
    def send(self, token, client=None):
        client = client or self.client(legacy=True)
        result = yield client.send(push_for(token, reactor, legacy=True))
        return result

    @defer.inlineCallbacks
    def test_delivered(self):
        result = yield self.send("legacy-1")
        self.assertEqual(result.code, 200)
        self.assertEqual(result.url, self.fake.legacy_url)
        self.assertEqual(result.body["success"], 1)
        self.assertEqual(self.fake.deliveries["legacy-1"], 1)
        self.assertEqual(self.fake.token_fetches, 0)

    @defer.inlineCallbacks
    def test_not_registered_is_410(self):
        self.fake.unregister("legacy-gone")
        result = yield self.send("legacy-gone")
        self.assertEqual(result.code, 410)
        self.assertTrue(result.reason.startswith("NotRegistered"))
        self.assertEqual(result.body["results"], [{"error": "NotRegistered"}])

    @defer.inlineCallbacks
    def test_invalid_registration_is_410(self):
        result = yield self.send("has spaces")
        self.assertEqual(result.code, 410)
        self.assertTrue(result.reason.startswith("InvalidRegistration"))

    @defer.inlineCallbacks
    def test_mismatch_sender_is_403(self):
        self.fake.script("legacy-other", "SENDER_ID_MISMATCH")
        result = yield self.send("legacy-other")
        self.assertEqual(result.code, 403)
        self.assertTrue(result.reason.startswith("MismatchSenderId"))

    @defer.inlineCallbacks
    def test_unavailable_result_is_retried(self):
        self.fake.script("legacy-busy", "UNAVAILABLE", times=1)
        result = yield self.send("legacy-busy")
        self.assertEqual(result.code, 200)
        self.assertEqual(self.fake.push_requests, 2)
        self.assertEqual(self.fake.deliveries["legacy-busy"], 1)

    @defer.inlineCallbacks
    def test_wrong_key_is_401(self):
        client = self.client(app=app_for(self.fake, legacy=True, firebase_authorization_key="AAAAwrong"))
        result = yield self.send("legacy-2", client)
        self.assertEqual(result.code, 401)
        self.assertIn("firebase_authorization_key", result.reason)
        self.assertEqual(result.body, {})

    def test_warning_at_construction(self):
        with self.assertLogs("sylkpush.pns.firebase", logging.WARNING) as captured:
            FirebaseClient(app_for(self.fake, legacy=True), reactor)
        self.assertIn("retired", captured.output[0])


class ConfigurationTests(FakeFCMMixin, unittest.TestCase):

    def write(self, content: str) -> str:
        path = self.mktemp()
        with open(path, "w") as stream:
            stream.write(content)
        return path

    def test_malformed_service_account(self):
        app = app_for(self.fake, firebase_authorization_file=self.write("[1, 2"))
        error = self.assertRaises(ConfigError, FirebaseClient, app, reactor)
        self.assertIn("not JSON", str(error))

    def test_no_credentials(self):
        app = app_for(self.fake, firebase_authorization_file="")
        self.assertRaises(ConfigError, FirebaseClient, app, reactor)

    def test_plain_http_url_refused(self):
        app = app_for(self.fake, firebase_push_url="http://127.0.0.1:1/v1/projects/p/messages:send")
        error = self.assertRaises(ConfigError, FirebaseClient, app, reactor)
        self.assertIn("https", str(error))

    def test_missing_ca_file(self):
        app = app_for(self.fake, tls_ca_file=os.path.join(self.mktemp(), "none.crt"))
        self.assertRaises(ConfigError, FirebaseClient, app, reactor)

    def test_retry_after_parsing(self):
        self.assertEqual(parse_retry_after(b"7", 0), 7.0)
        self.assertEqual(parse_retry_after(b"Thu, 01 Jan 1970 00:01:40 GMT", 40.0), 60.0)
        self.assertIsNone(parse_retry_after(b"soon", 0))
        self.assertIsNone(parse_retry_after(None, 0))


class UntrustedServerTests(FakeFCMMixin, unittest.TestCase):

    @defer.inlineCallbacks
    def test_unknown_ca_is_refused(self):
        """Without the fake's CA in tls_ca_file the certificate is not accepted."""
        from sylkpush.testing.certs import CertificateAuthority
        directory = self.mktemp()
        os.makedirs(directory)
        other_ca = CertificateAuthority("Someone else").write(directory)
        client = self.client(legacy=True, app=app_for(self.fake, legacy=True, tls_ca_file=other_ca))
        result = yield client.send(push_for("legacy-3", reactor, budget=0.3, legacy=True))
        self.assertEqual(result.code, 503)
        self.assertIn("failed", result.reason)
        self.assertEqual(self.fake.push_requests, 0)
        self.assertGreater(client.status()["reconnects"], 0)


class LoggingTests(FakeFCMMixin, unittest.TestCase):

    @defer.inlineCallbacks
    def test_secrets_never_logged(self):
        records = capture_logs(self, redact=False).lines  # the client's own redaction

        client = self.client()
        push = push_for("device-log", reactor)
        yield client.send(push)
        self.fake.revoke_access_tokens()
        yield client.send(push_for("device-log2", reactor))
        legacy = self.client(legacy=True)
        yield legacy.send(push_for("legacy-log", reactor, legacy=True))

        text = "\n".join(records)
        self.assertEqual(len(self.fake.issued), 2)
        for token in self.fake.issued:
            self.assertNotIn(token, text)
        self.assertNotIn(self.fake.legacy_key, text)
        self.assertNotIn("PRIVATE KEY", text)
        self.assertNotIn("eyJ", text)  # the start of any JWT
        with open(self.fake.service_account_file) as stream:
            key_line = json.load(stream)["private_key"].splitlines()[1]
        self.assertNotIn(key_line, text)
        self.assertIn("<redacted>", text)
        # the outgoing URL and the result, on lines carrying the request id
        self.assertTrue(any(push.request_id in line and self.fake.push_url in line for line in records))
        self.assertTrue(any(push.request_id in line and "200 OK" in line for line in records))
        self.assertTrue(any(push.request_id in line and "device-log" in line for line in records))  # debug body
