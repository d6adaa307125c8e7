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

This client is a transport of the delivery engine
(:class:`sylkpush.pns.engine.DeliveryClient`): the engine keeps the queue and
its bound, each push's deadline, the retries and their backoff, and answers
every caller exactly once; the client only starts attempts and says how each
one ended.  It POSTs ``{"token", "headers", "payload"}`` as JSON to
``mypns_url`` and maps the answer: 2xx is delivered (200), 404/410 mean the
token is gone (410: the caller should forget it), other 4xx are returned as
they are, 429 and 5xx are tried again (honouring ``Retry-After``) until the
push's deadline, as are network errors.  Rules every client follows, and this
one shows: report each attempt once (``finish``, ``retry``, ``not_processed``
before the request was written, ``unknown`` after); set ``pending.written``
when the request goes out, so a shutdown can tell the caller "not sent"
(503) from "sent, no answer" (504); nothing blocks the reactor; secrets never
reach a log line.  If this module fails to import or lacks its class, only
the applications using it are disabled, with a log line saying why.
"""

import json
import logging
import time
from typing import Any, Dict

from treq.client import HTTPClient
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.web.client import Agent

from sylkpush.config import ConfigError
from sylkpush.http_pool import connection_pool
from sylkpush.pns.base import OutgoingPush, PushResult
from sylkpush.pns.engine import DeliveryClient, parse_retry_after
from sylkpush.pns.pending import PendingPush

log = logging.getLogger("sylkpush.pns.mypns")

#: seconds one attempt may wait for its answer
ATTEMPT_TIMEOUT = 30.0


class MypnsClient(DeliveryClient):
    """One client per application with ``app_platform = mypns``."""

    platform = "mypns"
    name = "mypns"
    #: requests on the wire at once; more wait in the engine's queue
    max_in_flight = 100

    def __init__(self, app: Any, reactor: Any) -> None:
        super().__init__(app, reactor)
        self.url = app.option("mypns_url")
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError("mypns_url must be an http(s) URL")
        # a persistent pool whose connections do not log "Starting factory" each
        self.pool = connection_pool(reactor, per_host=self.max_in_flight)
        self.http = HTTPClient(Agent(reactor, pool=self.pool))
        self.requests = 0

    @property
    def peer(self) -> str:
        return self.url

    def push_url(self, push: OutgoingPush) -> str:
        return self.url

    def capacity(self) -> int:
        return self.max_in_flight - self.requests

    def attempt(self, pending: PendingPush) -> None:
        push = pending.push
        body = json.dumps({"token": push.token, "headers": push.headers, "payload": push.payload})
        log.info("%s: outgoing push to %s (try %d)", push.request_id, self.url, pending.attempts)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: outgoing body %s", push.request_id, body)
        self.requests += 1
        pending.written = True
        posting = self.http.post(self.url, data=body.encode("utf-8"), headers={b"content-type": [b"application/json"]},
                                 timeout=min(ATTEMPT_TIMEOUT, max(0.1, pending.time_left())))
        posting.addCallback(self._answered, pending)
        posting.addErrback(self._failed, pending)
        posting.addBoth(self._attempt_done)

    def _answered(self, response: Any, pending: PendingPush) -> Any:
        def result(content: bytes) -> None:
            try:
                parsed = json.loads(content) if content else {}
            except ValueError:
                parsed = {}
            parsed = parsed if isinstance(parsed, dict) else {}
            reason = str(parsed.get("reason") or response.phrase.decode("latin-1"))
            if 200 <= response.code < 300:
                self.finish(pending, PushResult(200, reason or "OK", self.url, parsed))
            elif response.code in (404, 410):
                self.finish(pending, PushResult(410, reason, self.url, parsed))
            elif response.code == 429 or response.code >= 500:
                wait = parse_retry_after(response.headers.getRawHeaders(b"retry-after", [None])[0], time.time())
                self.retry(pending, f"push service answered {response.code} {reason}", retry_after=wait)
            else:
                self.finish(pending, PushResult(response.code, reason, self.url, parsed))
        return response.content().addCallback(result)

    def _failed(self, failure: Any, pending: PendingPush) -> None:
        reason = f"push service unreachable: {failure.getErrorMessage()}"
        log.warning("%s: push to %s failed: %s", pending.push.request_id, self.url, failure.getErrorMessage())
        if failure.check(ConnectError, DNSLookupError):
            self.not_processed(pending, reason, backoff=True)  # never reached the service
        else:
            self.unknown(pending, reason, backoff=True)

    def _attempt_done(self, _: Any) -> None:
        self.requests -= 1
        self.pump()

    def close(self) -> Any:
        return self.pool.closeCachedConnections()

    def connection_status(self) -> Dict[str, Any]:
        # the engine adds the state while stopping or failing, the counts and the record of results
        return dict(super().connection_status(), url=self.url)
