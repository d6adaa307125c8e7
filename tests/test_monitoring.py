"""GET /health and GET /metrics."""

from __future__ import annotations

import os

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor, task
from twisted.internet.defer import Deferred
from twisted.trial import unittest

from sylkpush.pns.base import PushResult
from tests.helpers import SYLK_APPLE, SYLK_FIREBASE, RecordingClient, post, start_server, wakeup


class StatusClient(RecordingClient):
    """A RecordingClient whose status() is set by the test."""

    def __init__(self, app, reactor):
        super().__init__(app, reactor)
        self.state = {"state": "connected", "queued": 3, "in_flight": 1, "reconnects": 2, "token_refreshes": 4}

    def status(self):
        return dict(self.state)


def status_client_class(platform, extra_dir):
    return StatusClient


def samples(text):
    """{(name, frozenset(labels)): value} of a Prometheus exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample[0], frozenset(sample[1].items()))] = sample[2]
    return found


def labels(**values):
    return frozenset(values.items())


class HealthTests(unittest.TestCase):

    def setUp(self):
        RecordingClient.instances = []
        self.server, self.url = start_server(self, SYLK_APPLE + SYLK_FIREBASE, find_client=status_client_class)

    @defer.inlineCallbacks
    def test_all_up(self):
        code, body, _ = yield post(self.url + "/health", None, method="GET")
        self.assertEqual(code, 200)
        self.assertEqual(body["description"], "2 of 2 applications up")
        self.assertEqual(body["data"]["apple/com.example.sylk"], {
            "state": "connected", "queued": 3, "in_flight": 1, "reconnects": 2, "token_refreshes": 4,
            "up": True})

    @defer.inlineCallbacks
    def test_some_down(self):
        self.server.registry.get("com.example.sylk", "apple").client.state["state"] = "disconnected"
        code, body, _ = yield post(self.url + "/health", None, method="GET")
        self.assertEqual(code, 200)
        self.assertEqual(body["description"], "1 of 2 applications up")
        self.assertFalse(body["data"]["apple/com.example.sylk"]["up"])

    @defer.inlineCallbacks
    def test_all_down_is_503(self):
        for app in self.server.registry:
            app.client.state["state"] = "connecting"
        code, body, _ = yield post(self.url + "/health", None, method="GET")
        self.assertEqual((code, body["code"]), (503, 503))
        self.assertEqual(body["description"], "no application can deliver")
        self.assertEqual(set(body["data"]), {"apple/com.example.sylk", "firebase/com.example.sylk", "token-storage"})

    @defer.inlineCallbacks
    def test_failing_status_is_down_not_500(self):
        def broken():
            raise RuntimeError("boom")
        self.server.registry.get("com.example.sylk", "apple").client.status = broken
        code, body, _ = yield post(self.url + "/health", None, method="GET")
        self.assertEqual(code, 200)
        self.assertEqual(body["data"]["apple/com.example.sylk"]["state"], "error")

    @defer.inlineCallbacks
    def test_no_application_is_503(self):
        _, url = start_server(self, "")
        code, body, _ = yield post(url + "/health", None, method="GET")
        self.assertEqual(code, 503)
        self.assertEqual(body["description"], "no application is configured")

    @defer.inlineCallbacks
    def test_client_not_loaded_is_down(self):
        from sylkpush.config import ConfigError

        def no_client(platform, extra_dir):
            raise ConfigError("no module for you")
        _, url = start_server(self, SYLK_APPLE, find_client=no_client)
        code, body, _ = yield post(url + "/health", None, method="GET")
        self.assertEqual(code, 503)
        self.assertEqual(body["data"]["apple/com.example.sylk"]["reason"], "no module for you")

    @defer.inlineCallbacks
    def test_access_list_applies(self):
        _, url = start_server(self, SYLK_APPLE, "[server]\nallowed_hosts = 192.0.2.0/24\n")
        for path in ("/health", "/metrics"):
            code, body, _ = yield post(url + path, None, method="GET")
            self.assertEqual(code, 403)
            self.assertEqual(body["description"], "access denied by access list")


class MetricsTests(unittest.TestCase):

    def setUp(self):
        RecordingClient.instances = []
        self.server, self.url = start_server(self, SYLK_APPLE + SYLK_FIREBASE, find_client=status_client_class)

    def client(self, platform="apple"):
        return self.server.registry.get("com.example.sylk", platform).client

    @defer.inlineCallbacks
    def scrape(self, url=None):
        code, text, response = yield post((url or self.url) + "/metrics", None, method="GET")
        self.assertEqual(code, 200)
        self.assertTrue(response.headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain"))
        return samples(text), text

    @defer.inlineCallbacks
    def test_counts_after_a_mixed_run(self):
        apple = self.client()
        apple.answers["gone"] = PushResult(410, "Unregistered", "https://push.test/gone")
        apple.answers["down"] = PushResult(503, "no connection", "https://push.test/down")
        hanging = Deferred()
        apple.answers["hang"] = hanging
        push = self.url + "/push"
        calls = [post(push, wakeup(token=f"ok{i}")) for i in range(5)]
        calls += [post(push, wakeup(token="gone")) for _ in range(2)]
        calls += [post(push, wakeup(token="down"))]
        calls += [post(push, wakeup(platform="firebase", token=f"f{i}")) for i in range(3)]
        calls += [post(push, wakeup(**{"app-id": "com.example.other"})) for _ in range(4)]
        calls += [post(push, wakeup(media_type="fax")) for _ in range(2)]
        calls += [post(push, None, raw=b"{not json")]
        answers = yield defer.gatherResults(calls)
        self.assertEqual(sorted(code for code, _, _ in answers),
                         [200] * 8 + [400] * 3 + [404] * 4 + [410] * 2 + [503])
        waiting = post(push, wakeup(token="hang"))
        while not any(p.token == "hang" for p in apple.sent):
            yield task.deferLater(reactor, 0.01, lambda: None)

        found, text = yield self.scrape()
        requests = {(dict(k[1])["platform"], dict(k[1])["code"]): v for k, v in found.items()
                    if k[0] == "sylkpush_requests_total"}
        self.assertEqual(requests, {("apple", "200"): 5, ("apple", "410"): 2, ("apple", "503"): 1,
                                    ("firebase", "200"): 3})
        refused = {dict(k[1])["code"]: v for k, v in found.items() if k[0] == "sylkpush_refused_requests_total"}
        self.assertEqual(refused, {"400": 3, "404": 4})
        self.assertEqual(found[("sylkpush_in_flight", frozenset())], 1)
        self.assertEqual(found[("sylkpush_push_duration_seconds_count",
                                labels(app="com.example.sylk", platform="apple"))], 8)
        self.assertEqual(found[("sylkpush_push_duration_seconds_count",
                                labels(app="com.example.sylk", platform="firebase"))], 3)
        app = labels(app="com.example.sylk", platform="apple")
        self.assertEqual(found[("sylkpush_queued", app)], 3)
        self.assertEqual(found[("sylkpush_reconnects_total", app)], 2)
        self.assertEqual(found[("sylkpush_token_refreshes_total", app)], 4)
        self.assertEqual(found[("sylkpush_application_up", app)], 1)
        if os.environ.get("SYLKPUSH_FIGURES"):
            print("\n" + "\n".join(line for line in text.splitlines()
                                   if line.startswith(("sylkpush_requests_total", "sylkpush_refused",
                                                       "sylkpush_in_flight", "sylkpush_push_duration_seconds_count"))))

        hanging.callback(PushResult(200, "OK", "https://push.test/hang"))
        code, _, _ = yield waiting
        self.assertEqual(code, 200)
        found, _ = yield self.scrape()
        self.assertEqual(found[("sylkpush_in_flight", frozenset())], 0)
        self.assertEqual(found[("sylkpush_requests_total",
                                labels(app="com.example.sylk", platform="apple", code="200"))], 6)

    @defer.inlineCallbacks
    def test_each_server_has_its_own_registry(self):
        _, other = start_server(self, SYLK_APPLE, find_client=status_client_class)
        yield post(self.url + "/push", wakeup())
        found, _ = yield self.scrape(other)
        self.assertFalse([k for k in found if k[0] == "sylkpush_requests_total"])
        found, _ = yield self.scrape()
        self.assertEqual(found[("sylkpush_requests_total",
                                labels(app="com.example.sylk", platform="apple", code="200"))], 1)
