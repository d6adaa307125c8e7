"""The APNs connection pool on a Clock: its size, name resolution at every
connect, connections spread over the addresses, status."""

from __future__ import annotations

import os

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial import unittest

from sylkpush.config import ConfigError
from sylkpush.pns.apple import AppleClient, pool_size_of
from tests.apple_helpers import make_push
from tests.memory_apns import Behaviour, MemoryNetwork, memory_app, memory_client

A = IPv4Address("TCP", "192.0.2.1", 443)
B = IPv4Address("TCP", "192.0.2.2", 443)


class PoolSizeTests(unittest.TestCase):

    def app(self, value):
        directory = self.mktemp()
        os.makedirs(directory)
        options = (("apple_connections", value),) if value is not None else ()
        return memory_app(directory, options=options)

    def test_apple_connections(self):
        self.assertEqual(pool_size_of(self.app(None)), 2)
        self.assertEqual(pool_size_of(self.app(" 5 ")), 5)
        for bad in ("0", "33", "two", "-1", "1.5"):
            with self.assertRaisesRegex(ConfigError, "apple_connections must be a whole number from 1 to 32"):
                pool_size_of(self.app(bad))
        self.assertEqual(AppleClient(self.app("3"), Clock()).pool_size, 3)


class PoolTests(unittest.TestCase):

    def start(self, addresses, connections=2, **network):
        self.clock = Clock()
        self.network = MemoryNetwork(self.clock, **network)
        self.network.addresses = addresses
        self.client = memory_client(self, self.clock, self.network, connections=connections)
        return self.client

    def test_connections_spread_over_the_addresses_and_names_resolved_at_each_connect(self):
        client = self.start([A, B])
        self.clock.pump([0.01] * 200)
        peers = sorted(c.address.host for c in self.network.connections if c.open)
        self.assertEqual(peers, ["192.0.2.1", "192.0.2.2"])
        self.assertEqual(self.network.resolved, len(self.network.connections))
        status = client.status()
        self.assertEqual((status["state"], status["connections"], status["pool_size"]), ("connected", 2, 2))
        self.assertNotIn("last_error", status)

    def test_an_address_that_failed_is_avoided(self):
        # the connection to A never completes its handshake; the one to B works
        self.start([A, B], behaviours=(Behaviour(handshake=False), Behaviour()))
        self.clock.pump([0.01] * 100)
        self.assertEqual(self.client.status()["connections"], 1)
        self.clock.pump([0.1] * 120)  # the handshake timeout, then a new connection
        self.assertEqual([c.address.host for c in self.network.connections], ["192.0.2.1", "192.0.2.2",
                                                                              "192.0.2.2"])
        self.assertEqual(self.client.status()["connections"], 2)

    def test_pushes_go_round_the_connections(self):
        client = self.start([A], connections=3)
        self.clock.pump([0.01] * 50)
        sends = [client.send(make_push(self.clock, request_id=f"r{n}")) for n in range(9)]
        self.clock.pump([0.01] * 50)
        self.assertEqual([self.successResultOf(d).code for d in sends], [200] * 9)
        self.assertEqual(sorted(c.received for c in self.network.connections if c.open), [3, 3, 3])
