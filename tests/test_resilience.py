"""Nothing lost, nothing doubled: /push under load while the fake APNs misbehaves.

The daemon runs in-process with its real Apple client; a fake APNs on
loopback drops connections mid-stream, says GOAWAY, answers 5xx bursts,
answers slowly, restarts, or presents a certificate from another CA for a
while.  Each test sends a few hundred concurrent wake-up requests with unique
call-ids, injects its fault while they are in flight, and then checks that

- every request got exactly one answer, each 200 or (for faults that can
  legitimately exhaust a request) 503;
- every 200 corresponds to exactly one delivery at the fake, and nothing the
  caller was told failed was delivered;
- the client's queues are empty afterwards (no unbounded growth).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any, Callable, List, Optional, Tuple

import treq
from twisted.internet import defer, reactor, task
from twisted.trial import unittest
from twisted.web.client import HTTPConnectionPool

from sylkpush.testing.control import call_id_of
from sylkpush.testing.fake_apns import FakeAPNs
from sylkpush.testing.fake_fcm import FakeFCM
from tests.helpers import start_server, wakeup

APP_ID = "com.example.resilience"
REQUESTS = 240
CONCURRENCY = 60


def sleep(seconds: float) -> defer.Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def wait_until(predicate: Callable[[], bool], limit: float = 10.0):
    waited = 0.0
    while not predicate():
        if waited > limit:
            raise AssertionError(f"condition not reached within {limit} s")
        yield sleep(0.01)
        waited += 0.01


class LoadMixin:
    """Concurrent /push load with unique call-ids, and the exactly-once checks."""

    timeout = 60
    platform = "apple"

    # -- load and checks ----------------------------------------------------------

    @defer.inlineCallbacks
    def one(self, call_id: str, answers: List[Tuple[str, int]]):
        body = json.dumps(wakeup(app_id=APP_ID, platform=self.platform, token="0123abcd" * 8,
                                 call_id=call_id)).encode()
        response = yield treq.post(self.push_url.decode(), data=body, pool=self.pool,
                                   headers={b"content-type": [b"application/json"]})
        content = yield response.content()
        parsed = json.loads(content)
        self.assertEqual(parsed["code"], response.code)
        self.assertEqual(parsed["data"].get("call_id", call_id), call_id)
        answers.append((call_id, response.code))

    @defer.inlineCallbacks
    def load(self, fault: Optional[Callable[[], Any]] = None, after: int = 40,
             count: int = REQUESTS, tag: str = "load"):
        """``count`` requests, ``CONCURRENCY`` at a time; ``fault`` runs once ``after`` were answered."""
        answers: List[Tuple[str, int]] = []
        semaphore = defer.DeferredSemaphore(CONCURRENCY)
        fired = []

        @defer.inlineCallbacks
        def request(n: int):
            yield self.one(f"{tag}-{n}@example.com", answers)
            if fault is not None and not fired and len(answers) >= after:
                fired.append(True)
                yield fault()

        yield defer.gatherResults([semaphore.run(request, n) for n in range(count)], consumeErrors=True)
        if fault is not None:
            self.assertTrue(fired, "the fault was never injected")
        return answers

    def check(self, answers: List[Tuple[str, int]], count: int = REQUESTS,
              allowed: Tuple[int, ...] = (200,)) -> Counter:
        calls = Counter(call_id for call_id, _ in answers)
        self.assertEqual(len(calls), count, "a request got no answer")
        self.assertEqual(max(calls.values()), 1, "a request got two answers")
        codes = Counter(code for _, code in answers)
        self.assertLessEqual(set(codes), set(allowed), codes)
        delivered = self.delivered()
        doubled = {call_id: n for call_id, n in delivered.items() if n > 1}
        self.assertEqual(doubled, {}, "delivered more than once")
        ok = {call_id for call_id, code in answers if code == 200}
        self.assertEqual(ok - set(delivered), set(), "a 200 without a delivery")
        self.assertEqual(set(delivered) - ok, set(), "delivered but the caller heard a failure")
        return codes

    def delivered(self) -> Counter:
        """call-id -> deliveries at the fake."""
        return Counter(call_id_of(delivery.payload) for delivery in self.fake.notifications)

    @defer.inlineCallbacks
    def drained(self):
        """The client's queues are empty once the load is answered."""
        yield wait_until(lambda: self.client.status()["in_flight"] == 0)
        status = self.client.status()
        self.assertEqual((status["queued"], status["in_flight"], status["retrying"]), (0, 0, 0), status)



