"""From a decoded wake-up request to a push result (docs/api.md says what callers see).

:meth:`Dispatcher.prepare` validates the request, finds its application and
renders headers and payload; :meth:`Dispatcher.deliver` hands the result to
the application's push client and reports the outcome.  The HTTP layer calls
both, in one go or (``return_async = false``) with a 202 in between.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from sylkpush.notification import (Notification, ValidationError, check_strings, parse_app_id, parse_notification,
                                   parse_platform)
from sylkpush.pns.base import OutgoingPush, PushResult
from sylkpush.app_registry import Application, AppRegistry

log = logging.getLogger(__name__)

#: how long a push may be tried (its deadline): calls and their cancels, everything else
CALL_DEADLINE = 64.0
OTHER_DEADLINE = 17 * 60.0
#: seconds past a push's deadline after which the dispatcher answers for a
#: client that does not enforce deadlines itself (a custom one, say)
DEADLINE_GRACE = 1.0


def exc_info_of(failure: Failure) -> Tuple[Any, Any, Any]:
    """``exc_info`` for logging: the traceback then goes to the log's own
    traceback block, the message stays one line."""
    return failure.type, failure.value, failure.getTracebackObject()


class ApiError(Exception):
    """A request that is answered with ``code`` without being pushed."""

    def __init__(self, code: int, description: str, data: Optional[Dict[str, Any]] = None,
                 call_id: Optional[str] = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.data = data or {}
        #: the call-id of a body that could not be read, for the refusal's log line
        self.call_id = call_id


@dataclass(slots=True)
class PreparedPush:
    """A validated request with its application and rendered push."""

    notification: Notification
    app: Application
    push: OutgoingPush
    client_address: str
    started: float = field(default_factory=time.monotonic)

    @property
    def request_id(self) -> str:
        return self.push.request_id


@dataclass(slots=True)
class Answer:
    """What the HTTP layer sends back: status, description and data."""

    code: int
    description: str
    #: an object; a list for the answers that hold one result per device (v2)
    data: Union[Dict[str, Any], List[Any]]


#: an observer sees every finished push (metrics, remote logging); it must not raise
ResultObserver = Callable[[PreparedPush, PushResult], None]
#: a refusal observer sees the code of every request answered without a push
RefusalObserver = Callable[[int], None]


def result_data(prepared: PreparedPush, result: PushResult) -> Dict[str, Any]:
    """The ``data`` object of a push answer (see docs/api.md)."""
    return {
        "code": result.code,
        "reason": result.reason,
        "url": result.url,
        "platform": prepared.notification.platform,
        "call_id": prepared.notification.call_id,
        "token": prepared.notification.token,
        "body": result.body if isinstance(result.body, dict) else {},
    }


def answer_for(prepared: PreparedPush, result: PushResult) -> Answer:
    description = ("push notification response" if result.code == 200
                   else f"push notification failed: {result.reason}")
    return Answer(result.code, description, result_data(prepared, result))


class Dispatcher:
    """Validates, renders and sends; one per running server."""

    def __init__(self, registry: Callable[[], AppRegistry], reactor: IReactorTime) -> None:
        #: a callable so that a reload's new registry is seen by the next request
        self._registry = registry
        self.reactor = reactor
        self.observers: List[ResultObserver] = []
        self.refusal_observers: List[RefusalObserver] = []
        #: pushes handed to a client and not yet answered by it
        self.in_flight = 0
        self._idle_waiters: List[Deferred] = []

    def refused(self, code: int) -> None:
        """Report a request answered with ``code`` without being pushed."""
        for observer in list(self.refusal_observers):
            try:
                observer(code)
            except Exception:
                log.exception("refusal observer %r failed", observer)

    def wait_idle(self) -> "Deferred[None]":
        """A Deferred that fires when no push is in flight (at once if none is)."""
        if not self.in_flight:
            return succeed(None)
        waiter: Deferred = Deferred()
        self._idle_waiters.append(waiter)
        return waiter

    def _finished_one(self) -> None:
        self.in_flight -= 1
        if not self.in_flight and self._idle_waiters:
            # on the next turn: the caller of the last push is answered first
            self.reactor.callLater(0, self._wake_idle_waiters)

    def _wake_idle_waiters(self) -> None:
        if self.in_flight:
            return
        waiters, self._idle_waiters = self._idle_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def application(self, body: Any) -> Application:
        """The configured application ``body`` names with ``app-id`` and
        ``platform``; :class:`ApiError` when there is none."""
        if not isinstance(body, Mapping):
            raise ApiError(400, "request body must be a JSON object")
        registry = self._registry()
        try:
            check_strings(body)
            platform = parse_platform(body, registry.platforms)
            app_id = parse_app_id(body)
        except ValidationError as exc:
            raise ApiError(400, str(exc), {"field": exc.field}) from None
        app = registry.get(app_id, platform)
        if app is None:
            raise ApiError(404, f"{platform.capitalize()} {app_id} app is not configured")
        return app

    def prepare(self, body: Any, client_address: str, request_id: Optional[str] = None) -> PreparedPush:
        """Validate and render; raises :class:`ApiError` for every refusal.

        ``request_id`` replaces the usual ``<event>-<app-id>-<call-id>``.
        """
        app = self.application(body)
        try:
            # the body is kept for remote logging only: a push held during an outage costs less
            notification = parse_notification(body, app.config.app_type, app.config.platform,
                                              keep_raw=bool(app.config.log_remote_urls))
        except ValidationError as exc:
            raise ApiError(400, str(exc), {"field": exc.field}) from None

        now = self.reactor.seconds()
        request_id = request_id or notification.request_id
        if log.isEnabledFor(logging.DEBUG):
            # at INFO the result line alone says who asked what and what came of it
            log.debug("%s: incoming request from %s: from %s to %s device %s token %s", request_id,
                      client_address, notification.sip_from, notification.sip_to,
                      notification.device_id or "-", notification.token)
            log.debug("%s: incoming body %s", request_id, json.dumps(body, sort_keys=True))
        wall_clock = time.time()
        try:
            headers = app.headers_class(notification, app.config, wall_clock).headers
            payload = app.payload_class(notification, app.config, wall_clock).payload
        except Exception:
            log.exception("%s: %s renderer failed", request_id, app.config.app_type)
            raise ApiError(500, f"internal error rendering the {app.config.app_type} notification") from None
        if not isinstance(headers, dict) or not isinstance(payload, dict):
            log.error("%s: %s renderers returned %r and %r instead of dicts", request_id,
                      app.config.app_type, type(headers).__name__, type(payload).__name__)
            raise ApiError(500, f"internal error rendering the {app.config.app_type} notification")
        budget = CALL_DEADLINE if notification.is_call else OTHER_DEADLINE
        push = OutgoingPush(request_id=request_id, token=notification.token, headers=headers,
                            payload=payload, deadline=now + budget, voip=notification.is_voip)
        return PreparedPush(notification, app, push, client_address)

    def deliver(self, prepared: PreparedPush) -> "Deferred[Answer]":
        """Send through the application's client; fires with the answer for the caller."""
        app = prepared.app
        if app.client is None:
            return succeed(self._result(prepared, PushResult(
                503, f"push service for {app.label} is not available: {app.client_problem}", "")))
        self.in_flight += 1
        try:
            sending = app.client.send(prepared.push)
            if not getattr(app.client, "enforces_deadlines", False):
                sending = self._by_deadline(sending, prepared)
        except Exception:
            sending = fail()
        # Deferred callbacks rather than a coroutine: this runs for every push
        return sending.addCallbacks(self._sent, self._client_failed, callbackArgs=(prepared,),
                                    errbackArgs=(prepared,))

    def _sent(self, result: PushResult, prepared: PreparedPush) -> Answer:
        self._finished_one()
        return self._result(prepared, result)

    def _client_failed(self, failure: Failure, prepared: PreparedPush) -> Answer:
        self._finished_one()
        log.error("%s: push client failed", prepared.request_id, exc_info=exc_info_of(failure))
        return self._result(prepared, PushResult(500, "internal error in the push service client", ""))

    def _result(self, prepared: PreparedPush, result: PushResult) -> Answer:
        """Log and observe ``result``; the answer for the caller."""
        log.info("%s: result %s %s (%s, caller %s, %.0f ms)", prepared.request_id, result.code, result.reason,
                 prepared.app.label, prepared.client_address, 1000 * (time.monotonic() - prepared.started))
        for observer in self.observers:
            try:
                observer(prepared, result)
            except Exception:
                log.exception("%s: result observer %r failed", prepared.request_id, observer)
        return answer_for(prepared, result)

    def _by_deadline(self, sending: "Deferred[PushResult]", prepared: PreparedPush) -> "Deferred[PushResult]":
        """``sending``'s result, or a 504 once the push's deadline (and a grace) passed."""
        outcome: Deferred = Deferred()
        late = max(0.0, prepared.push.deadline - self.reactor.seconds()) + DEADLINE_GRACE

        def expired() -> None:
            log.warning("%s: the %s client gave no answer within the deadline", prepared.request_id,
                        prepared.app.label)
            outcome.callback(PushResult(504, "no answer from the push service client within the deadline", ""))
        timer = self.reactor.callLater(late, expired)

        def done(result: Any) -> None:
            if timer.active():
                timer.cancel()
                if isinstance(result, Failure):
                    outcome.errback(result)
                else:
                    outcome.callback(result)
        sending.addBoth(done)
        return outcome
