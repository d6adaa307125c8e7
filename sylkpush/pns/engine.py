"""One delivery engine for every push service: Apple, Firebase and custom ones.

:class:`DeliveryClient` does what every push-service client needs, once:
admission against one bound per application (pushes queued, in flight and
waiting to retry, together), the queue, each push's deadline, retries with
jittered exponential backoff or the service's ``Retry-After``, exactly one
answer per caller, draining and stopping.

A subclass is a transport.  It says how many attempts it can start now
(:meth:`~DeliveryClient.capacity`) and calls :meth:`~DeliveryClient.pump`
when it has room again, starts one (:meth:`~DeliveryClient.attempt`), sets
``pending.written`` once the request is on its way to the push service, and
reports how each attempt ended with exactly one of:

- :meth:`~DeliveryClient.finish`: answered, with the caller's final result;
- :meth:`~DeliveryClient.retry`: answered with a passing failure (5xx, 429...);
- :meth:`~DeliveryClient.not_processed`: the service never processed it
  (REFUSED_STREAM, a stream above a GOAWAY's last stream id, a connection that
  failed before the request was written): safe to send again;
- :meth:`~DeliveryClient.unknown`: written and never answered (connection
  lost, stream reset, no answer in time): it may have been delivered.

The last distinction is what a shutdown answers with: 503 ("not sent, safe
to retry") or 504 ("sent, no answer").
"""

from __future__ import annotations

import email.utils
import logging
from collections import Counter
from typing import Any, Dict, List, Optional, Union

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.task import LoopingCall

from sylkpush.pns.base import OutgoingPush, PushClient, PushResult, unanswered, unavailable
from sylkpush.pns.pending import (DEFAULT_QUEUE_LIMIT, HANDED_OVER, IN_FLIGHT, NEW, QUEUED, RETRYING, PendingPush,
                                  PendingQueue, backoff_delay)

log = logging.getLogger(__name__)

#: seconds between two looks for attempts past ``attempt_timeout``
SWEEP_INTERVAL = 1.0


