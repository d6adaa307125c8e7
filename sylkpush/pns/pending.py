"""A push waiting for its outcome, and the line of pushes waiting to be tried.

A :class:`PendingPush` is answered exactly once: with the push service's
result, or by its deadline.  Where it stands meanwhile (queued, in flight,
waiting to retry) is kept by the client that owns it
(:class:`sylkpush.pns.engine.DeliveryClient`), which is told of every answer
so its counts never drift.  A :class:`PendingQueue` is the FIFO of pushes
waiting for a connection or a free stream.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any, Callable, Deque, Generic, List, Optional, TypeVar

from twisted.internet.defer import Deferred

from sylkpush.pns.base import OutgoingPush, PushResult, unavailable

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

    ``owner`` provides ``clock`` (IReactorTime), ``settled(pending, state,
    result)`` (called once, just before ``result`` is given; ``state`` is
    where the push stood) and ``expired(pending)`` (the deadline passed
    unanswered).
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
        clock = owner.clock
        self._timer = clock.callLater(max(0.0, push.deadline - clock.seconds()), owner.expired, self)

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
        if self._timer.active():
            self._timer.cancel()
        self.owner.settled(self, state, result)
        self.deferred.callback(result)
        return True

    def fail(self, reason: str) -> bool:
        """Answer 503 now with ``reason``."""
        return self.answer(unavailable(reason, self.url))

    def time_left(self) -> float:
        return self.push.deadline - self.owner.clock.seconds()


#: the kind of PendingPush a client makes (a transport may add what its attempts need)
P = TypeVar("P", bound=PendingPush)


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
