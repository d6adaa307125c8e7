"""AppleClient against the fake APNs on loopback: auth, error mapping, faults."""

from __future__ import annotations

import dataclasses
import socket

import jwt
from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from sylkpush.config import ConfigError
from sylkpush.pns.apple import AppleClient
from tests.apple_helpers import TOKEN, TOPIC, FakeAPNsMixin
from tests.doubles import capture_logs


def _apns_ids(fake):
    return [delivery.apns_id for delivery in fake.notifications]


class CertificateAuthTests(FakeAPNsMixin, TestCase):
    auth = "certificate"

    @inlineCallbacks
    def test_delivered_with_headers_and_payload(self):
        push = self.push(payload={"event": "incoming_session", "call-id": "c1"}, voip=True)
        result = yield self.client.send(push)
        self.assertEqual(result.code, 200)
        self.assertEqual(result.url, f"https://127.0.0.1:{self.fake.port}/3/device/{TOKEN}")
        self.assertEqual(result.body, {})
        [delivery] = self.fake.notifications
        self.assertEqual(delivery.auth, "certificate")
        self.assertEqual(delivery.token, TOKEN)
        self.assertEqual(delivery.payload, {"event": "incoming_session", "call-id": "c1"})
        self.assertEqual(delivery.headers["apns-topic"], TOPIC)
        self.assertEqual(delivery.headers["apns-push-type"], "voip")
        self.assertEqual(delivery.headers["apns-priority"], "10")
        self.assertNotIn("authorization", delivery.headers)
        self.assertEqual(self.fake.deliveries[delivery.apns_id], 1)

    @inlineCallbacks
    def test_pushes_are_not_held_back_by_nagle(self):
        # a push is a few hundred bytes: with Nagle's algorithm one written while
        # the previous is unacknowledged waits for the server's delayed ACK
        result = yield self.client.send(self.push())
        self.assertEqual(result.code, 200)

        def no_delay(tls_transport):
            handle = tls_transport.transport.getHandle()  # the TCP socket under TLS
            return handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0

        self.assertTrue(self.client.ready)
        self.assertEqual([no_delay(p.transport) for p in self.client.ready], [True] * len(self.client.ready))
        # the fake answers at once too, as a real server does
        self.assertTrue(self.fake._connections)
        self.assertTrue(all(no_delay(c.transport) for c in self.fake._connections))

    @inlineCallbacks
    def test_requests_go_straight_to_the_socket(self):
        # a pass's requests are encrypted and sent as the pass ends, without
        # waiting for another pass to find the socket writable
        self.assertEqual((yield self.client.send(self.push())).code, 200)
        waited = []
        for protocol in self.client.ready:
            below = protocol.transport.transport  # the TCP connection under TLS
            below.startWriting = lambda below=below, start=below.startWriting: (waited.append(below), start())
        results = yield gatherResults([self.client.send(self.push(request_id=f"now-{n}")) for n in range(20)])
        self.assertEqual({result.code for result in results}, {200})
        self.assertEqual(len(self.fake.notifications), 21)
        self.assertEqual(waited, [])
        # encrypted and sent when the pass ends, not gathered again by Twisted for a later pass
        sent = []
        for protocol in self.client.ready:
            below = protocol.transport.transport
            below.write = lambda data, send=below.write: (sent.append(len(data)), send(data))
        answer = self.client.send(self.push(request_id="one-pass"))
        for protocol in self.client.ready:
            protocol.write_out()  # what the end of the pass does
        self.assertTrue(sent)
        self.assertEqual((yield answer).code, 200)

    @inlineCallbacks
    def test_the_payload_is_held_as_json_only_and_given_back_at_a_hand_over(self):
        payload = {"event": "incoming_session", "call-id": "c1", "from_display_name": "Zoë"}
        push = self.push(payload=dict(payload))
        result = yield self.client.send(push)
        self.assertEqual(result.code, 200)
        self.assertEqual(self.fake.notifications[0].payload, payload)
        self.assertEqual(push.payload, {})  # sent as JSON: the dict is not held while the push waits
        # with remote logging (which reads it) the payload stays
        logged = AppleClient(dataclasses.replace(self.fake.app_config(), log_remote_urls=("http://127.0.0.1:9/",)),
                             reactor)
        logged.start()
        self.addCleanup(logged.stop)
        kept = self.push(payload=dict(payload))
        result = yield logged.send(kept)
        self.assertEqual((result.code, kept.payload), (200, payload))
        # a push handed to another client (a reload) has its payload again
        idle = AppleClient(self.fake.app_config(), reactor)
        idle.started = True  # no connection: the push waits in the queue
        waiting = self.push(payload=dict(payload))
        answer = idle.send(waiting)
        [taken] = idle.take_waiting()
        self.assertEqual(taken.push.payload, payload)
        taken.fail("the test is over")
        self.assertEqual(self.successResultOf(answer).code, 503)

    @inlineCallbacks
    def test_bad_device_token_is_410(self):
        result = yield self.client.send(self.push(token="not-a-hex-token"))
        self.assertEqual(result.code, 410)
        self.assertTrue(result.reason.startswith("BadDeviceToken - The specified device token is invalid"))
        self.assertEqual(result.body, {"reason": "BadDeviceToken"})

    @inlineCallbacks
    def test_unregistered_is_410_with_timestamp(self):
        self.fake.answer_token(TOKEN, 410, "Unregistered")
        result = yield self.client.send(self.push())
        self.assertEqual(result.code, 410)
        self.assertTrue(result.reason.startswith("Unregistered - The device token is inactive"))
        self.assertEqual(result.body["reason"], "Unregistered")
        self.assertIsInstance(result.body["timestamp"], int)
        self.assertEqual(self.fake.notifications, [])

    @inlineCallbacks
    def test_other_4xx_returned_without_retry(self):
        self.fake.topics = ("com.example.other",)
        result = yield self.client.send(self.push())
        self.assertEqual((result.code, result.body), (400, {"reason": "BadTopic"}))
        self.assertEqual(result.reason, "BadTopic - The apns-topic value is invalid.")
        result = yield self.client.send(self.push(headers={"apns-priority": "7"}))
        self.assertEqual((result.code, result.body["reason"]), (400, "BadTopic"))
        self.fake.topics = ()
        result = yield self.client.send(self.push(headers={"apns-priority": "7"}))
        self.assertEqual((result.code, result.body["reason"]), (400, "BadPriority"))
        result = yield self.client.send(self.push(headers={"apns-expiration": "soon"}))
        self.assertEqual((result.code, result.body["reason"]), (400, "BadExpirationDate"))
        result = yield self.client.send(self.push(headers={"apns-push-type": "loud"}))
        self.assertEqual((result.code, result.body["reason"]), (400, "InvalidPushType"))
        self.assertEqual(self.fake.requests_received, 5)

    @inlineCallbacks
    def test_too_many_requests_returned(self):
        self.fake.answer_token(TOKEN, 429, "TooManyRequests")
        result = yield self.client.send(self.push())
        self.assertEqual(result.code, 429)
        self.assertTrue(result.reason.startswith("TooManyRequests - Too many requests"))
        self.assertEqual(self.fake.requests_received, 1)

    @inlineCallbacks
    def test_payload_too_large_is_413_before_sending(self):
        big = {"data": "x" * 4100}
        result = yield self.client.send(self.push(payload=big))
        self.assertEqual(result.code, 413)
        self.assertTrue(result.reason.startswith("PayloadTooLarge - "))
        self.assertEqual(self.fake.requests_received, 0)
        # voip notifications may be up to 5120 bytes
        result = yield self.client.send(self.push(payload={"data": "x" * 5000}, voip=True))
        self.assertEqual(result.code, 200)
        result = yield self.client.send(self.push(payload={"data": "x" * 5200}, voip=True))
        self.assertEqual(result.code, 413)
        self.assertEqual(self.fake.requests_received, 1)

    @inlineCallbacks
    def test_5xx_retried_within_deadline(self):
        self.fake.fail_next(2, 500)
        self.fake.fail_next(1, 503)
        result = yield self.client.send(self.push())
        self.assertEqual(result.code, 200)
        self.assertEqual(self.fake.requests_received, 4)
        self.assertEqual(len(self.fake.notifications), 1)

    @inlineCallbacks
    def test_5xx_until_deadline_is_503(self):
        self.fake.fail_next(1000, 500)
        result = yield self.client.send(self.push(deadline_in=0.4))
        self.assertEqual(result.code, 503)
        self.assertIn("InternalServerError", result.reason)
        self.assertGreater(self.fake.requests_received, 1)
        self.assertEqual(self.fake.notifications, [])

    @inlineCallbacks
    def test_apns_id_of_our_own_only_when_configured(self):
        self.fake.fail_next(2, 500)
        result = yield self.client.send(self.push())  # apple_apns_id = true: one id, on every try
        self.assertEqual(result.code, 200)
        [apns_id] = set(self.fake.apns_ids_received)
        self.assertEqual(self.fake.notifications[0].apns_id, apns_id)
        self.assertEqual(len(self.fake.apns_ids_received), 3)
        client = AppleClient(self.fake.app_config(apns_id=False), reactor)
        client.start()
        self.addCleanup(client.stop)
        result = yield client.send(self.push())
        self.assertEqual(result.code, 200)
        self.assertEqual(self.fake.apns_ids_received[-1], "")
        self.assertNotIn("apns-id", self.fake.notifications[-1].headers)

    @inlineCallbacks
    def test_reset_stream_retried(self):
        self.fake.reset_next(2)
        result = yield self.client.send(self.push())
        self.assertEqual(result.code, 200)
        self.assertEqual(self.fake.requests_received, 3)
        self.assertEqual(len(self.fake.notifications), 1)

    @inlineCallbacks
    def test_fake_restarted_with_100_queued(self):
        yield self.fake.stop()
        results = [self.client.send(self.push(request_id=f"r{i}")) for i in range(100)]
        yield deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(self.client.status()["queued"], 100)
        yield self.fake.start()
        results = yield gatherResults(results)
        self.assertEqual([r.code for r in results], [200] * 100)
        self.assertEqual(len(self.fake.notifications), 100)
        self.assertEqual(set(self.fake.deliveries.values()), {1})
        self.assertGreater(self.client.status()["reconnects"], 0)

    @inlineCallbacks
    def test_fake_down_past_deadline_is_503(self):
        yield self.fake.stop()
        # HostnameEndpoint takes 0.3 s to report a refused connection
        result = yield self.client.send(self.push(deadline_in=0.8))
        self.assertEqual(result.code, 503)
        self.assertIn("deadline passed", result.reason)
        self.assertIn("127.0.0.1", result.reason)
        self.assertIn(self.client.status()["state"], ("connecting", "disconnected", "failing"))

    @inlineCallbacks
    def test_queue_full_is_503_at_once(self):
        yield self.fake.stop()
        client = self.new_client(queue_limit=5)
        waiting = [client.send(self.push(request_id=f"r{i}", deadline_in=0.3)) for i in range(5)]
        extra = client.send(self.push(request_id="r5"))
        self.assertTrue(extra.called)
        result = self.successResultOf(extra)
        self.assertEqual(result.code, 503)
        self.assertIn("queue full", result.reason)
        results = yield gatherResults(waiting)
        self.assertEqual({r.code for r in results}, {503})

    @inlineCallbacks
    def test_goaway_mid_burst_loses_nothing(self):
        self.fake.delay = 0.005
        self.fake.goaway_after(30)
        results = yield gatherResults([self.client.send(self.push(request_id=f"r{i}"))
                                       for i in range(100)])
        self.assertEqual([r.code for r in results], [200] * 100)
        self.assertEqual(len(self.fake.notifications), 100)
        self.assertEqual(set(self.fake.deliveries.values()), {1})
        self.assertGreaterEqual(self.fake.connections_made, 2)

    @inlineCallbacks
    def test_graceful_goaway_answers_are_kept_not_sent_twice(self):
        """A server shutting down answers the streams it took after its GOAWAY:
        those answers count, and nothing is sent (and delivered) a second time."""
        self.fake.delay = 0.1
        sends = [self.client.send(self.push(request_id=f"r{i}")) for i in range(40)]
        for _ in range(500):
            if self.fake.requests_received == 40:
                break
            yield deferLater(reactor, 0.01, lambda: None)
        self.fake.goaway_gracefully()
        sends += [self.client.send(self.push(request_id=f"r{i}")) for i in range(40, 60)]
        results = yield gatherResults(sends)
        self.assertEqual([r.code for r in results], [200] * 60)
        self.assertEqual(self.fake.requests_received, 60)
        self.assertEqual(len(self.fake.notifications), 60)
        self.assertEqual(set(self.fake.deliveries.values()), {1})
        # each connection of the pool replaced once
        self.assertEqual(self.fake.connections_made, 2 * self.client.pool_size)

    @inlineCallbacks
    def test_connection_dropped_mid_stream_loses_nothing(self):
        self.fake.delay = 0.005
        sends = [self.client.send(self.push(request_id=f"r{i}")) for i in range(20)]
        self.fake.drop_next(1)
        sends += [self.client.send(self.push(request_id=f"r{i}")) for i in range(20, 50)]
        results = yield gatherResults(sends)
        self.assertEqual([r.code for r in results], [200] * 50)
        self.assertEqual(self.fake.dropped, 1)
        self.assertEqual(len(self.fake.notifications), 50)
        self.assertEqual(set(self.fake.deliveries.values()), {1})

    @inlineCallbacks
    def test_stop_lets_in_flight_finish(self):
        self.fake.delay = 0.05
        sends = [self.client.send(self.push(request_id=f"r{i}")) for i in range(5)]
        # in flight means the fake has them (connecting can take a while on a busy machine)
        for _ in range(500):
            if self.fake.requests_received == 5:
                break
            yield deferLater(reactor, 0.01, lambda: None)
        yield self.client.stop()
        results = yield gatherResults(sends)
        self.assertEqual([r.code for r in results], [200] * 5)
        late = yield self.client.send(self.push())
        self.assertEqual(late.code, 503)
        self.assertEqual(self.client.status()["state"], "stopped")

    @inlineCallbacks
    def test_stop_answers_queued_503_without_connection(self):
        yield self.fake.stop()
        client = self.new_client()
        waiting = client.send(self.push(deadline_in=30))
        yield client.stop()
        result = yield waiting
        self.assertEqual(result.code, 503)
        self.assertIn("stopped", result.reason)


