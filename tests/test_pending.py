"""PendingPush and PendingQueue: exactly-once answers, deadlines, bounded queue."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial import unittest

from sylkpush.pns.base import OutgoingPush, PushResult
from sylkpush.pns.pending import PendingPush, PendingQueue, backoff_delay


def pending(clock, budget, name="p"):
    push = OutgoingPush(request_id=name, token="t", headers={}, payload={}, deadline=clock.seconds() + budget)
    return PendingPush(push, clock, "https://push.test")


class PendingTests(unittest.TestCase):

    def test_answered_once_and_deadline(self):
        clock = Clock()
        first = pending(clock, 10)
        results = []
        first.deferred.addCallback(results.append)
        self.assertTrue(first.answer(PushResult(200, "OK", "u")))
        self.assertFalse(first.fail("late"))
        clock.advance(20)
        self.assertEqual([r.code for r in results], [200])
        second = pending(clock, 5)
        second.last_failure = "connection refused"
        second.deferred.addCallback(results.append)
        clock.advance(5)
        self.assertEqual((results[-1].code, results[-1].reason), (503, "deadline passed: connection refused"))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_expired_pushes_stop_counting_wherever_they_stand(self):
        clock = Clock()
        queue = PendingQueue(limit=3)
        slow, fast, other = pending(clock, 1000, "slow"), pending(clock, 64, "fast"), pending(clock, 64, "other")
        for item in (slow, fast, other):
            self.assertTrue(queue.put(item))
        refused = pending(clock, 64, "refused")
        self.assertFalse(queue.put(refused))
        self.assertEqual(refused.deferred.result.reason, "queue full (3 requests waiting)")
        clock.advance(64)  # the two calls behind the message expire
        self.assertEqual(len(queue), 1)
        newcomer = pending(clock, 64, "new")
        self.assertTrue(queue.put(newcomer))
        self.assertEqual([queue.get(), queue.get(), queue.get()], [slow, newcomer, None])
        self.assertEqual(len(queue), 0)

    def test_put_front_and_fail_all(self):
        clock = Clock()
        queue = PendingQueue()
        a, b = pending(clock, 10, "a"), pending(clock, 10, "b")
        queue.put(a)
        queue.put(b)
        taken = queue.get()
        queue.put_front(taken)
        self.assertEqual(len(queue), 2)
        queue.fail_all("stopped")
        self.assertEqual((a.deferred.result.code, b.deferred.result.reason), (503, "stopped"))
        self.assertEqual(len(queue), 0)

    def test_many_expired_entries_are_compacted(self):
        clock = Clock()
        queue = PendingQueue(limit=10_000)
        keep = pending(clock, 1000, "keep")
        queue.put(keep)
        for i in range(500):
            queue.put(pending(clock, 1, f"x{i}"))
        clock.advance(1)
        queue.put(pending(clock, 1000, "last"))
        self.assertEqual(len(queue), 2)
        self.assertLess(len(queue._items), 100)

    def test_backoff(self):
        self.assertEqual([backoff_delay(n, 0.5, 60, lambda: 0) for n in range(9)],
                         [0.5, 1, 2, 4, 8, 16, 32, 60, 60])
        self.assertEqual(backoff_delay(3, 1, 60, lambda: 1), 6)
