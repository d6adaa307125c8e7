"""The v1 HTTP API end to end over loopback, with a recording push client."""

from __future__ import annotations

import http.client
import logging
import os
import ssl as stdlib_ssl

import treq

from treq.client import HTTPClient
from twisted.internet import defer, reactor, ssl, task, threads
from twisted.internet.defer import Deferred
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.trial import unittest

from sylkpush.pns.base import PushResult
from sylkpush.testing.certs import CertificateAuthority
from sylkpush.web import MAX_BODY
from tests.doubles import capture_logs
from tests.firebase_helpers import wait_until
from tests.helpers import (LINPHONE_APPLE, SYLK_APPLE, SYLK_FIREBASE, RecordingClient, post,
                           start_server, wakeup)


class PushApiTests(unittest.TestCase):

    def setUp(self):
        RecordingClient.instances = []
        self.server, self.url = start_server(self, SYLK_APPLE + SYLK_FIREBASE + LINPHONE_APPLE)
        self.push_url = self.url + "/push"

    def client(self, platform="apple", app_id="com.example.sylk"):
        return self.server.registry.get(app_id, platform).client

    @defer.inlineCallbacks
    def test_delivered(self):
        code, body, response = yield post(self.push_url, wakeup())
        self.assertEqual(code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertEqual(body["code"], 200)
        self.assertEqual(body["description"], "push notification response")
        self.assertEqual(body["data"], {
            "code": 200, "reason": "OK", "url": "https://push.test/a1b2c3d4", "platform": "apple",
            "call_id": "call-1@example.com", "token": "a1b2c3d4", "body": {"id": "1"}})
        [push] = self.client().sent
        self.assertEqual(push.request_id, "incoming_session-com.example.sylk-call-1@example.com")
        self.assertEqual(push.token, "a1b2c3d4")
        self.assertTrue(push.voip)
        self.assertEqual(push.payload["from_display_name"], "Alice")
        self.assertEqual(push.headers["apns-push-type"], "voip")

    @defer.inlineCallbacks
    def test_waiting_caller_holds_neither_body_nor_headers(self):
        # thousands of callers wait during a push service outage: each holds what its answer needs only
        later: Deferred = Deferred()
        self.client().answers["a1b2c3d4"] = later
        self.addCleanup(lambda: later.called or later.callback(PushResult(200, "OK", "u")))
        answer = post(self.push_url, wakeup())
        waiting = self.server.push_resource.waiting
        yield wait_until(lambda: waiting)
        [request] = waiting
        self.assertIsNone(request.content)
        self.assertIsNone(request.received_headers)
        self.assertIsNone(request.headers)  # the answer's, the date included, are set as it goes out
        later.callback(PushResult(200, "OK", "u"))
        code, body, response = yield answer
        self.assertEqual((code, body["code"]), (200, 200))
        [date] = response.headers.getRawHeaders(b"date")
        self.assertTrue(date.endswith(b" GMT"), date)

    @defer.inlineCallbacks
    def test_platform_aliases_and_display_name_spelling(self):
        for alias in ("ios", "apns", "APPLE"):
            code, body, _ = yield post(self.push_url, wakeup(platform=alias, **{"from-display-name": None},
                                                             from_display_name="Bob"))
            self.assertEqual(code, 200, body)
        code, _, _ = yield post(self.push_url, wakeup(platform="android"))
        self.assertEqual(code, 200)
        self.assertEqual(len(self.client().sent), 3)
        self.assertEqual({p.payload["from_display_name"] for p in self.client().sent}, {"Bob"})
        self.assertEqual(len(self.client("firebase").sent), 1)

    @defer.inlineCallbacks
    def test_missing_token(self):
        code, body, _ = yield post(self.push_url, wakeup(token=None))
        self.assertEqual((code, body["code"]), (400, 400))
        self.assertEqual(body["description"], "token is required")
        self.assertEqual(body["data"], {"field": "token"})

    @defer.inlineCallbacks
    def test_bad_media_type(self):
        code, body, _ = yield post(self.push_url, wakeup(media_type="fax"))
        self.assertEqual(code, 400)
        self.assertEqual(body["description"],
                         "media-type must be one of audio, video, chat, sms, file-transfer, image")

    @defer.inlineCallbacks
    def test_field_rules(self):
        cases = [
            ({"platform": "windows"}, "platform must be one of"),
            ({"event": "ring"}, "event must be one of incoming_session, incoming_conference_request"),
            ({"silent": "maybe"}, "silent must be a boolean"),
            ({"badge": "many"}, "badge must be an integer"),
            ({"token": 1234}, "token must be a string"),
            ({"call-id": ""}, "call-id is required"),
            ({"event": None}, "event is required"),
        ]
        for override, description in cases:
            code, body, _ = yield post(self.push_url, {**wakeup(), **override} if None not in override.values()
                                       else wakeup(**{k.replace("-", "_"): v for k, v in override.items()}))
            self.assertEqual(code, 400, (override, body))
            self.assertTrue(body["description"].startswith(description), (override, body))
        self.assertEqual(self.client().sent, [])

    @defer.inlineCallbacks
    def test_cancel_without_media_type_is_accepted(self):
        code, body, _ = yield post(self.push_url, wakeup(event="cancel", media_type=None, reason="busy"))
        self.assertEqual(code, 200, body)
        [push] = self.client().sent
        self.assertFalse(push.voip)

    @defer.inlineCallbacks
    def test_conference_alias(self):
        code, _, _ = yield post(self.push_url, wakeup(event="incoming_conference"))
        self.assertEqual(code, 200)
        self.assertEqual(self.client().sent[0].request_id.split("-com")[0], "incoming_conference_request")

    @defer.inlineCallbacks
    def test_unknown_application(self):
        code, body, _ = yield post(self.push_url, wakeup(app_id="com.example.other"))
        self.assertEqual(code, 404)
        self.assertEqual(body["description"], "Apple com.example.other app is not configured")

    @defer.inlineCallbacks
    def test_linphone_accepts_only_incoming_session(self):
        linphone = dict(app_id="org.linphone.phone")
        code, body, _ = yield post(self.push_url, wakeup(event="cancel", media_type=None, **linphone))
        self.assertEqual(code, 400)
        self.assertEqual(body["description"], "event must be incoming_session for linphone applications")
        code, body, _ = yield post(self.push_url, wakeup(event=None, **linphone))
        self.assertEqual(code, 200, body)
        [push] = self.client(app_id="org.linphone.phone").sent
        self.assertTrue(push.request_id.startswith("incoming_session-org.linphone.phone-"))

    @defer.inlineCallbacks
    def test_not_json(self):
        code, body, _ = yield post(self.push_url, None, raw=b"{not json")
        self.assertEqual(code, 400)
        self.assertTrue(body["description"].startswith("request body is not valid JSON"))
        code, body, _ = yield post(self.push_url, None, raw=b"\xff\xfe")
        self.assertEqual(code, 400)
        code, body, _ = yield post(self.push_url, ["a", "list"])
        self.assertEqual((code, body["description"]), (400, "request body must be a JSON object"))

    @defer.inlineCallbacks
    def test_body_too_large(self):
        code, body, _ = yield post(self.push_url, wakeup(content="x" * MAX_BODY))
        self.assertEqual(code, 413)
        self.assertEqual(body["code"], 413)
        self.assertEqual(self.client().sent, [])

    @defer.inlineCallbacks
    def test_wrong_method_and_unknown_path(self):
        code, body, response = yield post(self.push_url, None, method="GET")
        self.assertEqual((code, body["code"]), (405, 405))
        self.assertIn(b"POST", response.headers.getRawHeaders(b"allow")[0])
        code, body, _ = yield post(self.url + "/nowhere", wakeup())
        self.assertEqual((code, body["description"]), (404, "no such resource"))
        code, body, _ = yield post(self.push_url + "/extra", wakeup())
        self.assertEqual(code, 404)
        code, body, _ = yield post(self.url + "/", None, method="GET")
        self.assertEqual(code, 200)
        self.assertIn("Sylk Pushserver", body)

    @defer.inlineCallbacks
    def test_head_where_there_is_nothing_to_get(self):
        """HEAD is GET without the body: on a path that has no GET it is 405
        like GET, not a 500 and an ERROR line."""
        logs = capture_logs(self, logging.ERROR)
        code, body, response = yield post(self.push_url, None, method="HEAD")
        self.assertEqual(logs.lines, [])
        self.assertEqual((code, body), (405, ""))
        self.assertNotIn(b"HEAD", response.headers.getRawHeaders(b"allow")[0])
        self.assertIn(b"POST", response.headers.getRawHeaders(b"allow")[0])
        code, _, response = yield post(self.url + "/", None, method="HEAD")
        self.assertEqual(code, 200)
        self.assertGreater(int(response.headers.getRawHeaders(b"content-length")[0]), 0)

    @defer.inlineCallbacks
    def test_push_service_answers_are_passed_on(self):
        client = self.client()
        client.answers["gone"] = PushResult(410, "Unregistered - The device token is inactive for the specified topic.",
                                            "https://push.test/3/device/gone", {"reason": "Unregistered"})
        client.answers["later"] = PushResult(503, "deadline passed: connection refused", "https://x")
        code, body, _ = yield post(self.push_url, wakeup(token="gone"))
        self.assertEqual(code, 410)
        self.assertEqual(body["data"]["body"], {"reason": "Unregistered"})
        self.assertEqual(body["data"]["token"], "gone")
        self.assertTrue(body["description"].startswith("push notification failed: Unregistered"))
        code, body, _ = yield post(self.push_url, wakeup(token="later"))
        self.assertEqual(code, 503)

    @defer.inlineCallbacks
    def test_client_exception_answers_500_json(self):
        self.client().answers["boom"] = RuntimeError("bug in a client")
        code, body, _ = yield post(self.push_url, wakeup(token="boom"))
        self.assertEqual((code, body["code"]), (500, 500))
        self.assertEqual(body["description"], "push notification failed: internal error in the push service client")
        self.flushLoggedErrors(RuntimeError)

    @defer.inlineCallbacks
    def test_deadline_from_media_type(self):
        now = self.server.reactor.seconds()
        yield post(self.push_url, wakeup(media_type="video"))
        yield post(self.push_url, wakeup(event="message", media_type="sms", content="hi", content_type="text/plain"))
        call, message = self.client().sent
        self.assertTrue(64 <= call.deadline - now < 69, call.deadline - now)
        self.assertTrue(17 * 60 <= message.deadline - now < 17 * 60 + 5, message.deadline - now)

    @defer.inlineCallbacks
    def test_caller_gone_before_answer(self):
        logs = capture_logs(self)
        pending = Deferred()
        self.client().answers["slow"] = pending
        request = treq.post(self.push_url, json=wakeup(token="slow"), persistent=False)
        cancelled = []
        request.addErrback(cancelled.append)
        yield deferLater(reactor, 0.05)
        request.cancel()
        yield deferLater(reactor, 0.05)
        pending.callback(PushResult(200, "OK", "u"))
        self.assertEqual(len(self.client().sent), 1)
        self.assertEqual(len(cancelled), 1)
        self.assertTrue(logs.matching("caller went away before the answer 200"))


def deferLater(reactor, delay):
    return task.deferLater(reactor, delay, lambda: None)


class AccessAndModeTests(unittest.TestCase):

    def setUp(self):
        RecordingClient.instances = []

    @defer.inlineCallbacks
    def test_allowed_hosts_denies_others(self):
        _, url = start_server(self, SYLK_APPLE, "[server]\nallowed_hosts = 192.0.2.0/24, 2001:db8::/32\n")
        code, body, _ = yield post(url + "/push", wakeup())
        self.assertEqual((code, body), (403, {"code": 403, "description": "access denied by access list", "data": {}}))

    @defer.inlineCallbacks
    def test_allowed_hosts_admits_listed(self):
        _, url = start_server(self, SYLK_APPLE, "[server]\nallowed_hosts = 192.0.2.1, 127.0.0.0/8\n")
        code, _, _ = yield post(url + "/push", wakeup())
        self.assertEqual(code, 200)

    @defer.inlineCallbacks
    def test_return_async_false_answers_202(self):
        server, url = start_server(self, SYLK_APPLE, "[server]\nreturn_async = false\n")
        pending = Deferred()
        server.registry.get("com.example.sylk", "apple").client.answers["slow"] = pending
        code, body, _ = yield post(url + "/push", wakeup(token="slow"))
        self.assertEqual((code, body), (202, {"code": 202, "description": "accepted for delivery", "data": {}}))
        code, body, _ = yield post(url + "/push", wakeup(token=None))
        self.assertEqual(code, 400)
        pending.callback(PushResult(200, "OK", "u"))

    @defer.inlineCallbacks
    def test_client_not_available_answers_503(self):
        from sylkpush.config import ConfigError

        def missing(platform, extra_dir):
            raise ConfigError(f"no push service module for platform {platform}")
        _, url = start_server(self, SYLK_APPLE, find_client=missing)
        code, body, _ = yield post(url + "/push", wakeup())
        self.assertEqual(code, 503)
        self.assertEqual(body["data"]["reason"],
                         "push service for Apple com.example.sylk is not available: "
                         "no push service module for platform apple")

    def start_tls_server(self):
        """A server on HTTPS with a certificate for 127.0.0.1: its URL and the CA file to trust."""
        ca = CertificateAuthority()
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        pem, _ = ca.server(("127.0.0.1",)).write(directory, "api", combined=True)
        _, url = start_server(self, SYLK_APPLE, f"[server]\ntls_certificate = {pem}\n")
        return url, ca.write(directory)

    @defer.inlineCallbacks
    def test_tls_listening(self):
        url, ca_path = self.start_tls_server()
        with open(ca_path, "rb") as stream:
            trust = ssl.Certificate.loadPEM(stream.read())
        agent = Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=trust),
                      pool=HTTPConnectionPool(reactor, persistent=False))
        client = HTTPClient(agent)
        self.assertTrue(url.startswith("https://"))
        response = yield client.post(url + "/push", json=wakeup())
        body = yield response.json()
        self.assertEqual((response.code, body["code"]), (200, 200))

    @defer.inlineCallbacks
    def test_tls_listening_with_clients_that_offer_alpn(self):
        """curl, Python's http.client (sylk-pushclient) and Go offer ALPN: the
        handshake settles on HTTP/1.1 instead of being aborted."""
        url, ca_path = self.start_tls_server()
        port = int(url.rsplit(":", 1)[1])

        def get_health(offer):
            context = stdlib_ssl.create_default_context(cafile=ca_path)
            context.set_alpn_protocols(offer)
            connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=context)
            try:
                connection.request("GET", "/health")
                response = connection.getresponse()
                response.read()
                return connection.sock.selected_alpn_protocol(), response.status
            finally:
                connection.close()

        for offer in (["h2", "http/1.1"], ["http/1.1"]):
            protocol, status = yield threads.deferToThread(get_health, offer)
            self.assertEqual((protocol, status), ("http/1.1", 200))
