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

The engine also keeps each application's record for ``/health`` and
``/metrics``: when the push service last answered a push, when an attempt
last failed and why, and how many attempts failed in a row since.  A
transport that holds connections reports how connecting goes with
:meth:`~DeliveryClient.connect_failed` and
:meth:`~DeliveryClient.connect_succeeded`.  After :attr:`failing_after`
failures in a row of either kind the state is ``failing``, whatever the
connections say: an application whose every push fails is not up.
"""

from __future__ import annotations

import email.utils
import logging
from collections import Counter
from typing import Any, Dict, Generic, List, Optional, Union, cast

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from sylkpush.expiry import utc_text
from sylkpush.pns.base import OutgoingPush, PushClient, PushResult, unanswered, unavailable
from sylkpush.pns.pending import (DEFAULT_QUEUE_LIMIT, HANDED_OVER, IN_FLIGHT, NEW, QUEUED, RETRYING, Deadlines,
                                  P, PendingPush, PendingQueue, backoff_delay)

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


class DeliveryClient(PushClient, Generic[P]):
    """A push-service client built on the delivery engine.

    ``DeliveryClient(app, reactor, clock=None, queue_limit=10000)``: the
    network runs on ``reactor``; deadlines, retries and the stop timeout on
    ``clock`` (default: the reactor), so tests can drive them with a Clock.
    ``P`` is the kind of PendingPush its :meth:`prepare` makes.
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
    #: failed attempts (or connects) in a row after which the state is ``failing``
    failing_after = 3

    def __init__(self, app: Any, reactor: Any, clock: Any = None,
                 queue_limit: int = DEFAULT_QUEUE_LIMIT) -> None:
        super().__init__(app, reactor)
        self.clock = clock if clock is not None else reactor
        self.queue_limit = queue_limit
        self.queue: PendingQueue[P] = PendingQueue()
        #: the deadlines of the pushes not answered yet (handed-over ones too)
        self.deadlines: Deadlines[P] = Deadlines(self.clock, self.expired)
        #: pushes with an attempt under way -> when it started (reactor time)
        self.in_flight: Dict[P, float] = {}
        #: pushes waiting to be tried again -> their timer
        self.retrying: Dict[P, Any] = {}
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
        #: when (clock time) the push service last answered a push (any answer
        #: but 5xx, 401 and 403: those say the application cannot deliver)
        self.last_success: Optional[float] = None
        #: when an attempt or a connect last failed, and why
        self.last_failure: Optional[float] = None
        self.last_failure_reason = ""
        #: attempts failed since the push service last answered a push
        self.consecutive_failures = 0
        #: connects failed since a connection was last ready (transports that report them)
        self.connect_failures = 0

    # -- what a transport provides -------------------------------------------

    @property
    def peer(self) -> str:
        """Where pushes go, for reasons ("no answer from <peer>")."""
        return self.name

    def push_url(self, push: OutgoingPush) -> str:
        """The URL reported with ``push``'s result."""
        raise NotImplementedError

    def prepare(self, push: OutgoingPush) -> Union[P, PushResult]:
        """The PendingPush of ``push``, or a PushResult when it must not be sent."""
        # P is PendingPush itself unless a subclass makes its own kind (Apple, Firebase)
        return cast(P, PendingPush(push, self, self.push_url(push)))

    def open(self) -> None:
        """Called by :meth:`start`: open connections, fetch tokens."""

    def capacity(self) -> int:
        """How many attempts may start now."""
        raise NotImplementedError

    def attempt(self, pending: P) -> None:
        """Start one attempt of ``pending``; report its end with one of the outcome methods."""
        raise NotImplementedError

    def flush(self) -> None:
        """Called after a batch of attempts (write them in one go)."""

    def abandon_attempt(self, pending: P) -> None:
        """The engine is done with ``pending``'s attempt (deadline, attempt
        timeout): free what it holds if that is possible."""

    def waiting_reason(self, pending: P) -> str:
        """Why ``pending`` is still unanswered, for the 503 at its deadline."""
        if pending.state is IN_FLIGHT:
            return f"no answer from {self.peer}"
        return f"waiting for {self.peer}"

    def close(self) -> Any:
        """Called once stopped and idle: close connections (may return a Deferred)."""

    def connection_status(self) -> Dict[str, Any]:
        """The transport's part of :meth:`status` while it runs: ``state``
        (``ready``, or e.g. ``connected``, ``connecting``), ``reconnects``
        and whatever else it wants to show."""
        return {"state": "ready" if self.started else "stopped", "reconnects": 0}

    # -- outcomes of an attempt, reported by the transport ---------------------

    def finish(self, pending: P, result: PushResult) -> None:
        """The push service answered: ``result`` is the caller's."""
        pending.answer(result)

    def retry(self, pending: P, reason: str, delay: Optional[float] = None,
              retry_after: Optional[float] = None) -> None:
        """The push service answered with a passing failure: try again after
        ``retry_after`` (the service's wish), else ``delay``, else the backoff."""
        told = retry_after is not None
        self._again(pending, reason, retry_after if told else delay, told)

    def not_processed(self, pending: P, reason: str, backoff: bool = False) -> None:
        """The push service never processed this attempt.  Sent again at once
        (the attempt does not count) or, with ``backoff``, after a backoff."""
        if not backoff:
            pending.attempts -= 1
        self._again(pending, reason, None if backoff else 0.0, failed=backoff)

    def unknown(self, pending: P, reason: str, backoff: bool = False) -> None:
        """Written and never answered: it may have been delivered.  Sent again
        at once (elsewhere) or, with ``backoff``, after a backoff."""
        if pending.state is IN_FLIGHT:
            pending.maybe_delivered = True
        self._again(pending, reason, None if backoff else 0.0)

    # -- how connecting goes, reported by transports that hold connections -------

    def connect_failed(self, reason: str) -> None:
        """A connection attempt failed (before the connection was ready)."""
        if self.stopping:
            return
        self.connect_failures += 1
        self._note_failure(reason, self.connect_failures, "connects")

    def connect_succeeded(self) -> None:
        """A connection is ready."""
        if self.connect_failures >= self.failing_after and self.consecutive_failures < self.failing_after:
            log.info("%s client of %s connected again after %d failed connects", self.name, self.app.app_id,
                     self.connect_failures)
        self.connect_failures = 0

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

    def queued(self, pending: P) -> None:
        """``pending`` waits in the queue (a transport may hurry a reconnect)."""

    def take_waiting(self) -> List[P]:
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

    @property
    def failing(self) -> bool:
        """True after :attr:`failing_after` failed attempts, or connects, in a row."""
        limit = self.failing_after
        return self.consecutive_failures >= limit or self.connect_failures >= limit

    def status(self) -> Dict[str, Any]:
        """For /health: the transport's :meth:`connection_status`, its state
        ``stopping``/``stopped`` once stopped and ``failing`` while failing,
        the counts, and the record of successes and failures."""
        status = self.connection_status()
        if self.stopping:
            status["state"] = "stopped" if self.stopped else "stopping"
        elif self.failing:
            status["state"] = "failing"
        status.update(self.counts())
        status.update(last_success=_when(self.last_success), last_failure=_when(self.last_failure),
                      last_failure_reason=self.last_failure_reason,
                      consecutive_failures=self.consecutive_failures, connect_failures=self.connect_failures)
        return status

    @property
    def stopped(self) -> bool:
        return self._stopped is not None and self._stopped.called

    # -- what PendingPush calls ------------------------------------------------

    def settled(self, pending: P, state: str, result: PushResult) -> None:
        """``pending``, last seen in ``state``, is being answered ``result``."""
        if state is QUEUED:
            self.queue.discard(pending)
        elif state is IN_FLIGHT:
            del self.in_flight[pending]
            code = result.code
            if code < 500 and code != 401 and code != 403:
                self.last_success = self.clock.seconds()
                if self.consecutive_failures:
                    self._recovered()
            elif not self.stopping:
                self._attempt_failed(result.reason)
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

    def expired(self, pending: P) -> None:
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

    def _attempt(self, pending: P) -> None:
        pending.attempts += 1
        pending.state = IN_FLIGHT
        pending.written = False
        self.in_flight[pending] = self.reactor.seconds()
        try:
            self.attempt(pending)
        except Exception:  # a bug in the transport: its caller still gets one answer, now
            log.exception("%s: the %s client failed to send", pending.push.request_id, self.name)
            pending.answer(PushResult(500, f"internal error in the {self.name} client", pending.url))

    def _again(self, pending: P, reason: str, delay: Optional[float], told: bool = False,
               failed: bool = True) -> None:
        """The attempt of ``pending`` ended without a final answer (``failed``
        False: through no fault of the push service, it does not count)."""
        if pending.state is not IN_FLIGHT:
            return  # answered meanwhile (deadline, stop): this attempt no longer matters
        del self.in_flight[pending]
        pending.state = NEW
        pending.written = False
        pending.last_failure = reason
        if self.stopping:
            self._answer_unfinished(pending, f"the {self.name} client stopped")
            return
        if failed:
            self._attempt_failed(reason)
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

    def _attempt_failed(self, reason: str) -> None:
        self.consecutive_failures += 1
        self._note_failure(reason, self.consecutive_failures, "attempts")

    def _note_failure(self, reason: str, in_a_row: int, what: str) -> None:
        """An attempt or a connect failed; the ``in_a_row``-th of its kind."""
        self.last_failure = self.clock.seconds()
        self.last_failure_reason = reason
        if in_a_row == self.failing_after:
            log.warning("%s client of %s failing: %d %s in a row failed, the last: %s", self.name,
                        self.app.app_id, in_a_row, what, reason)

    def _recovered(self) -> None:
        if self.consecutive_failures >= self.failing_after:
            log.info("%s client of %s delivers again after %d failed attempts", self.name, self.app.app_id,
                     self.consecutive_failures)
        self.consecutive_failures = 0

    def _retry_now(self, pending: P) -> None:
        del self.retrying[pending]
        self.queue.put_front(pending)
        self.pump()

    def _answer_unfinished(self, pending: P, event: str) -> int:
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
        closed.addErrback(self._close_failed)
        closed.addBoth(self._close_finished, self._stopped)

    def _close_failed(self, failure: Failure) -> None:
        log.error("closing the %s client of %s failed: %s", self.name, self.app.app_id, failure.getTraceback())

    def _close_finished(self, _: object, stopped: "Deferred[None]") -> None:
        stopped.callback(None)


def _when(moment: Optional[float]) -> Optional[str]:
    return utc_text(moment) if moment is not None else None
