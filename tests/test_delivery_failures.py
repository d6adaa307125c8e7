"""The delivery failures found by driving AppleClient with a Clock against an
in-memory HTTP/2 peer, one test class per finding, and the dispatcher's
outer deadline.  Time is the Clock's: every "within N s" is exact."""

from __future__ import annotations

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock
from twisted.trial import unittest

from sylkpush.config import AppConfig
from sylkpush.dispatch import Dispatcher
from sylkpush.pns.base import PushClient
from sylkpush.app_registry import AppRegistry, Application
from tests.apple_helpers import make_push
from tests.helpers import wakeup
from tests.memory_apns import Behaviour, MemoryNetwork, memory_client

MINUTES_17 = 17 * 60.0


def advance_until(clock: Clock, done, limit: float, step: float = 0.01) -> float:
    """Advance ``clock`` in steps until ``done()`` or ``limit`` seconds passed; the time it took."""
    started = clock.seconds()
    while not done() and clock.seconds() - started < limit:
        clock.advance(step)
    return clock.seconds() - started


def pool_size(client) -> int:
    return getattr(client, "pool_size", 1)


class Setup:
    def start(self, **kwargs):
        self.clock = Clock()
        self.network = MemoryNetwork(self.clock, **{k: kwargs.pop(k) for k in ("default", "behaviours")
                                                    if k in kwargs})
        self.client = memory_client(self, self.clock, self.network, **kwargs)
        self.clock.advance(0.1)
        return self.client

    def send(self, name: str = "call", deadline_in: float = 64.0):
        return self.client.send(make_push(self.clock, request_id=name, deadline_in=deadline_in))

    def send_and_wait(self, name: str = "call", limit: float = 1.0):
        answered = self.send(name)
        advance_until(self.clock, lambda: answered.called, limit)
        return self.successResultOf(answered)


class HalfOpenConnectionTests(Setup, unittest.TestCase):
    """1. A connection that goes silent (no FIN, no RST) costs a call at most 5 s."""

    def test_call_sent_on_a_silent_connection_answered_within_5_s(self):
        self.start()
        for n in range(4):  # the connections are healthy and have served pushes
            self.assertEqual(self.send_and_wait(f"warm-{n}").code, 200)
        for connection in self.network.ready_connections:
            connection.silent = True
        answered = self.send("call")
        took = advance_until(self.clock, lambda: answered.called, 64)
        result = self.successResultOf(answered)
        self.assertEqual(result.code, 200, result.reason)
        self.assertLessEqual(took, 5.0)
        self.assertEqual(sorted(self.network.deliveries.values()), [1] * 5)
        status = self.client.status()
        self.assertEqual((status["queued"], status["in_flight"]), (0, 0))

    def test_reason_of_a_push_lost_to_silent_connections(self):
        self.start(default=Behaviour(silent_after_settings=True))
        answered = self.send("call", deadline_in=10)
        advance_until(self.clock, lambda: answered.called, 11)
        result = self.successResultOf(answered)
        self.assertEqual(result.code, 503)
        self.assertNotIn("no connection to APNs yet", result.reason)
        self.assertIn("silent", result.reason)


class HandshakeTimeoutTests(Setup, unittest.TestCase):
    """2. A peer that accepts TCP and never speaks TLS or SETTINGS is given up on within 10 s."""

    def test_stuck_handshake_abandoned_and_replaced(self):
        self.clock = Clock()
        self.network = MemoryNetwork(self.clock, default=Behaviour(handshake=False))
        self.client = memory_client(self, self.clock, self.network)
        stuck = list(self.network.connections)
        self.assertTrue(stuck)
        self.network.default = Behaviour()  # the next attempts find a working peer
        answered = self.send("call")
        self.clock.advance(10.0)
        self.assertEqual([c.open for c in stuck], [False] * len(stuck))
        self.clock.advance(0.01)
        self.assertIn("no TLS handshake and SETTINGS within 10 s", self.client.status()["last_error"])
        took = advance_until(self.clock, lambda: answered.called, 54) + 10.01
        self.assertEqual(self.successResultOf(answered).code, 200)
        self.assertLessEqual(took, 12.0)


class BoundTests(Setup, unittest.TestCase):
    """3. Queued + in flight + waiting to retry never exceed the bound, whatever APNs answers."""

    def test_500_to_everything_keeps_within_the_bound(self):
        self.start(default=Behaviour(answer=lambda c, h: (500, "InternalServerError")), queue_limit=10)
        answers = []
        accepted = 0
        for n in range(2000):
            answered = self.send(f"message-{n}", deadline_in=MINUTES_17)
            if answered.called:
                result = self.successResultOf(answered)
                self.assertEqual(result.code, 503)
                answers.append(result)
            else:
                accepted += 1
            self.clock.advance(0.01)
            status = self.client.status()
            self.assertLessEqual(status["queued"] + status["in_flight"] + status["retrying"], 10, status)
        self.assertLessEqual(accepted, 10 + 20)  # a few are answered at their deadline meanwhile
        self.assertIn("10", answers[-1].reason)


