"""Template of a custom push service: ``app_platform = mypns``.

How to use it:

1. Copy this file into ``extra_pns_dir`` (general.ini, ``[applications]``;
   ``pns/`` inside the config directory by default) and rename it after your
   platform, e.g. ``acmepush.py``; rename the class to ``<Platform>Client``
   with the name capitalised (``AcmepushClient``).
2. In applications.ini, give the application ``app_platform = acmepush`` and
   your own keys (here ``mypns_url``), read with ``self.app.option(name)``.
   Callers then send ``"platform": "acmepush"`` in their wake-up requests.
3. Renderers: the module of the application's ``app_type`` must define
   ``<Platform><Apptype>Headers`` and ``<Platform><Apptype>Payload`` for
   your platform, e.g. ``AcmepushMyappHeaders``; see
   ``config/applications/myapp.py`` (``MypnsMyappHeaders``...).  The built-in
   ``sylk`` and ``linphone`` types only render for ``apple`` and ``firebase``.

This client POSTs ``{"token", "headers", "payload"}`` as JSON to
``mypns_url`` and maps the answer: 2xx is delivered (200), 404/410 mean the
token is gone (410: the caller should forget it), other 4xx are returned as
they are, 5xx and network errors are 503.  It does not retry; add that in
:meth:`_attempt` if your service needs it.  Rules every client follows, and
this one shows: the Deferred returned by :meth:`send` fires exactly once and
never errbacks; nothing blocks the reactor; :meth:`stop` lets the pushes in
flight finish; secrets never reach a log line.  If this module fails to
import or lacks its class, only the applications using it are disabled, with
a log line saying why.
"""

import json
import logging
from typing import Any, Dict

from treq.client import HTTPClient
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.web.client import Agent, HTTPConnectionPool

from sylkpush.pns.base import ConfigError, OutgoingPush, PushClient, PushResult

log = logging.getLogger("sylkpush.pns.mypns")


class MypnsClient(PushClient):
    """One client per application with ``app_platform = mypns``."""

    platform = "mypns"

    def __init__(self, app: Any, reactor: Any) -> None:
        super().__init__(app, reactor)
        self.url = app.option("mypns_url")
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError("mypns_url must be an http(s) URL")
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.http = HTTPClient(Agent(reactor, pool=self.pool))
        self.in_flight: Dict[int, Deferred] = {}
        self.stopping = False

    def send(self, push: OutgoingPush) -> "Deferred[PushResult]":
        if self.stopping:
            return succeed(PushResult(503, "push service client is stopping", self.url))
        attempt = self._attempt(push)
        self.in_flight[id(attempt)] = attempt
        attempt.addBoth(self._forget, id(attempt))
        return attempt

    def _attempt(self, push: OutgoingPush) -> "Deferred[PushResult]":
        body = json.dumps({"token": push.token, "headers": push.headers, "payload": push.payload})
        timeout = max(0.1, push.deadline - self.reactor.seconds())
        log.info("%s: outgoing push to %s", push.request_id, self.url)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: outgoing body %s", push.request_id, body)
        posting = self.http.post(self.url, data=body.encode("utf-8"), timeout=timeout,
                                 headers={b"content-type": [b"application/json"]})
        posting.addCallback(self._answered, push)
        posting.addErrback(self._failed, push)
        return posting

    def _answered(self, response: Any, push: OutgoingPush) -> Deferred:
        def result(content: bytes) -> PushResult:
            try:
                parsed = json.loads(content) if content else {}
            except ValueError:
                parsed = {}
            parsed = parsed if isinstance(parsed, dict) else {}
            reason = str(parsed.get("reason") or response.phrase.decode("latin-1"))
            if 200 <= response.code < 300:
                return PushResult(200, reason or "OK", self.url, parsed)
            if response.code in (404, 410):
                return PushResult(410, reason, self.url, parsed)
            if response.code < 500:
                return PushResult(response.code, reason, self.url, parsed)
            return PushResult(503, f"push service answered {response.code} {reason}", self.url, parsed)
        return response.content().addCallback(result)

    def _failed(self, failure: Any, push: OutgoingPush) -> PushResult:
        log.warning("%s: push to %s failed: %s", push.request_id, self.url, failure.getErrorMessage())
        return PushResult(503, f"push service unreachable: {failure.getErrorMessage()}", self.url)

    def _forget(self, result: Any, key: int) -> Any:
        self.in_flight.pop(key, None)
        return result

    def stop(self) -> "Deferred[None]":
        self.stopping = True
        waiting = [Deferred() for _ in self.in_flight]
        for attempt, done in zip(list(self.in_flight.values()), waiting):
            attempt.addBoth(lambda result, d=done: (d.callback(None), result)[1])
        finished = DeferredList(waiting) if waiting else succeed(None)
        return finished.addCallback(lambda _: self.pool.closeCachedConnections())

    def status(self) -> Dict[str, Any]:
        return {"state": "stopped" if self.stopping else "ready", "queued": 0,
                "in_flight": len(self.in_flight), "reconnects": 0}