class StreamLimitTests(FakeAPNsMixin, TestCase):
    fake_options = {"max_concurrent_streams": 2, "delay": 0.01}

    @inlineCallbacks
    def test_never_more_streams_than_advertised(self):
        results = yield gatherResults([self.client.send(self.push(request_id=f"r{i}"))
                                       for i in range(20)])
        self.assertEqual([r.code for r in results], [200] * 20)
        self.assertEqual(self.fake.max_open_streams, 2)
        self.assertEqual(self.fake.protocol_errors, [])


class TokenAuthTests(FakeAPNsMixin, TestCase):
    auth = "token"

    @inlineCallbacks
    def test_delivered_with_provider_token(self):
        result = yield self.client.send(self.push())
        self.assertEqual(result.code, 200)
        [delivery] = self.fake.notifications
        self.assertEqual(delivery.auth, "token")
        scheme, token = delivery.headers["authorization"].split(" ")
        self.assertEqual(scheme, "bearer")
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
        self.assertEqual((header["alg"], header["kid"]), ("ES256", self.fake.key_id))
        self.assertEqual(claims["iss"], self.fake.team_id)
        self.assertLess(abs(claims["iat"] - reactor.seconds()), 60)

    @inlineCallbacks
    def test_one_token_for_1000_pushes_then_renewed_when_expired(self):
        results = yield gatherResults([self.client.send(self.push(request_id=f"r{i}"))
                                       for i in range(1000)])
        self.assertEqual({r.code for r in results}, {200})
        self.assertEqual(len(self.fake.tokens_seen), 1)
        self.fake.expire_provider_tokens()
        result = yield self.client.send(self.push())
        self.assertEqual(result.code, 200)
        self.assertEqual(len(self.fake.tokens_seen), 2)
        self.assertEqual(self.client.auth.generated, 2)
        self.assertEqual(self.fake.answers[403], 1)
        self.assertEqual(len(self.fake.notifications), 1001)

    @inlineCallbacks
    def test_provider_token_never_logged(self):
        records = capture_logs(self, redact=False).lines  # the client's own redaction
        result = yield self.client.send(self.push(request_id="rid-42"))
        self.assertEqual(result.code, 200)
        [token] = self.fake.tokens_seen
        self.assertTrue(any("rid-42" in line and "<redacted>" in line for line in records))
        self.assertTrue(any("rid-42" in line and "200" in line for line in records))
        self.assertFalse([line for line in records if token in line or token[-20:] in line])

    @inlineCallbacks
    def test_expired_token_retried_once_only(self):
        self.fake.answer_token(TOKEN, 403, "ExpiredProviderToken")
        result = yield self.client.send(self.push())
        self.assertEqual(result.code, 403)
        self.assertTrue(result.reason.startswith("ExpiredProviderToken - "))
        self.assertEqual(self.fake.requests_received, 2)

    @inlineCallbacks
    def test_wrong_key_is_invalid_provider_token(self):
        from sylkpush.testing.fake_apns import FakeAPNs
        other = FakeAPNs(reactor, directory=self.mktemp())
        app = self.fake.app_config(auth="token")
        client = AppleClient(type(app)(**{**app.__dict__, "apple_key": other.auth_key_file}), reactor)
        client.start()
        self.addCleanup(client.stop)
        result = yield client.send(self.push())
        self.assertEqual(result.code, 403)
        self.assertEqual(result.body, {"reason": "InvalidProviderToken"})


