"""The delivery engine with a scripted transport, on a Clock: bound, retries,
outcomes of an attempt, deadlines, shutdown answers, stop, hand-over."""

from __future__ import annotations

from typing import List

from twisted.internet.task import Clock
from twisted.trial import unittest

from sylkpush.config import AppConfig
from sylkpush.pns.base import OutgoingPush, PushResult
from sylkpush.pns.engine import DeliveryClient
from sylkpush.pns.pending import PendingPush
from tests.doubles import capture_logs

APP = AppConfig(section="s", app_id="com.example.engine", app_type="sylk", platform="test")


class ScriptedClient(DeliveryClient):
    """A transport that records attempts and lets the test say how each ended
    (then calls :meth:`pump`, as a transport does when its room frees)."""

    name = "Test"
    retry_initial = 1.0
    retry_max = 8.0

    def __init__(self, clock: Clock, room: int = 10, **kwargs) -> None:
        super().__init__(APP, clock, **kwargs)
        self.room = room
        self.attempts: List[PendingPush] = []
        self.abandoned: List[PendingPush] = []
        self.closed = 0

    def push_url(self, push):
        return "test://" + push.token

    def capacity(self):
        return self.room - sum(1 for p in self.attempts if p.state == "in flight")

    def attempt(self, pending):
        self.attempts.append(pending)

    def abandon_attempt(self, pending):
        self.abandoned.append(pending)

    def close(self):
        self.closed += 1


def push(clock: Clock, name: str = "p", budget: float = 64.0) -> OutgoingPush:
    return OutgoingPush(request_id=name, token=name, headers={}, payload={}, deadline=clock.seconds() + budget)