class CommonFaultTests(LoadMixin):
    """Faults both fakes can inject; each platform's class adds its own."""

    @defer.inlineCallbacks
    def test_no_fault_baseline(self):
        answers = yield self.load()
        self.check(answers)
        yield self.drained()

    @defer.inlineCallbacks
    def test_5xx_bursts(self):
        def fault():
            self.fake.fail_next(30, 500)
            self.fake.fail_next(30, 503)
        answers = yield self.load(fault)
        self.check(answers)
        yield self.drained()

    @defer.inlineCallbacks
    def test_slow_answers(self):
        def fault():
            self.fake.delay = 0.15
        answers = yield self.load(fault, count=180)
        self.check(answers, count=180)
        yield self.drained()

    @defer.inlineCallbacks
    def test_fake_restarted(self):
        def fault():
            self.fake.delay = 0.02
            return self.fake.restart()
        answers = yield self.load(fault)
        self.check(answers)
        yield self.drained()

    @defer.inlineCallbacks
    def test_down_for_a_while(self):
        @defer.inlineCallbacks
        def fault():
            yield self.fake.stop()
            yield sleep(0.3)
            yield self.fake.start()
        answers = yield self.load(fault)
        self.check(answers)
        yield self.drained()


class AppleLoad(LoadMixin):
    """setUp: a fake APNs, the daemon with its real Apple client, and an HTTP pool for the load."""

    fake_delay = 0.002
    #: find_client for the daemon (None: the real clients)
    find_client = None

    @defer.inlineCallbacks
    def setUp(self):
        self.fake = FakeAPNs(reactor, directory=os.path.abspath(self.mktemp()), delay=self.fake_delay)
        yield self.fake.start()
        self.addCleanup(self.fake.stop)
        self.server, url = start_server(self, self.fake.applications_ini(APP_ID, voip=True),
                                        find_client=self.find_client)
        self.push_url = (url + "/push").encode()
        [app] = list(self.server.registry)
        self.client = app.client
        # the real schedule's shape, at a pace fit for tests
        self.client.reconnect_initial = 0.02
        self.client.reconnect_max = 0.1
        self.client.retry_initial = 0.01
        self.client.retry_max = 0.05
        self.pool = HTTPConnectionPool(reactor)
        self.pool.maxPersistentPerHost = CONCURRENCY
        self.pool.retryAutomatically = False
        self.addCleanup(self.pool.closeCachedConnections)
        yield wait_until(lambda: self.client.status()["state"] == "connected")