def parse_retry_after(value: Optional[Union[bytes, str]], now: float) -> Optional[float]:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date); None when absent or bad."""
    if not value:
        return None
    text = value.decode("latin-1").strip() if isinstance(value, bytes) else value.strip()
    if text.isdigit():
        return float(text)
    try:
        parsed = email.utils.parsedate_tz(text)
    except (TypeError, ValueError):
        parsed = None
    if parsed is None:
        return None
    return max(0.0, float(email.utils.mktime_tz(parsed)) - now)


class DeliveryClient(PushClient):
    """A push-service client built on the delivery engine.

    ``DeliveryClient(app, reactor, clock=None, queue_limit=10000)``: the
    network runs on ``reactor``; deadlines, retries and the stop timeout on
    ``clock`` (default: the reactor), so tests can drive them with a Clock.
    """

    enforces_deadlines = True
    #: how messages name the service ("the APNs client stopped")
    name = "push service"
    retry_initial = 0.5
    retry_max = 60.0
    #: seconds :meth:`stop` lets attempts in flight finish
    stop_timeout = 10.0
    #: seconds an attempt may wait for its answer before it is given up as
    #: unknown and tried again; checked for all attempts at once every
    #: second.  None: the transport watches its attempts itself.  A
    #: transport that sets it must ignore what an abandoned attempt reports
    #: later, but its final answer (see FirebaseClient).
    attempt_timeout: Optional[float] = None

    def __init__(self, app: Any, reactor: Any, clock: Any = None,
                 queue_limit: int = DEFAULT_QUEUE_LIMIT) -> None:
        super().__init__(app, reactor)
        self.clock = clock if clock is not None else reactor
        self.queue_limit = queue_limit
        self.queue = PendingQueue()
        #: pushes with an attempt under way -> when it started (reactor time)
        self.in_flight: Dict[PendingPush, float] = {}
        #: pushes waiting to be tried again -> their timer
        self.retrying: Dict[PendingPush, Any] = {}
        #: pushes accepted and not answered: what the bound limits
        self.active = 0
        self.started = False
        self.stopping = False
        self._stopped: Optional[Deferred] = None
        self._closing = False
        self._stop_timer: Any = None
        self._sweeper: Optional[LoopingCall] = None
        self._pumping = False
        self._pump_again = False

    # -- what a transport provides -------------------------------------------

    @property
    def peer(self) -> str:
        """Where pushes go, for reasons ("no answer from <peer>")."""
        return self.name

    def push_url(self, push: OutgoingPush) -> str:
        """The URL reported with ``push``'s result."""
        raise NotImplementedError

    def prepare(self, push: OutgoingPush) -> Union[PendingPush, PushResult]:
        """The PendingPush of ``push``, or a PushResult when it must not be sent."""
        return PendingPush(push, self, self.push_url(push))

    def open(self) -> None:
        """Called by :meth:`start`: open connections, fetch tokens."""

    def capacity(self) -> int:
        """How many attempts may start now."""
        raise NotImplementedError

    def attempt(self, pending: PendingPush) -> None:
        """Start one attempt of ``pending``; report its end with one of the outcome methods."""
        raise NotImplementedError

    def flush(self) -> None:
        """Called after a batch of attempts (write them in one go)."""

    def abandon_attempt(self, pending: PendingPush) -> None:
        """The engine is done with ``pending``'s attempt (deadline, attempt
        timeout): free what it holds if that is possible."""

    def waiting_reason(self, pending: PendingPush) -> str:
        """Why ``pending`` is still unanswered, for the 503 at its deadline."""
        if pending.state is IN_FLIGHT:
            return f"no answer from {self.peer}"
        return f"waiting for {self.peer}"

    def close(self) -> Any:
        """Called once stopped and idle: close connections (may return a Deferred)."""

    # -- outcomes of an attempt, reported by the transport ---------------------

    def finish(self, pending: PendingPush, result: PushResult) -> None:
        """The push service answered: ``result`` is the caller's."""
        pending.answer(result)

    def retry(self, pending: PendingPush, reason: str, delay: Optional[float] = None,
              retry_after: Optional[float] = None) -> None:
        """The push service answered with a passing failure: try again after
        ``retry_after`` (the service's wish), else ``delay``, else the backoff."""
        told = retry_after is not None
        self._again(pending, reason, retry_after if told else delay, told)

    def not_processed(self, pending: PendingPush, reason: str, backoff: bool = False) -> None:
        """The push service never processed this attempt.  Sent again at once
        (the attempt does not count) or, with ``backoff``, after a backoff."""
        if not backoff:
            pending.attempts -= 1
        self._again(pending, reason, None if backoff else 0.0)

    def unknown(self, pending: PendingPush, reason: str, backoff: bool = False) -> None:
        """Written and never answered: it may have been delivered.  Sent again
        at once (elsewhere) or, with ``backoff``, after a backoff."""
        if pending.state is IN_FLIGHT:
            pending.maybe_delivered = True
        self._again(pending, reason, None if backoff else 0.0)

    # -- the PushClient contract ---------------------------------------------

    def start(self) -> None:
        if self.started:
            return
        self.started = True
        if self.attempt_timeout is not None:
            self._sweeper = LoopingCall(self._sweep)
            self._sweeper.clock = self.reactor
            self._sweeper.start(SWEEP_INTERVAL, now=False)
        self.open()

    def send(self, push: OutgoingPush) -> "Deferred[PushResult]":
        """Admit ``push`` (or answer 503 at once) and deliver it by its deadline."""
        if self.stopping or not self.started:
            state = "stopping" if self.stopping else "not started"
            return succeed(unavailable(f"the {self.name} client is {state}", self.push_url(push)))
        if self.active >= self.queue_limit:
            return succeed(unavailable(
                f"queue full: {self.queue_limit} pushes of {self.app.app_id} are queued, in flight or "
                "waiting to retry", self.push_url(push)))
        pending = self.prepare(push)
        if isinstance(pending, PushResult):
            return succeed(pending)
        self.active += 1
        if not len(self.queue) and self.capacity() > 0:
            self._attempt(pending)
            self.flush()
        else:
            self.queue.put(pending)
            self.queued(pending)
        return pending.deferred

    def queued(self, pending: PendingPush) -> None:
        """``pending`` waits in the queue (a transport may hurry a reconnect)."""

    def take_waiting(self) -> List[PendingPush]:
        """The pushes waiting here (queued, or to be tried again), oldest
        deadline first among the latter, handed to the client that replaces
        this one."""
        taken = self.queue.take_all()
        for pending in sorted(self.retrying, key=lambda p: p.push.deadline):
            timer = self.retrying.pop(pending)
            if timer.active():
                timer.cancel()
            taken.append(pending)
        for pending in taken:
            pending.state = HANDED_OVER
            self.active -= 1
        return taken

    def answer_unfinished(self) -> Dict[int, int]:
        """Answer every push still here: 503 if never written, 504 if it may have been."""
        codes: Counter = Counter()
        for pending in self.queue.take_all() + list(self.retrying) + list(self.in_flight):
            codes[self._answer_unfinished(pending, "shutdown")] += 1
        return dict(codes)

    def stop(self) -> "Deferred[None]":
        """Take no new pushes; answer the queued and waiting ones now; let
        attempts in flight finish for up to :attr:`stop_timeout`; then close."""
        if self._stopped is not None:
            return self._stopped
        self.stopping = True
        self._stopped = Deferred()
        event = f"the {self.name} client stopped"
        for pending in self.queue.take_all() + list(self.retrying):
            self._answer_unfinished(pending, event)
        if self.in_flight:
            self._stop_timer = self.clock.callLater(self.stop_timeout, self._stop_expired)
        self._check_stopped()
        return self._stopped

    def counts(self) -> Dict[str, int]:
        """``queued``, ``in_flight`` and ``retrying``, for :meth:`status`."""
        return {"queued": len(self.queue), "in_flight": len(self.in_flight), "retrying": len(self.retrying)}

    def status(self) -> Dict[str, Any]:
        if self.stopping:
            state = "stopped" if self._stopped is not None and self._stopped.called else "stopping"
        else:
            state = "ready" if self.started else "stopped"
        return dict(self.counts(), state=state, reconnects=0)

    @property
    def stopped(self) -> bool:
        return self._stopped is not None and self._stopped.called

    # -- what PendingPush calls ------------------------------------------------

    def settled(self, pending: PendingPush, state: str, result: PushResult) -> None:
        """``pending``, last seen in ``state``, is being answered ``result``."""
        if state is QUEUED:
            self.queue.discard(pending)
        elif state is IN_FLIGHT:
            del self.in_flight[pending]
        elif state is RETRYING:
            timer = self.retrying.pop(pending)
            if timer.active():
                timer.cancel()
        if state is not HANDED_OVER:
            self.active -= 1
        if log.isEnabledFor(logging.DEBUG):
            # the dispatcher logs every result at INFO; this line only adds up with debug
            log.debug("%s: %s result %d %s after %d tries", pending.push.request_id, self.name, result.code,
                      result.reason, pending.attempts)
        if self.stopping:
            self._check_stopped()

    def expired(self, pending: PendingPush) -> None:
        """``pending``'s deadline passed unanswered: 503, whatever its attempt does next."""
        in_flight = pending.state is IN_FLIGHT
        reason = pending.last_failure or self.waiting_reason(pending)
        pending.fail(f"deadline passed: {reason}")
        if in_flight:
            self.abandon_attempt(pending)

    # -- the engine ---------------------------------------------------------------

    def pump(self) -> None:
        """Start queued pushes while the transport has room (transports call
        this when room appears)."""
        if self._pumping:
            self._pump_again = True
            return
        self._pumping = True
        try:
            again = True
            while again:
                self._pump_again = False
                started = False
                room = self.capacity() if len(self.queue) else 0
                while room > 0:
                    pending = self.queue.get()
                    if pending is None:
                        break
                    self._attempt(pending)
                    started = True
                    room -= 1
                if started:
                    self.flush()
                again = self._pump_again
        finally:
            self._pumping = False

    def _attempt(self, pending: PendingPush) -> None:
        pending.attempts += 1
        pending.state = IN_FLIGHT
        pending.written = False
        self.in_flight[pending] = self.reactor.seconds()
        try:
            self.attempt(pending)
        except Exception:  # a bug in the transport: its caller still gets one answer, now
            log.exception("%s: the %s client failed to send", pending.push.request_id, self.name)
            pending.answer(PushResult(500, f"internal error in the {self.name} client", pending.url))

    def _again(self, pending: PendingPush, reason: str, delay: Optional[float], told: bool = False) -> None:
        """The attempt of ``pending`` ended without a final answer."""
        if pending.state is not IN_FLIGHT:
            return  # answered meanwhile (deadline, stop): this attempt no longer matters
        del self.in_flight[pending]
        pending.state = NEW
        pending.written = False
        pending.last_failure = reason
        if self.stopping:
            self._answer_unfinished(pending, f"the {self.name} client stopped")
            return
        if delay is None:
            delay = backoff_delay(pending.attempts - 1, self.retry_initial, self.retry_max)
        if delay > 0 and delay >= pending.time_left():
            pending.fail(f"deadline passed: {reason}" + (f" (Retry-After {delay:g} s)" if told else ""))
            return
        if delay <= 0:
            self.queue.put_front(pending)
            self.pump()
            return
        log.info("%s: %s; trying again in %.2f s", pending.push.request_id, reason, delay)
        pending.state = RETRYING
        self.retrying[pending] = self.clock.callLater(delay, self._retry_now, pending)

    def _retry_now(self, pending: PendingPush) -> None:
        del self.retrying[pending]
        self.queue.put_front(pending)
        self.pump()

    def _answer_unfinished(self, pending: PendingPush, event: str) -> int:
        """503 when no attempt of ``pending`` reached the push service, else 504."""
        if pending.unanswered_write:
            result = unanswered(f"sent, no answer from the push service before {event}", pending.url)
        else:
            last = f" (last failure: {pending.last_failure})" if pending.last_failure else ""
            result = unavailable(f"not sent before {event}{last}", pending.url)
        pending.answer(result)
        return result.code

    def _sweep(self) -> None:
        """Attempts past attempt_timeout end as unknown (oldest first: dict order)."""
        limit = self.reactor.seconds() - self.attempt_timeout
        late = []
        for pending, started in self.in_flight.items():
            if started > limit:
                break
            late.append(pending)
        for pending in late:
            self.unknown(pending, f"no answer from {self.peer} within {self.attempt_timeout:g} s", backoff=True)
            self.abandon_attempt(pending)

    def _stop_expired(self) -> None:
        self._stop_timer = None
        for pending in list(self.in_flight):
            self._answer_unfinished(pending, f"the {self.name} client stopped ({self.stop_timeout:g} s later)")

    def _check_stopped(self) -> None:
        if self._stopped is None or self._closing or self.in_flight or len(self.queue) or self.retrying:
            return
        self._closing = True
        if self._stop_timer is not None and self._stop_timer.active():
            self._stop_timer.cancel()
        self._stop_timer = None
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        closed = maybeDeferred(self.close)
        closed.addErrback(lambda failure: log.error("closing the %s client of %s failed: %s", self.name,
                                                    self.app.app_id, failure.getTraceback()))
        closed.addBoth(lambda _: self._stopped.callback(None))
