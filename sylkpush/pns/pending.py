"""What both push-service clients share: a push waiting for its outcome.

A :class:`PendingPush` is answered exactly once: by the client with the push
service's result, or by its own deadline timer with 503.  A
:class:`PendingQueue` holds the pushes that wait for a connection or a free
stream; it is bounded, and pushes whose deadline passed while they waited are
dropped from it (they were already answered).
"""

from __future__ import annotations

import random
from collections import deque
from typing import Callable, Deque, List, Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from sylkpush.pns.base import OutgoingPush, PushResult, unavailable

#: default bound of a client's queue (SPEC §6)
DEFAULT_QUEUE_LIMIT = 10_000


def backoff_delay(attempt: int, initial: float, cap: float,
                  jitter: Callable[[], float] = random.random) -> float:
    """Exponential backoff: ``initial`` doubled ``attempt`` times, at most
    ``cap``, with up to 25 % taken off at random so clients do not retry in step.
    """
    delay = min(cap, initial * (2 ** max(0, attempt)))
    return delay * (1 - 0.25 * jitter())


class PendingPush:
    """A push and the Deferred its caller waits on."""

    def __init__(self, push: OutgoingPush, reactor: IReactorTime, url: str) -> None:
        self.push = push
        self.url = url
        self.deferred: "Deferred[PushResult]" = Deferred()
        self.attempts = 0
        #: whether it stands in a PendingQueue now, and whether one watches its answer
        self.queued = False
        self.watched = False
        #: why the last try failed; part of the 503 reason at the deadline
        self.last_failure = "no connection to the push service"
        self._timer = reactor.callLater(max(0.0, push.deadline - reactor.seconds()), self._expire)

    @property
    def answered(self) -> bool:
        return self.deferred.called

    def answer(self, result: PushResult) -> bool:
        """Fire the Deferred with ``result``; False when it was answered already."""
        if self.deferred.called:
            return False
        if self._timer.active():
            self._timer.cancel()
        self.deferred.callback(result)
        return True

    def fail(self, reason: str) -> bool:
        """Answer 503 now with ``reason``."""
        return self.answer(unavailable(reason, self.url))

    def time_left(self, reactor: IReactorTime) -> float:
        return self.push.deadline - reactor.seconds()

    def _expire(self) -> None:
        self.answer(unavailable(f"deadline passed: {self.last_failure}", self.url))


class PendingQueue:
    """A bounded FIFO of pushes waiting for a connection or a free stream.

    A push answered while it waits (its deadline passed) stops counting at
    once, wherever it stands in the line, so expired calls never fill the
    queue ahead of live ones; its slot in the deque is reclaimed when it
    reaches the front or at the next compaction.
    """

    def __init__(self, limit: int = DEFAULT_QUEUE_LIMIT) -> None:
        self.limit = limit
        self._items: Deque[PendingPush] = deque()
        self._waiting = 0  # pushes in _items not answered yet

    def __len__(self) -> int:
        return self._waiting

    def put(self, pending: PendingPush) -> bool:
        """Queue ``pending``; when the queue is full answer it 503 and return False."""
        if self._waiting >= self.limit:
            pending.fail(f"queue full ({self.limit} requests waiting)")
            return False
        self._enter(pending)
        self._items.append(pending)
        return True

    def put_front(self, pending: PendingPush) -> None:
        """Put back a push whose try failed; it keeps its place ahead of newer ones."""
        self._enter(pending)
        self._items.appendleft(pending)

    def get(self) -> Optional[PendingPush]:
        """The oldest push not answered yet, or None."""
        while self._items:
            pending = self._items.popleft()
            if pending.queued:
                pending.queued = False
                self._waiting -= 1
                return pending
        return None

    def take_all(self) -> List[PendingPush]:
        """Remove and return every waiting push, oldest first (not answering them)."""
        taken = []
        while True:
            pending = self.get()
            if pending is None:
                return taken
            taken.append(pending)

    def earliest_deadline(self) -> Optional[float]:
        """The nearest deadline of the pushes waiting, or None when none waits."""
        deadlines = [pending.push.deadline for pending in self._items if pending.queued]
        return min(deadlines) if deadlines else None

    def fail_all(self, reason: str) -> None:
        """Answer every waiting push 503 (used when a client is stopped)."""
        while True:
            pending = self.get()
            if pending is None:
                return
            pending.fail(reason)

    def _enter(self, pending: PendingPush) -> None:
        if not pending.watched:
            pending.watched = True
            pending.deferred.addBoth(self._answered, pending)
        pending.queued = True
        self._waiting += 1
        if len(self._items) > 2 * self._waiting + 64:
            self._items = deque(p for p in self._items if p.queued)

    def _answered(self, result: object, pending: PendingPush) -> object:
        if pending.queued:
            pending.queued = False
            self._waiting -= 1
        return result