class AppleResilienceTests(AppleLoad, CommonFaultTests, unittest.TestCase):
    """Faults at the fake APNs while /push is under concurrent load."""

    @defer.inlineCallbacks
    def test_connection_dropped_mid_stream(self):
        def fault():
            self.fake.drop_next(3)
        answers = yield self.load(fault)
        self.check(answers)
        self.assertEqual(self.fake.dropped, 3)
        self.assertGreaterEqual(self.fake.connections_made, 4)
        yield self.drained()

    @defer.inlineCallbacks
    def test_goaway_with_streams_in_flight(self):
        def fault():
            self.fake.delay = 0.02  # so streams are open when GOAWAY comes
            self.fake.goaway_now("Shutdown")
            self.fake.goaway_after(30)
        answers = yield self.load(fault)
        self.check(answers)
        self.assertGreaterEqual(self.fake.connections_made, 2)
        yield self.drained()

    @defer.inlineCallbacks
    def test_5xx_bursts_are_answered_by_the_fake(self):
        def fault():
            self.fake.fail_next(40, 500)
            self.fake.fail_next(40, 503)
        answers = yield self.load(fault)
        self.check(answers)
        self.assertEqual(self.fake.answers[500] + self.fake.answers[503], 80)
        yield self.drained()

    @defer.inlineCallbacks
    def test_streams_reset(self):
        def fault():
            self.fake.reset_next(25)
        answers = yield self.load(fault)
        self.check(answers)
        yield self.drained()

    @defer.inlineCallbacks
    def test_restart_opens_a_new_connection(self):
        answers = yield self.load(self.fake.restart)
        self.check(answers)
        self.assertGreaterEqual(self.fake.connections_made, 2)

    @defer.inlineCallbacks
    def test_certificate_from_another_ca_for_a_while(self):
        @defer.inlineCallbacks
        def fault():
            yield self.fake.present_wrong_certificate(True)
            yield sleep(0.3)
            yield self.fake.present_wrong_certificate(False)
        answers = yield self.load(fault)
        self.check(answers)
        self.assertGreater(self.client.reconnects, 0)
        yield self.drained()

    @defer.inlineCallbacks
    def test_everything_at_once_repeatedly(self):
        faults = [lambda: self.fake.drop_next(2), lambda: self.fake.fail_next(20, 503),
                  lambda: self.fake.goaway_now(), lambda: self.fake.reset_next(10),
                  lambda: self.fake.restart()]
        answers: List[Tuple[str, int]] = []
        for round_number, fault in enumerate(faults):
            answers += yield self.load(fault, count=100, after=20, tag=f"round{round_number}")
        self.check(answers, count=100 * len(faults))
        yield self.drained()


class ProtocolErrorTests(unittest.TestCase):
    """Deadlines bound what a dead service can cost: requests are answered 503, queues empty."""

    timeout = 30

    @defer.inlineCallbacks
    def test_outage_past_the_deadline_answers_503_and_empties_the_queue(self):
        fake = FakeAPNs(reactor, directory=os.path.abspath(self.mktemp()))
        yield fake.start()
        server, url = start_server(self, fake.applications_ini(APP_ID), find_client=None)
        [app] = list(server.registry)
        app.client.reconnect_initial = 0.02
        app.client.reconnect_max = 0.05
        yield wait_until(lambda: app.client.status()["state"] == "connected")
        yield fake.stop()
        dispatcher = server.dispatcher
        prepared = [dispatcher.prepare(wakeup(app_id=APP_ID, token="ab" * 32, call_id=f"outage-{n}"), "127.0.0.1")
                    for n in range(300)]
        for item in prepared:  # a short budget instead of the call's 64 s
            item.push.deadline = reactor.seconds() + 0.3
        results = yield defer.gatherResults([defer.ensureDeferred(dispatcher.deliver(p)) for p in prepared])
        self.assertEqual(Counter(answer.code for answer in results), Counter({503: 300}))
        self.assertEqual(fake.notifications, [])
        status = app.client.status()
        self.assertEqual((status["queued"], status["in_flight"], status["retrying"]), (0, 0, 0), status)


class FirebaseResilienceTests(CommonFaultTests, unittest.TestCase):
    """The same load and checks through the real Firebase client and the fake FCM."""

    platform = "firebase"

    @defer.inlineCallbacks
    def setUp(self):
        from sylkpush.pns.firebase import FirebaseClient
        from tests.firebase_helpers import service_key
        self.patch(FirebaseClient, "retry_initial", 0.01)
        self.patch(FirebaseClient, "retry_max", 0.05)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.fake = FakeFCM(reactor, directory, delay=0.002, service_key=service_key())
        yield self.fake.start()
        self.addCleanup(self.fake.stop)
        self.server, url = start_server(self, self.fake.applications_ini(APP_ID), find_client=None)
        self.push_url = (url + "/push").encode()
        [app] = list(self.server.registry)
        self.client = app.client
        self.pool = HTTPConnectionPool(reactor)
        self.pool.maxPersistentPerHost = CONCURRENCY
        self.pool.retryAutomatically = False
        self.addCleanup(self.pool.closeCachedConnections)

    def delivered(self) -> Counter:
        return Counter(call_id_of(message) for message in self.fake.messages)
