"""A push waiting for its outcome, and the line of pushes waiting to be tried.

A :class:`PendingPush` is answered exactly once: with the push service's
result, or by its deadline.  Where it stands meanwhile (queued, in flight,
waiting to retry) is kept by the client that owns it
(:class:`sylkpush.pns.engine.DeliveryClient`), which is told of every answer
so its counts never drift.  A :class:`PendingQueue` is the FIFO of pushes
waiting for a connection or a free stream; :class:`Deadlines` watches the
deadlines of a client's pushes with one timer.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
from collections import deque
from typing import Any, Callable, Deque, Generic, List, Optional, Tuple, TypeVar

from twisted.internet.defer import Deferred

from sylkpush.pns.base import OutgoingPush, PushResult, unavailable

log = logging.getLogger(__name__)

#: default bound of a client: pushes queued, in flight and waiting to retry together
DEFAULT_QUEUE_LIMIT = 10_000

# where a PendingPush stands
NEW = "new"
QUEUED = "queued"
IN_FLIGHT = "in flight"
RETRYING = "waiting to retry"
HANDED_OVER = "handed over"
ANSWERED = "answered"


def backoff_delay(attempt: int, initial: float, cap: float,
                  jitter: Callable[[], float] = random.random) -> float:
    """Exponential backoff: ``initial`` doubled ``attempt`` times, at most
    ``cap``, with up to 25 % taken off at random so clients do not retry in step.
    """
    delay = min(cap, initial * (2 ** max(0, attempt)))
    return delay * (1 - 0.25 * jitter())


class PendingPush:
    """A push and the Deferred its caller waits on.

    ``owner`` provides ``clock`` (IReactorTime), ``deadlines`` (a
    :class:`Deadlines` that calls ``owner.expired(pending)`` when the deadline
    passed unanswered) and ``settled(pending, state, result)`` (called once,
    just before ``result`` is given; ``state`` is where the push stood).
    """

    def __init__(self, push: OutgoingPush, owner: Any, url: str) -> None:
        self.push = push
        self.url = url
        self.owner = owner
        self.deferred: "Deferred[PushResult]" = Deferred()
        self.attempts = 0
        self.state = NEW
        #: why the last try failed; part of the 503 reason at the deadline
        self.last_failure = ""
        #: the current attempt reached the push service's connection
        self.written = False
        #: an earlier attempt was written and never answered: it may have been delivered
        self.maybe_delivered = False
        owner.deadlines.watch(self)

    @property
    def answered(self) -> bool:
        return self.state is ANSWERED

    @property
    def unanswered_write(self) -> bool:
        """True when the push may have reached the push service without an answer."""
        return self.maybe_delivered or (self.written and self.state is IN_FLIGHT)

    def answer(self, result: PushResult) -> bool:
        """Give the caller ``result``; False when it was answered already."""
        state = self.state
        if state is ANSWERED:
            return False
        self.state = ANSWERED
        owner = self.owner
        owner.deadlines.forget()
        owner.settled(self, state, result)
        self.deferred.callback(result)
        return True

    def fail(self, reason: str) -> bool:
        """Answer 503 now with ``reason``."""
        return self.answer(unavailable(reason, self.url))

    def time_left(self) -> float:
        return self.push.deadline - self.owner.clock.seconds()


#: the kind of PendingPush a client makes (a transport may add what its attempts need)
P = TypeVar("P", bound=PendingPush)


class Deadlines(Generic[P]):
    """The deadlines of one client's pushes, on one timer.

    A timer per push would cost a reactor timer object and two heap
    operations of the reactor (in Python) for each push; here each push is an
    entry of a heap of tuples, and one IDelayedCall waits for the nearest
    deadline.  An answered push is not searched for: its entry is skipped
    when it comes up, and the heap is rebuilt without such entries once they
    outnumber the others, so a push answered long before its deadline is not
    held until then.  ``expire(pending)`` is called, in deadline order, for
    each push whose deadline passed unanswered; it must answer it.
    """

    def __init__(self, clock: Any, expire: Callable[[P], None]) -> None:
        self.clock = clock
        self.expire = expire
        self._heap: List[Tuple[float, int, P]] = []
        self._order = itertools.count()  # ties go in the order pushes came
        #: pushes watched and not answered
        self.live = 0
        self._timer: Any = None
        self._firing = False

    def __len__(self) -> int:
        return self.live

    def watch(self, pending: P) -> None:
        """Expire ``pending`` at ``pending.push.deadline`` unless answered by then."""
        deadline = pending.push.deadline
        heap = self._heap
        self.live += 1
        if len(heap) > 2 * self.live + 64:
            heap[:] = [entry for entry in heap if entry[2].state is not ANSWERED]
            heapq.heapify(heap)
        heapq.heappush(heap, (deadline, next(self._order), pending))
        if self._firing:
            return  # the timer is set again once the due pushes are answered
        timer = self._timer
        if timer is None or deadline < timer.getTime():
            if timer is not None:
                timer.cancel()
            self._schedule(deadline)

    def forget(self) -> None:
        """A watched push was answered (its entry goes when it comes up)."""
        self.live -= 1
        if not self.live:
            self._heap.clear()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _fire(self) -> None:
        self._timer = None
        self._firing = True
        heap = self._heap
        try:
            now = self.clock.seconds()
            while heap and heap[0][0] <= now:
                pending = heapq.heappop(heap)[2]
                if pending.state is not ANSWERED:
                    try:
                        self.expire(pending)
                    except Exception:  # a bug there must not leave the later deadlines unwatched
                        log.exception("%s: answering at the deadline failed", pending.push.request_id)
        finally:
            self._firing = False
        while heap and heap[0][2].state is ANSWERED:
            heapq.heappop(heap)
        if heap:
            self._schedule(heap[0][0])

    def _schedule(self, deadline: float) -> None:
        self._timer = self.clock.callLater(max(0.0, deadline - self.clock.seconds()), self._fire)


class PendingQueue(Generic[P]):
    """The FIFO of pushes waiting for a connection or a free stream.

    A push answered while it waits (its deadline passed) is taken out of the
    count at once with :meth:`discard`; its slot in the deque is reclaimed
    when it reaches the front or at the next compaction.  The queue has no
    bound of its own: the owning client bounds everything it holds.
    """

    def __init__(self) -> None:
        self._items: Deque[P] = deque()
        self._waiting = 0  # pushes in _items still QUEUED

    def __len__(self) -> int:
        return self._waiting

    def put(self, pending: P) -> None:
        """Queue ``pending`` behind the others."""
        self._enter(pending)
        self._items.append(pending)

    def put_front(self, pending: P) -> None:
        """Put back a push whose try failed; it keeps its place ahead of newer ones."""
        self._enter(pending)
        self._items.appendleft(pending)

    def get(self) -> Optional[P]:
        """The oldest push still waiting, out of the queue (its state is the caller's to set)."""
        items = self._items
        while items:
            pending = items.popleft()
            if pending.state is QUEUED:
                pending.state = NEW
                self._waiting -= 1
                return pending
        return None

    def discard(self, pending: P) -> None:
        """``pending`` (QUEUED) leaves the line where it stands."""
        self._waiting -= 1
        pending.state = NEW

    def take_all(self) -> List[P]:
        """Remove and return every waiting push, oldest first."""
        taken: List[P] = []
        while True:
            pending = self.get()
            if pending is None:
                return taken
            taken.append(pending)

    def earliest_deadline(self) -> Optional[float]:
        """The nearest deadline of the pushes waiting, or None when none waits."""
        deadlines = [pending.push.deadline for pending in self._items if pending.state is QUEUED]
        return min(deadlines) if deadlines else None

    def _enter(self, pending: P) -> None:
        pending.state = QUEUED
        self._waiting += 1
        if len(self._items) > 2 * self._waiting + 64:
            self._items = deque(p for p in self._items if p.state is QUEUED)
