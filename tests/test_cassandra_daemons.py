"""Servers sharing one Cassandra cluster, through their v2 API, to the fake APNs; the cluster going away.

Needs the node of `make test-cassandra` (skipped without it).
"""

from __future__ import annotations

import os
import uuid

from twisted.internet import defer, reactor

from sylkpush.testing.fake_apns import FakeAPNs
from sylkpush.testing.tcp_proxy import TCPProxy
from sylkpush.tokens.cassandra_schema import DEVICES_TABLE
from tests.cassandra_node import NodeTestCase, forget_driver_timers, general_ini, node_settings
from tests.doubles import capture_logs
from tests.helpers import post, start_server, wakeup

APP = "com.example.sylk.prod"
VOIP_1, ALERT_1, VOIP_2 = "0a" * 32, "0b" * 32, "0c" * 32


class DaemonCase(NodeTestCase):

    @defer.inlineCallbacks
    def setUp(self):
        self.addCleanup(forget_driver_timers)  # runs last, once every server has closed its store
        self.logs = capture_logs(self)
        yield self.connect_shared()
        self.apns = FakeAPNs(reactor, directory=os.path.abspath(self.mktemp()))
        yield self.apns.start()
        self.addCleanup(self.apns.stop)
        self.account = f"alice@{uuid.uuid4().hex[:12]}.example.com"

    @defer.inlineCallbacks
    def server(self, settings):
        """A server with the fake APNs' application and ``settings`` as its [Cassandra]; its URL."""
        server, url = start_server(self, self.apns.applications_ini(APP, "sylk", voip=True),
                                   general_ini(settings), find_client=None)
        yield self.until(lambda: all(app.client.status()["state"] in ("connected", "ready")
                                     for app in server.registry), "connected to the fake APNs")
        yield self.until(lambda: server.tokens.status()["state"] != "connecting", "connected to Cassandra")
        return server, url

    def register(self, url, device_id, token):
        return post(f"{url}/v2/tokens/{self.account}", {"app-id": APP, "platform": "apple", "token": token,
                                                        "device-id": f"<urn:uuid:{device_id}>"})

    def push(self, url, call_id="c-1", device_id=None):
        return post(f"{url}/v2/tokens/{self.account}/push" + (f"/{device_id}" if device_id else ""),
                    {"event": "incoming_session", "call-id": call_id, "from": "bob@example.com", "to": self.account,
                     "media-type": "audio"})

    @defer.inlineCallbacks
    def marked(self):
        rows = yield self.execute(f"SELECT opensipsval FROM {self.keyspace}.{DEVICES_TABLE} WHERE opensipskey = %s",
                                  (self.account,))
        return [row.opensipsval for row in rows]


class TwoServersTests(DaemonCase):

    @defer.inlineCallbacks
    def test_registered_through_one_pushed_and_forgotten_through_the_other(self):
        first, first_url = yield self.server(node_settings())
        second, second_url = yield self.server(node_settings())
        self.assertNotEqual(first_url, second_url)
        for device_id, token in (("iphone", f"{VOIP_1}-{ALERT_1}"), ("ipad", VOIP_2)):
            code, body, _ = yield self.register(first_url, device_id, token)
            self.assertEqual(code, 200, body)
        self.assertEqual((yield self.marked()), ["1"])

        # pushed through the other server
        code, body, _ = yield self.push(second_url)
        self.assertEqual(code, 200, body)
        self.assertEqual(sorted((r["code"], r["token"]) for r in body["data"]), [(200, VOIP_1), (200, VOIP_2)])
        self.assertEqual(sorted(n.token for n in self.apns.notifications), sorted([VOIP_1, VOIP_2]))

        # APNs says one token is gone, to the second server: both forget it
        self.apns.answer_token(VOIP_2, 410, "Unregistered")
        code, body, _ = yield self.push(second_url, "c-2")
        self.assertEqual(sorted(r["code"] for r in body["data"]), [200, 410])
        for server in (first, second):
            found = yield server.tokens.devices(*self.account.split("@"))
            self.assertEqual([d.device_id for d in found], ["iphone"])
        code, body, _ = yield self.push(first_url, "c-3", device_id="ipad")
        self.assertEqual((code, body["description"]), (404, "Push request was not sent: device not found"))
        self.assertEqual((yield self.marked()), ["1"])  # iphone is left

        # the last one goes through the second server: the account leaves mobile_devices
        self.apns.answer_token(VOIP_1, 410, "Unregistered")
        code, body, _ = yield self.push(second_url, "c-4")
        self.assertEqual([r["code"] for r in body["data"]], [410])
        code, body, _ = yield self.push(first_url, "c-5")
        self.assertEqual((code, body["description"]), (404, "Push request was not sent: user not found"))
        self.assertEqual((yield self.marked()), [])

        # and comes back with a registration through the first
        code, _, _ = yield self.register(first_url, "iphone", f"{VOIP_1}-{ALERT_1}")
        self.assertEqual((code, (yield self.marked())), (200, ["1"]))


class ClusterOutageTests(DaemonCase):
    """The server's connection to the cluster is cut, then restored (a proxy in between)."""

    @defer.inlineCallbacks
    def test_v1_keeps_working_v2_says_why_then_recovers(self):
        host, _, port = os.environ["SYLKPUSH_CASSANDRA"].rpartition(":")
        proxy = TCPProxy(reactor, host, int(port))
        proxy.listen()
        self.addCleanup(proxy.stop)
        server, url = yield self.server(node_settings(port=proxy.port))
        code, _, _ = yield self.register(url, "iphone", VOIP_1)
        self.assertEqual(code, 200)

        yield proxy.cut()
        code, body, _ = yield post(url + "/push", wakeup(**{"app-id": APP, "token": VOIP_2, "call-id": "v1"}))
        self.assertEqual(code, 200, body)  # v1 needs no token storage
        code, body, _ = yield self.register(url, "ipad", VOIP_2)
        self.assertEqual(code, 503)
        self.assertTrue(body["description"].startswith("token storage unavailable: Cassandra: "), body)
        yield self.until(lambda: not server.tokens.status()["up"], "seen down")
        code, body, _ = yield self.push(url)
        self.assertEqual(code, 503)
        self.assertIn("no Cassandra node", body["description"])
        self.assertTrue(self.logs.matching("reading the devices failed: Cassandra: no Cassandra node"))
        code, body, _ = yield post(url + "/health", None, method="GET")
        self.assertEqual(code, 200)  # /push still delivers
        storage = body["data"]["token-storage"]
        self.assertEqual((storage["backend"], storage["state"], storage["up"]), ("cassandra", "unavailable", False))

        proxy.restore()
        yield self.until(lambda: server.tokens.status()["up"], "up again")
        code, body, _ = yield self.register(url, "ipad", VOIP_2)
        self.assertEqual(code, 200, body)
        code, body, _ = yield self.push(url)
        self.assertEqual((code, sorted(r["code"] for r in body["data"])), (200, [200, 200]))
        _, body, _ = yield post(url + "/health", None, method="GET")
        self.assertEqual(body["data"]["token-storage"]["state"], "open")