class ConfigurationTests(TestCase):
    def test_neither_auth_configured(self):
        from sylkpush.config import AppConfig
        app = AppConfig(section="x", app_id="x", app_type="sylk", platform="apple")
        with self.assertRaisesRegex(ConfigError, "neither"):
            AppleClient(app, reactor)


class DevicePathTests(TestCase):
    """The token goes into :path so that no token forms a dot-segment or leaves /3/device/."""

    def test_paths(self):
        from sylkpush.pns.apple import device_path
        self.assertEqual(device_path(TOKEN), "/3/device/" + TOKEN)
        self.assertEqual(device_path(".."), "/3/device/%2E%2E")
        self.assertEqual(device_path("."), "/3/device/%2E")
        self.assertEqual(device_path("../../x"), "/3/device/..%2F..%2Fx")
        self.assertEqual(device_path("a?b#c d"), "/3/device/a%3Fb%23c%20d")

    def test_dot_dot_token_sent_encoded(self):
        from twisted.internet.task import Clock

        from tests.apple_helpers import make_push
        from tests.memory_apns import MemoryNetwork, memory_client
        clock = Clock()
        network = MemoryNetwork(clock)
        client = memory_client(self, clock, network)
        clock.advance(0.1)
        answer = client.send(make_push(clock, token=".."))
        clock.pump([0.01] * 10)
        result = self.successResultOf(answer)
        self.assertEqual(result.url, "https://127.0.0.1/3/device/%2E%2E")
        self.assertEqual(network.delivered_paths, ["/3/device/%2E%2E"])
