"""Failures that do not announce themselves, through the daemon's real Apple
client and the fake APNs on loopback: a connection that goes silent mid-burst
(no FIN, no RST), and an address that accepts TCP and never completes TLS.

Each call push must still be answered 200, within 10 s, and be delivered
exactly once.  (The detection itself is timed exactly, on a Clock, in
tests/test_delivery_failures.py; here the 10 s bound has seconds to spare.)
"""

from __future__ import annotations

import os

from twisted.internet import defer, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import succeed
from twisted.trial import unittest

from sylkpush.pns.apple import AppleClient
from sylkpush.testing.black_hole import BlackHole
from sylkpush.testing.fake_apns import FakeAPNs
from tests.apple_helpers import make_push
from tests.test_resilience import AppleLoad, LoadMixin, wait_until

#: what a call push may cost at most when a peer fails silently
CALL_BUDGET = 10.0


class TimedLoad(AppleLoad):
    """The resilience load, with the time each caller waited for its answer."""

    def setUp(self):
        self.waited = []
        return super().setUp()

    @defer.inlineCallbacks
    def one(self, call_id, answers):
        started = reactor.seconds()
        yield LoadMixin.one(self, call_id, answers)
        self.waited.append(reactor.seconds() - started)


class SilentConnectionTests(TimedLoad, unittest.TestCase):
    """One connection of the pool stops reading and answering mid-burst."""

    fake_delay = 0.05  # so requests are open on both connections when one goes silent

    @defer.inlineCallbacks
    def test_call_pushes_answered_and_delivered_once(self):
        connections = self.fake.connections_made

        def fault():
            self.assertTrue(self.fake.silence_one())
        answers = yield self.load(fault, count=240, after=40)
        self.check(answers)
        self.assertLess(max(self.waited), CALL_BUDGET, sorted(self.waited)[-5:])
        self.assertGreater(max(self.waited), 1.0)  # some calls did wait on the silent connection
        self.assertEqual(self.fake.silenced, 1)
        self.assertGreater(self.fake.connections_made, connections)  # the silent one was replaced
        yield self.drained()


def resolving_to(ports):
    """find_client for an Apple client whose host resolves to the loopback ``ports()``."""
    class Client(AppleClient):
        handshake_timeout = 2.0  # the Clock-driven tests hold the 10 s default

        def _resolve(self):
            return succeed([IPv4Address("TCP", "127.0.0.1", port) for port in ports()])
    return lambda platform, extra_dir: Client


class BlackHoleAddressTests(TimedLoad, unittest.TestCase):
    """The name resolves to a black hole (accepts TCP, never speaks TLS) and the real APNs."""

    def setUp(self):
        self.hole = BlackHole(reactor)
        self.hole.listen()
        self.addCleanup(self.hole.stop)
        self.find_client = resolving_to(lambda: [self.hole.port, self.fake.port])
        return super().setUp()

    @defer.inlineCallbacks
    def test_call_pushes_answered_and_delivered_once(self):
        answers = yield self.load(count=120)
        self.check(answers, count=120)
        self.assertLess(max(self.waited), CALL_BUDGET)
        self.assertEqual(self.hole.accepted, 1)
        # the stuck connection is given up and goes where the other one went
        yield wait_until(lambda: self.client.status()["connections"] == 2, limit=10)
        self.assertEqual(self.hole.accepted, 1)
        self.assertGreaterEqual(self.client.reconnects, 1)


class OnlyBlackHoleTests(unittest.TestCase):
    """Every address is a black hole: each attempt is given up, and the calls hear why."""

    @defer.inlineCallbacks
    def test_given_up_and_reported(self):
        hole = BlackHole(reactor)
        hole.listen()
        self.addCleanup(hole.stop)
        fake = FakeAPNs(reactor, directory=os.path.abspath(self.mktemp()))  # for its certificates
        client = resolving_to(lambda: [hole.port])("apple", None)(fake.app_config(), reactor)
        client.handshake_timeout = 1.0
        client.start()
        self.addCleanup(client.stop)
        result = yield client.send(make_push(reactor, deadline_in=3.5))
        self.assertEqual(result.code, 503)
        self.assertIn("no TLS handshake and SETTINGS within 1 s", result.reason)
        self.assertIn("no TLS handshake and SETTINGS within 1 s", client.status()["last_error"])
        self.assertGreaterEqual(hole.accepted, 3)  # given up, tried again