class EngineTests(unittest.TestCase):

    def setUp(self):
        self.clock = Clock()

    def client(self, **kwargs) -> ScriptedClient:
        client = ScriptedClient(self.clock, **kwargs)
        client.start()
        return client

    def test_bound_counts_queued_in_flight_and_retrying(self):
        client = self.client(room=1, queue_limit=3)
        first = client.send(push(self.clock, "a"))
        client.send(push(self.clock, "b"))
        client.retry(client.attempts[0], "500 InternalServerError")  # a waits to retry, b goes out
        client.pump()
        client.send(push(self.clock, "c"))  # queued behind b
        self.assertEqual(client.counts(), {"queued": 1, "in_flight": 1, "retrying": 1})
        refused = self.successResultOf(client.send(push(self.clock, "d")))
        self.assertEqual(refused.code, 503)
        self.assertEqual(refused.reason, "queue full: 3 pushes of com.example.engine are queued, in flight "
                                         "or waiting to retry")
        client.finish(client.attempts[1], PushResult(200, "OK", "u"))  # b done: room for one more
        self.assertFalse(client.send(push(self.clock, "e")).called)
        self.assertFalse(first.called)

    def test_retry_backs_off_and_honours_retry_after(self):
        client = self.client()
        answer = client.send(push(self.clock))
        client.retry(client.attempts[-1], "503 busy")
        [timer] = [c for c in self.clock.getDelayedCalls() if c.getTime() < 64]
        self.assertTrue(0.75 <= timer.getTime() <= 1.0)
        self.clock.advance(1.0)
        client.retry(client.attempts[-1], "503 busy", retry_after=7)
        self.clock.advance(6.9)
        self.assertEqual(len(client.attempts), 2)
        self.clock.advance(0.1)
        self.assertEqual(len(client.attempts), 3)
        client.retry(client.attempts[-1], "429 slow down", retry_after=100)
        result = self.successResultOf(answer)
        self.assertEqual((result.code, result.reason), (503, "deadline passed: 429 slow down (Retry-After 100 s)"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_not_processed_is_sent_again_at_once_without_counting(self):
        client = self.client()
        client.send(push(self.clock))
        pending = client.attempts[0]
        client.not_processed(pending, "GOAWAY above the last stream")
        self.assertEqual((len(client.attempts), pending.attempts), (2, 1))
        client.not_processed(pending, "REFUSED_STREAM", backoff=True)
        self.assertEqual((len(client.attempts), pending.attempts), (2, 1))
        self.assertEqual(client.counts()["retrying"], 1)
        self.clock.advance(1.0)
        self.assertEqual((len(client.attempts), pending.attempts), (3, 2))
        self.assertFalse(pending.maybe_delivered)

    def test_deadline_answers_whatever_the_transport_does(self):
        client = self.client()
        answer = client.send(push(self.clock, budget=5))
        self.clock.advance(5)
        result = self.successResultOf(answer)
        self.assertEqual((result.code, result.reason), (503, "deadline passed: no answer from Test"))
        self.assertEqual(client.abandoned, client.attempts)
        client.finish(client.attempts[0], PushResult(200, "OK", "u"))  # too late: ignored
        client.unknown(client.attempts[0], "lost")
        self.assertEqual(client.counts(), {"queued": 0, "in_flight": 0, "retrying": 0})
        self.assertEqual(client.active, 0)

    def test_shutdown_tells_not_sent_from_sent(self):
        client = self.client(room=2)
        written = client.send(push(self.clock, "written"))
        unwritten = client.send(push(self.clock, "unwritten"))
        queued = client.send(push(self.clock, "queued"))
        lost = client.send(push(self.clock, "lost"))  # queued too, until its first attempt
        client.attempts[0].written = True
        client.retry(client.attempts[1], "500 InternalServerError")  # answered: not delivered
        client.pump()
        client.attempts[2].written = True  # queued's attempt takes the free room
        client.unknown(client.attempts[2], "connection lost", backoff=True)  # may have been delivered
        client.pump()
        client.attempts[3].written = True
        client.not_processed(client.attempts[3], "REFUSED_STREAM", backoff=True)  # lost's: never processed
        self.assertEqual(client.answer_unfinished(), {503: 2, 504: 2})
        results = {name: self.successResultOf(d) for name, d in
                   (("written", written), ("unwritten", unwritten), ("queued", queued), ("lost", lost))}
        self.assertEqual({name: result.code for name, result in results.items()},
                         {"written": 504, "unwritten": 503, "queued": 504, "lost": 503})
        self.assertEqual(results["written"].reason, "sent, no answer from the push service before shutdown")
        self.assertEqual(results["unwritten"].reason,
                         "not sent before shutdown (last failure: 500 InternalServerError)")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_answers_the_waiting_and_waits_for_those_in_flight(self):
        client = self.client(room=1)
        in_flight = client.send(push(self.clock, "a"))
        queued = client.send(push(self.clock, "b"))
        client.attempts[0].written = True
        stopped = client.stop()
        result = self.successResultOf(queued)
        self.assertEqual((result.code, result.reason), (503, "not sent before the Test client stopped"))
        self.assertEqual(self.successResultOf(client.send(push(self.clock, "c"))).reason,
                         "the Test client is stopping")
        self.assertFalse(stopped.called)
        self.clock.advance(client.stop_timeout)
        self.assertEqual(self.successResultOf(in_flight).code, 504)
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(client.closed, 1)
        self.assertEqual(client.status()["state"], "stopped")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_take_waiting_leaves_the_bound(self):
        client = self.client(room=1, queue_limit=3)
        client.send(push(self.clock, "retrying"))
        client.send(push(self.clock, "a"))
        client.send(push(self.clock, "b"))
        client.retry(client.attempts[0], "500 InternalServerError")
        taken = client.take_waiting()
        self.assertEqual([p.push.request_id for p in taken], ["a", "b", "retrying"])
        self.assertEqual(client.counts(), {"queued": 0, "in_flight": 0, "retrying": 0})
        self.assertFalse(client.send(push(self.clock, "c")).called)
        taken[0].answer(PushResult(200, "OK", "u"))  # answered by the successor
        self.assertEqual(client.active, 1)
        # the deadlines of b, retrying and c on the one deadline timer; no retry timer
        self.assertEqual((len(client.deadlines), len(self.clock.getDelayedCalls())), (3, 1))

    def test_handed_over_pushes_keep_their_deadlines(self):
        old = self.client(room=0)
        answer = old.send(push(self.clock, "waiting", budget=10))
        self.clock.advance(3)
        [taken] = old.take_waiting()
        new = self.client(room=0)
        new.send(taken.push).addCallback(taken.answer)
        self.clock.advance(6.9)
        self.assertFalse(answer.called)
        self.clock.advance(0.1)
        result = self.successResultOf(answer)
        self.assertEqual((result.code, result.reason), (503, "deadline passed: waiting for Test"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_attempt_timeout_checked_for_all_attempts_at_once(self):
        client = ScriptedClient(self.clock)
        client.attempt_timeout = 3.0
        client.start()
        answer = client.send(push(self.clock))
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)  # the deadline and the sweep
        self.clock.advance(3.0)
        self.assertEqual(client.abandoned, client.attempts[:1])
        self.assertTrue(client.attempts[0].maybe_delivered)
        self.assertEqual(client.counts()["retrying"], 1)
        self.clock.advance(1.0)
        client.finish(client.attempts[1], PushResult(200, "OK", "u"))
        self.assertEqual(self.successResultOf(answer).code, 200)
        self.assertEqual(self.successResultOf(client.stop()), None)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_transport_that_raises_still_answers_once(self):
        client = self.client()

        def broken(pending):
            raise RuntimeError("bug")
        client.attempt = broken
        result = self.successResultOf(client.send(push(self.clock)))
        self.assertEqual((result.code, result.reason), (500, "internal error in the Test client"))
        self.assertEqual((client.active, client.counts()["in_flight"]), (0, 0))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ResultRecordTests(unittest.TestCase):
    """What /health and /metrics learn from the engine: the last success, the
    last failure and why, failures in a row, and the ``failing`` state."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)  # 2023-11-14T22:13:20Z
        self.client = ScriptedClient(self.clock)
        self.client.start()

    def status(self):
        status = self.client.status()
        return {key: status[key] for key in ("state", "last_success", "last_failure", "last_failure_reason",
                                             "consecutive_failures", "connect_failures")}

    def test_a_new_client_has_no_record(self):
        self.assertEqual(self.status(), {"state": "ready", "last_success": None, "last_failure": None,
                                         "last_failure_reason": "", "consecutive_failures": 0,
                                         "connect_failures": 0})

    def test_failed_attempts_make_it_failing_and_an_answer_ends_it(self):
        client = self.client
        client.send(push(self.clock, "a"))
        client.retry(client.attempts[-1], "500 InternalServerError")
        self.clock.advance(1.0)
        client.unknown(client.attempts[-1], "connection lost")
        self.assertEqual(self.status()["state"], "ready")  # two in a row: not yet
        self.clock.advance(10)
        client.not_processed(client.attempts[-1], "connection to push.test failed: DNS lookup failed",
                             backoff=True)
        self.assertEqual(self.status(), {
            "state": "failing", "last_success": None, "last_failure": "2023-11-14T22:13:31Z",
            "last_failure_reason": "connection to push.test failed: DNS lookup failed",
            "consecutive_failures": 3, "connect_failures": 0})
        self.clock.advance(4.0)  # tried again
        client.finish(client.attempts[-1], PushResult(410, "Unregistered", "u"))  # answered: it works
        self.assertEqual(self.status(), {
            "state": "ready", "last_success": "2023-11-14T22:13:35Z", "last_failure": "2023-11-14T22:13:31Z",
            "last_failure_reason": "connection to push.test failed: DNS lookup failed",
            "consecutive_failures": 0, "connect_failures": 0})

    def test_answers_that_say_the_application_cannot_deliver_are_failures(self):
        client = self.client
        for code, reason in ((403, "BadCertificate"), (401, "UNAUTHENTICATED"), (500, "internal error")):
            client.send(push(self.clock, reason))
            client.finish(client.attempts[-1], PushResult(code, reason, "u"))
        self.assertEqual(self.status()["state"], "failing")
        self.assertEqual(self.status()["last_failure_reason"], "internal error")
        client.send(push(self.clock, "bad"))
        client.finish(client.attempts[-1], PushResult(400, "BadDeviceToken", "u"))
        self.assertEqual(self.status()["consecutive_failures"], 0)
        self.assertIsNotNone(self.status()["last_success"])

    def test_what_the_push_service_is_not_to_blame_for_does_not_count(self):
        client = self.client
        answer = client.send(push(self.clock, "a", budget=5))
        client.not_processed(client.attempts[-1], "GOAWAY above the last stream")  # sent again at once
        self.assertEqual(self.status()["consecutive_failures"], 0)
        self.clock.advance(5)  # the deadline of a push in flight: its attempt got no answer
        self.assertEqual(self.successResultOf(answer).code, 503)
        self.assertEqual((self.status()["consecutive_failures"], self.status()["last_failure_reason"]),
                         (1, "deadline passed: GOAWAY above the last stream"))
        client.send(push(self.clock, "b"))
        client.stop()
        self.clock.advance(client.stop_timeout)  # answered 503/504 by the stop: not the service's failure
        self.assertEqual(self.status()["consecutive_failures"], 1)
        self.assertEqual(self.status()["state"], "stopped")

    def test_connects_failing_in_a_row_make_it_failing_until_one_is_ready(self):
        client = self.client
        logs = capture_logs(self)
        for _ in range(4):
            client.connect_failed("cannot connect to push.test:443: Connection refused")
        self.assertEqual(self.status()["state"], "failing")
        self.assertEqual((self.status()["connect_failures"], self.status()["last_failure_reason"]),
                         (4, "cannot connect to push.test:443: Connection refused"))
        [warning] = logs.matching("failing")
        self.assertIn("WARNING", warning)
        self.assertIn("Test client of com.example.engine failing: 3 connects in a row failed, the last: "
                      "cannot connect to push.test:443: Connection refused", warning)
        client.connect_succeeded()
        self.assertEqual((self.status()["state"], self.status()["connect_failures"]), ("ready", 0))
        self.assertTrue(logs.matching("connected again after 4 failed connects"))
