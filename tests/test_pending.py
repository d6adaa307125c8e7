"""PendingPush, PendingQueue and Deadlines: exactly-once answers, deadlines on one timer, lazy removal."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial import unittest

from sylkpush.pns.base import OutgoingPush, PushResult
from sylkpush.pns.pending import ANSWERED, QUEUED, Deadlines, PendingPush, PendingQueue, backoff_delay
from tests.doubles import capture_logs


class Owner:
    """What a PendingPush needs from its client."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.settled_states = []
        self.queue = PendingQueue()
        self.deadlines = Deadlines(clock, self.expired)

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

    def test_pushes_expire_at_their_own_deadlines_on_one_timer(self):
        clock = Clock()
        owner = Owner(clock)
        answered = []
        for name, budget in (("message", 1020), ("call", 64), ("early", 5), ("tie", 64)):
            pending(owner, budget, name).deferred.addCallback(lambda result, name=name: answered.append(
                (name, clock.seconds(), result.code)))
        # a later push with a nearer deadline moved the one timer forward
        self.assertEqual([call.getTime() for call in clock.getDelayedCalls()], [5])
        clock.advance(4.9)
        self.assertEqual(answered, [])
        clock.advance(0.1)
        self.assertEqual(answered, [("early", 5, 503)])
        clock.pump([58.9, 0.1])
        self.assertEqual(answered[1:], [("call", 64, 503), ("tie", 64, 503)])
        self.assertEqual([call.getTime() for call in clock.getDelayedCalls()], [1020])
        clock.advance(956)
        self.assertEqual(answered[3:], [("message", 1020, 503)])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_answered_pushes_leave_no_timer_and_are_not_held(self):
        clock = Clock()
        owner = Owner(clock)
        first, second = pending(owner, 10, "first"), pending(owner, 20, "second")
        first.answer(PushResult(200, "OK", "u"))
        self.assertEqual(len(owner.deadlines), 1)
        clock.advance(10)  # the timer set for first finds it answered and waits for second
        self.assertFalse(second.deferred.called)
        self.assertEqual([call.getTime() for call in clock.getDelayedCalls()], [20])
        second.answer(PushResult(200, "OK", "u"))
        self.assertEqual(clock.getDelayedCalls(), [])
        # pushes answered long before their deadlines are dropped from the heap as they pile up
        waiting = pending(owner, 1000, "waiting")
        for i in range(1000):
            pending(owner, 64, f"quick{i}").answer(PushResult(200, "OK", "u"))
        self.assertEqual(len(owner.deadlines), 1)
        self.assertLess(len(owner.deadlines._heap), 100)
        clock.advance(1000)
        self.assertEqual(self.successResultOf(waiting.deferred).code, 503)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_a_push_watched_while_deadlines_are_answered_gets_its_own(self):
        clock = Clock()
        owner = Owner(clock)
        later = []

        def another(result):
            later.append(pending(owner, 3, "later"))
        pending(owner, 5, "first").deferred.addCallback(another)
        clock.advance(5)
        self.assertEqual([call.getTime() for call in clock.getDelayedCalls()], [8])
        clock.advance(3)
        self.assertEqual(self.successResultOf(later[0].deferred).code, 503)

    def test_a_failing_expiry_leaves_the_other_deadlines_watched(self):
        clock = Clock()
        owner = Owner(clock)
        broken = pending(owner, 5, "broken")
        other = pending(owner, 5, "other")

        def expired(pending):
            if pending is broken:
                raise RuntimeError("bug")
            pending.fail("deadline passed")
        owner.deadlines.expire = expired
        logs = capture_logs(self)
        clock.advance(5)
        self.assertEqual(self.successResultOf(other.deferred).code, 503)
        self.assertEqual(len(logs.matching("broken: answering at the deadline failed")), 1)

    def test_backoff(self):
        self.assertEqual([backoff_delay(n, 0.5, 60, lambda: 0) for n in range(9)],
                         [0.5, 1, 2, 4, 8, 16, 32, 60, 60])
        self.assertEqual(backoff_delay(3, 1, 60, lambda: 1), 6)