class StreamIdTests(Setup, unittest.TestCase):
    """4. A connection is retired before its stream ids run out; nothing leaks."""

    def test_pushes_delivered_when_ids_run_out(self):
        self.start()
        for connection in self.network.ready_connections:
            connection.protocol.highest_outbound_stream_id = 2 ** 31 - 5
        made = len(self.network.connections)
        sends = [self.send(f"push-{n}") for n in range(10)]
        advance_until(self.clock, lambda: all(d.called for d in sends), 5)
        self.assertEqual([self.successResultOf(d).code for d in sends], [200] * 10)
        self.assertGreater(len(self.network.connections), made)
        self.assertEqual(sorted(self.network.deliveries.values()), [1] * 10)
        self.assertEqual(self.client.status()["in_flight"], 0)
        self.assertEqual(self.send_and_wait("later").code, 200)


class ReconnectTimingTests(Setup, unittest.TestCase):
    """5. Backoff is reset by an answered push only; a healthy connection's GOAWAY is followed at once."""

    def test_peer_that_drops_after_settings_gets_backoff(self):
        self.start(default=Behaviour(drop_after_settings=True))
        self.clock.pump([0.01] * 6000)
        per_connection = len(self.network.connect_times) / pool_size(self.client)
        self.assertLessEqual(per_connection, 8, self.network.connect_times)

    def test_goaway_of_a_healthy_connection_reconnects_at_once(self):
        self.start()
        for n in range(8):
            self.assertEqual(self.send_and_wait(f"warm-{n}").code, 200)
        made = len(self.network.connections)
        goaway_at = self.clock.seconds()
        for connection in self.network.ready_connections:
            connection.goaway()
        self.clock.advance(0.01)
        answered = self.send("call")
        took = advance_until(self.clock, lambda: answered.called, 5, step=0.001)
        self.assertEqual(self.successResultOf(answered).code, 200)
        self.assertLess(took, 0.05)
        self.assertLess(self.network.connect_times[made] - goaway_at, 0.05)


class _Silent(PushClient):
    """A custom push-service client whose Deferred never fires."""

    platform = "apple"

    def send(self, push):
        return Deferred()


class DispatcherDeadlineTests(unittest.TestCase):
    """6. A client that never answers cannot keep the caller waiting past the deadline."""

    def test_caller_answered_at_the_deadline(self):
        from sylkpush.applications.renderer_classes import renderer_classes
        clock = Clock()
        config = AppConfig(section="s", app_id="com.example.sylk", app_type="sylk", platform="apple")
        headers, payload = renderer_classes("sylk", "apple")
        registry = AppRegistry([Application(config, headers, payload, _Silent(config, clock))])
        dispatcher = Dispatcher(lambda: registry, clock)
        prepared = dispatcher.prepare(wakeup(), "127.0.0.1")
        answer = ensureDeferred(dispatcher.deliver(prepared))
        clock.advance(63.9)
        self.assertFalse(answer.called)
        clock.advance(1.2)
        result = self.successResultOf(answer)
        self.assertIn(result.code, (503, 504))
        self.assertIn("no answer", result.description)
        self.assertEqual(dispatcher.in_flight, 0)


class StreamLimitTests(Setup, unittest.TestCase):
    """7. A peer that says nothing about its stream limit gets at most 1000 streams."""

    def test_at_most_1000_streams_without_a_limit_from_the_peer(self):
        self.start(default=Behaviour(max_streams=None, answer=lambda c, h: None))
        for n in range(1500):
            self.send(f"message-{n}", deadline_in=MINUTES_17)
        self.clock.advance(0)  # the end of the reactor pass: the requests are written
        self.clock.advance(0.1)
        self.assertLessEqual(max(c.max_open for c in self.network.connections), 1000)
        self.assertEqual(self.network.received, min(1500, 1000 * pool_size(self.client)))


class RefusedStreamTests(Setup, unittest.TestCase):
    """8. REFUSED_STREAM is resent after a backoff and consumes an attempt."""

    def test_refusing_peer_gets_no_tight_loop(self):
        self.start(default=Behaviour(answer=lambda c, h: (0, "")))
        answered = self.send("call")
        self.clock.pump([0.01] * 500)
        self.assertLessEqual(self.network.received, 10)
        advance_until(self.clock, lambda: answered.called, 64)
        result = self.successResultOf(answered)
        self.assertEqual(result.code, 503)
        self.assertIn("REFUSED_STREAM", result.reason)


class BrokenPeerTests(Setup, unittest.TestCase):
    """9. A peer that breaks HTTP/2 gets GOAWAY; its pushes go out again at once on another connection."""

    def test_pushes_of_a_connection_ended_for_a_broken_frame_delivered_elsewhere(self):
        def broken(connection, headers):
            # a WINDOW_UPDATE of 3 bytes instead of an answer
            connection.carry(connection.protocol.dataReceived, b"\x00\x00\x03\x08\x00\x00\x00\x00\x00\x00\x00\x01")
            return None
        self.start(behaviours=(Behaviour(answer=broken),))
        sends = [self.send(f"push-{n}") for n in range(4)]
        took = advance_until(self.clock, lambda: all(d.called for d in sends), 5)
        self.assertEqual([self.successResultOf(d).code for d in sends], [200] * 4)
        self.assertLess(took, 0.1)
        self.assertEqual(sorted(self.network.deliveries.values()), [1] * 4)
        first = self.network.connections[0]
        self.assertGreater(first.received, 0)
        self.assertEqual((first.answered, first.open), (0, False))  # it got GOAWAY and was closed
        self.assertEqual(self.client.status()["in_flight"], 0)
        self.assertEqual(self.send_and_wait("later").code, 200)
