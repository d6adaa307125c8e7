"""PendingPush and PendingQueue: exactly-once answers, deadlines, lazy removal."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial import unittest

from sylkpush.pns.base import OutgoingPush, PushResult
from sylkpush.pns.pending import ANSWERED, QUEUED, PendingPush, PendingQueue, backoff_delay


class Owner:
    """What a PendingPush needs from its client."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.settled_states = []
        self.queue = PendingQueue()

    def settled(self, pending, state, result):
        self.settled_states.append(state)
        if state is QUEUED:
            self.queue.discard(pending)

    def expired(self, pending):
        pending.fail(f"deadline passed: {pending.last_failure}")


def pending(owner, budget, name="p"):
    push = OutgoingPush(request_id=name, token="t", headers={}, payload={},
                        deadline=owner.clock.seconds() + budget)
    return PendingPush(push, owner, "https://push.test")


class PendingTests(unittest.TestCase):

    def test_answered_once_and_deadline(self):
        clock = Clock()
        owner = Owner(clock)
        first = pending(owner, 10)
        results = []
        first.deferred.addCallback(results.append)
        self.assertTrue(first.answer(PushResult(200, "OK", "u")))
        self.assertFalse(first.fail("late"))
        self.assertEqual(first.state, ANSWERED)
        clock.advance(20)
        self.assertEqual([r.code for r in results], [200])
        second = pending(owner, 5)
        second.last_failure = "connection refused"
        second.deferred.addCallback(results.append)
        clock.advance(5)
        self.assertEqual((results[-1].code, results[-1].reason), (503, "deadline passed: connection refused"))
        self.assertEqual(owner.settled_states, ["new", "new"])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_answered_pushes_leave_the_queue_wherever_they_stand(self):
        clock = Clock()
        owner = Owner(clock)
        queue = owner.queue
        slow, fast, other = pending(owner, 1000, "slow"), pending(owner, 64, "fast"), pending(owner, 64, "other")
        for item in (slow, fast, other):
            queue.put(item)
        self.assertEqual(len(queue), 3)
        clock.advance(64)  # the two calls behind the message expire
        self.assertEqual(len(queue), 1)
        newcomer = pending(owner, 64, "new")
        queue.put(newcomer)
        self.assertEqual([queue.get(), queue.get(), queue.get()], [slow, newcomer, None])
        self.assertEqual(len(queue), 0)
        self.assertEqual(queue.earliest_deadline(), None)

    def test_put_front_and_take_all(self):
        clock = Clock()
        owner = Owner(clock)
        queue = owner.queue
        a, b = pending(owner, 10, "a"), pending(owner, 20, "b")
        queue.put(a)
        queue.put(b)
        taken = queue.get()
        queue.put_front(taken)
        self.assertEqual(len(queue), 2)
        self.assertEqual(queue.earliest_deadline(), a.push.deadline)
        self.assertEqual(queue.take_all(), [a, b])
        self.assertEqual(len(queue), 0)

    def test_many_expired_entries_are_compacted(self):
        clock = Clock()
        owner = Owner(clock)
        queue = owner.queue
        keep = pending(owner, 1000, "keep")
        queue.put(keep)
        for i in range(500):
            queue.put(pending(owner, 1, f"x{i}"))
        clock.advance(1)
        queue.put(pending(owner, 1000, "last"))
        self.assertEqual(len(queue), 2)
        self.assertLess(len(queue._items), 100)

    def test_backoff(self):
        self.assertEqual([backoff_delay(n, 0.5, 60, lambda: 0) for n in range(9)],
                         [0.5, 1, 2, 4, 8, 16, 32, 60, 60])
        self.assertEqual(backoff_delay(3, 1, 60, lambda: 1), 6)
