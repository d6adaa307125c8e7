"""Reconnect backoff and deadlines of AppleClient, driven by a Clock."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.defer import fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from sylkpush.pns.apple import AppleClient
from sylkpush.testing.fake_apns import FakeAPNs
from tests.apple_helpers import make_push


class RefusedEndpoint:
    def __init__(self, attempts: list, clock: Clock) -> None:
        self.attempts = attempts
        self.clock = clock

    def connect(self, factory):
        self.attempts.append(self.clock.seconds())
        return fail(ConnectionRefusedError("nobody listens"))


class UnreachableAppleClient(AppleClient):
    """An AppleClient whose every connection attempt is refused at once."""

    def _resolve(self):
        return succeed([IPv4Address("TCP", "127.0.0.1", self.port)])

    def _endpoint(self, address):
        return RefusedEndpoint(self.attempts, self.reactor)


class BackoffTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        fake = FakeAPNs(self.clock, directory=self.mktemp())
        # one connection: the schedule is that of each connection of the pool
        self.client = UnreachableAppleClient(fake.app_config(), self.clock, connections=1)
        self.client.attempts = []
        self.client.start()
        self.addCleanup(self.client.stop)

    def test_reconnect_schedule(self):
        for _ in range(26000):  # 260 s in 10 ms steps
            self.clock.advance(0.01)
        times = self.client.attempts
        gaps = [later - earlier for earlier, later in zip(times, times[1:])]
        nominal = [1, 2, 4, 8, 16, 32] + [60] * (len(gaps) - 6)
        self.assertGreaterEqual(len(gaps), 8, gaps)
        for gap, expected in zip(gaps, nominal):
            # jitter takes up to a quarter off, never adds
            self.assertGreaterEqual(gap, expected * 0.75 - 0.011, gaps)
            self.assertLessEqual(gap, expected + 0.011, gaps)
        self.assertEqual(self.client.status()["reconnects"], len(times))
        self.assertEqual(self.client.connection_status()["state"], "disconnected")
        status = self.client.status()
        self.assertEqual((status["state"], status["connect_failures"]), ("failing", len(times)))
        self.assertIn("nobody listens", status["last_error"])
        self.assertEqual(status["last_failure_reason"], status["last_error"])

    def test_queued_push_answered_503_at_its_deadline(self):
        answered = self.client.send(make_push(self.clock, deadline_in=64))
        self.clock.advance(63.9)
        self.assertFalse(answered.called)
        self.clock.advance(0.2)
        result = self.successResultOf(answered)
        self.assertEqual(result.code, 503)
        self.assertIn("deadline passed: connection to 127.0.0.1:0 failed", result.reason)
        self.assertIn("nobody listens", result.reason)
        self.assertEqual(self.client.status()["queued"], 0)

    def test_stop_cancels_timers(self):
        self.client.send(make_push(self.clock, deadline_in=600))
        self.clock.advance(5)
        stopped = self.client.stop()
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.successResultOf(self.client.send(make_push(self.clock))).code, 503)

    def test_backoff_never_outlasts_a_waiting_call(self):
        # the schedule has grown to 32 s, then 60 s gaps
        for _ in range(6400):
            self.clock.advance(0.01)
        before = len(self.client.attempts)
        sent_at = self.clock.seconds()
        self.client.send(make_push(self.clock, deadline_in=20))
        for _ in range(1800):  # 18 s
            self.clock.advance(0.01)
        tries = [t for t in self.client.attempts[before:] if sent_at < t <= sent_at + 18.01]
        self.assertTrue(tries, (sent_at, self.client.attempts))

    def test_attempts_keep_coming_until_the_deadline(self):
        answered = self.client.send(make_push(self.clock, deadline_in=64))
        for _ in range(6500):
            self.clock.advance(0.01)
        times = self.client.attempts
        # 1, 3, 7, 15, 31 s as usual (less jitter), then no gap of 32 s past the deadline
        self.assertTrue(any(60 <= t < 64 for t in times), times)
        self.assertEqual(self.successResultOf(answered).code, 503)
