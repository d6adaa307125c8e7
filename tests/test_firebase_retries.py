"""FirebaseClient retries, deadlines, queue bounds and stop(), with a Clock for time.

The network runs on the real reactor (loopback); deadlines, backoff and
Retry-After delays run on a Clock that the tests advance.
"""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.firebase_helpers import FakeFCMMixin, push_for, wait_until


def retry_delays(clock: Clock, deadline: float):
    """Delays of the timers on ``clock`` other than the push's deadline timer."""
    return sorted(call.getTime() - clock.seconds() for call in clock.getDelayedCalls()
                  if call.getTime() != deadline)


class RetryTests(FakeFCMMixin, unittest.TestCase):

    @defer.inlineCallbacks
    def test_retry_after_is_respected(self):
        clock = Clock()
        self.fake.script("busy", "QUOTA_EXCEEDED", times=1, retry_after=7)
        client = self.client(clock=clock)
        push = push_for("busy", clock)
        d = client.send(push)
        yield wait_until(lambda: client.status()["retrying"] == 1)
        self.assertEqual(retry_delays(clock, push.deadline), [7.0])
        clock.advance(6.9)
        self.assertEqual(self.fake.push_requests, 1)
        self.assertFalse(d.called)
        clock.advance(0.1)
        result = yield d
        self.assertEqual(result.code, 200)
        self.assertEqual(self.fake.push_requests, 2)
        self.assertEqual(self.fake.deliveries["busy"], 1)

    @defer.inlineCallbacks
    def test_retry_after_past_the_deadline_answers_at_once(self):
        clock = Clock()
        self.fake.script("busy", "QUOTA_EXCEEDED", retry_after=100)
        client = self.client(clock=clock)
        result = yield client.send(push_for("busy", clock, budget=64))
        self.assertEqual(result.code, 503)
        self.assertIn("QUOTA_EXCEEDED", result.reason)
        self.assertIn("Retry-After 100 s", result.reason)
        self.assertEqual(clock.getDelayedCalls(), [])

    @defer.inlineCallbacks
    def test_exponential_backoff_on_5xx(self):
        clock = Clock()
        self.fake.fail_next(3, 503)
        client = self.client(clock=clock)
        push = push_for("device-b", clock)
        d = client.send(push)
        for attempt, (low, high) in enumerate([(0.375, 0.5), (0.75, 1.0), (1.5, 2.0)]):
            yield wait_until(lambda: client.status()["retrying"] == 1)
            [delay] = retry_delays(clock, push.deadline)
            self.assertTrue(low <= delay <= high, (attempt, delay))
            clock.advance(delay)
        result = yield d
        self.assertEqual(result.code, 200)
        self.assertEqual(self.fake.push_requests, 4)
        self.assertEqual(self.fake.deliveries["device-b"], 1)

    @defer.inlineCallbacks
    def test_server_down_past_the_deadline_is_503(self):
        clock = Clock()
        client = self.client(clock=clock)
        yield client.send(push_for("warm-up", clock))
        yield self.fake.stop()
        d = client.send(push_for("device-c", clock, budget=5))
        # the push waits in the queue while the connections are tried again (on the reactor) in vain
        yield wait_until(lambda: "failed" in client.status().get("last_error", "")
                         and client.status()["reconnects"] > 1)
        clock.advance(5)
        result = yield d
        self.assertEqual(result.code, 503)
        self.assertTrue(result.reason.startswith(f"deadline passed: connection to 127.0.0.1:{self.fake.port} failed"),
                        result.reason)
        self.assertEqual(result.body, {})
        self.assertGreater(client.status()["reconnects"], 1)

    @defer.inlineCallbacks
    def test_deadline_while_waiting_for_the_answer(self):
        clock = Clock()
        self.fake.slow("slow", 5.0)
        client = self.client(clock=clock)
        d = client.send(push_for("slow", clock, budget=10))
        yield self.fake.wait_for_requests(1)
        clock.advance(10)
        result = yield d
        self.assertEqual(result.code, 503)
        self.assertIn("no answer from 127.0.0.1", result.reason)
        # the request was abandoned: its slot is free, its stream reset, and nothing was delivered
        yield wait_until(lambda: client.status()["in_flight"] == 0 and self.fake.resets == 1)
        self.assertEqual(self.fake.deliveries, {})

    @defer.inlineCallbacks
    def test_token_endpoint_failure_is_retried(self):
        self.fake.fail_token_requests(1, 503)
        client = self.client()
        result = yield client.send(push_for("device-t", reactor))
        self.assertEqual(result.code, 200)
        self.assertEqual(self.fake.token_requests, 2)

    @defer.inlineCallbacks
    def test_restart_of_the_service_is_survived(self):
        client = self.client()
        first = yield client.send(push_for("before", reactor))
        yield self.fake.restart()
        second = yield client.send(push_for("after", reactor))
        self.assertEqual((first.code, second.code), (200, 200))
        self.assertEqual(dict(self.fake.deliveries), {"before": 1, "after": 1})


class FlowTests(FakeFCMMixin, unittest.TestCase):

    @defer.inlineCallbacks
    def test_queue_full_answers_503_at_once(self):
        clock = Clock()
        # the bound counts the push in flight too: one on the wire, two queued
        client = self.client(clock=clock, max_in_flight=1, queue_limit=3)
        yield wait_until(lambda: client.status()["connections"] == client.pool_size)
        ds = [client.send(push_for(f"q{i}", clock)) for i in range(4)]
        self.assertEqual(client.status()["queued"], 2)
        self.assertTrue(ds[3].called)
        overflow = yield ds[3]
        self.assertEqual(overflow.code, 503)
        self.assertIn("queue full", overflow.reason)
        results = yield defer.gatherResults(ds[:3])
        self.assertEqual([r.code for r in results], [200, 200, 200])
        self.assertEqual(self.fake.messages[0]["token"], "q0")
        self.assertEqual([m["token"] for m in self.fake.messages], ["q0", "q1", "q2"])

    @defer.inlineCallbacks
    def test_no_answer_lost_or_doubled_under_a_503_burst(self):
        self.fake.fail_next(150, 503)
        client = self.client(max_in_flight=16)
        answers = {}

        def record(result, token):
            answers[token] = answers.get(token, 0) + 1
            return result
        ds = [client.send(push_for(f"burst-{i}", reactor)).addCallback(record, f"burst-{i}") for i in range(200)]
        results = yield defer.gatherResults(ds)
        self.assertEqual({r.code for r in results}, {200})
        self.assertEqual(set(answers.values()), {1})
        self.assertEqual(len(answers), 200)
        self.assertEqual(len(self.fake.deliveries), 200)
        self.assertEqual(set(self.fake.deliveries.values()), {1})
        self.assertEqual(self.fake.push_requests, 350)

    @defer.inlineCallbacks
    def test_stop_finishes_in_flight_and_answers_the_rest(self):
        clock = Clock()
        self.fake.slow("slow", 0.2)
        client = self.client(clock=clock, max_in_flight=1)
        in_flight = client.send(push_for("slow", clock))
        queued = client.send(push_for("queued", clock))
        yield self.fake.wait_for_requests(1)
        stopped = client.stop()
        self.assertTrue(queued.called)
        self.assertEqual((yield queued).code, 503)
        self.assertFalse(stopped.called)
        self.assertEqual((yield in_flight).code, 200)
        yield stopped
        late = yield client.send(push_for("late", clock))
        self.assertEqual(late.code, 503)
        self.assertEqual(client.status()["state"], "stopped")
        self.assertEqual(dict(self.fake.deliveries), {"slow": 1})
        self.assertEqual(clock.getDelayedCalls(), [])

    @defer.inlineCallbacks
    def test_stop_answers_pushes_waiting_to_retry(self):
        clock = Clock()
        self.fake.fail_next(1, 500)
        client = self.client(clock=clock)
        d = client.send(push_for("retrying", clock))
        yield wait_until(lambda: client.status()["retrying"] == 1)
        yield client.stop()
        result = yield d
        self.assertEqual(result.code, 503)
        self.assertIn("INTERNAL", result.reason)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_status_keys(self):
        client = self.client()
        self.assertEqual(set(client.status()),
                         {"state", "queued", "in_flight", "retrying", "reconnects", "token_refreshes",
                          "last_success", "last_failure", "last_failure_reason", "consecutive_failures",
                          "connect_failures", "url", "connections", "pool_size", "last_error"})
