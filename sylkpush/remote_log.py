"""Remote HTTP logging of push results (``log_remote_urls``).

A dispatcher observer: after each push of an application that has
``log_remote_urls``, one JSON POST goes to every URL, concurrently, fire and
forget.  The caller's answer never waits for them and never changes because
of them; a slow or dead URL costs a log line.  Requests in flight are capped
(:data:`MAX_CONCURRENT`); beyond the cap a record is dropped and counted, so a
logging endpoint that stops answering cannot pile up memory.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Union

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.client import Agent

from sylkpush.dispatch import PreparedPush
from sylkpush.http_pool import connection_pool
from sylkpush.pns.base import PushResult

log = logging.getLogger(__name__)

#: remote-log requests allowed in flight at once, over all URLs
MAX_CONCURRENT = 100
#: headers that carry credentials; never sent (renderers do not produce them,
#: but a custom renderer might)
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


def remote_record(prepared: PreparedPush, result: PushResult, server_ip: str,
                  now: Optional[float] = None) -> Dict[str, Any]:
    """The JSON document posted for one push."""
    headers = {name: value for name, value in prepared.push.headers.items()
               if name.lower() not in SECRET_HEADERS}
    stamp = datetime.fromtimestamp(time.time() if now is None else now, timezone.utc)
    return {
        "request": prepared.notification.raw,
        "response": {
            "code": result.code,
            "description": result.reason,
            "push_url": result.url,
            # what came back from the push service
            "incoming_body": result.body if isinstance(result.body, dict) else {},
            "outgoing_headers": headers,
            "outgoing_body": prepared.push.payload,
        },
        "server_ip": server_ip,
        "timestamp": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


class RemoteLogger:
    """Posts push results to the applications' remote logging URLs."""

    def __init__(self, reactor: Any, server_ip: str = "", max_concurrent: int = MAX_CONCURRENT,
                 debug: bool = False) -> None:
        import treq.client  # imported here: treq pulls in much, and most servers log nothing remotely
        self.reactor = reactor
        self.server_ip = server_ip
        self.max_concurrent = max_concurrent
        self.debug = debug
        self.pool = connection_pool(reactor, per_host=4)
        self.http = treq.client.HTTPClient(Agent(reactor, pool=self.pool))
        self.in_flight = 0
        self.dropped = 0
        self.sent = 0
        self.failed = 0
        self._pending: Dict[int, Deferred] = {}

    def observe(self, prepared: PreparedPush, result: PushResult) -> None:
        """Dispatcher observer; returns at once."""
        config = prepared.app.config
        if not config.log_remote_urls:
            return
        body = None
        for url in config.log_remote_urls:
            if self.in_flight >= self.max_concurrent:
                self.dropped += 1
                log.warning("%s: remote log to %s dropped: %d remote-log requests in flight (%d dropped so far)",
                            prepared.request_id, url, self.in_flight, self.dropped)
                continue
            if body is None:
                body = json.dumps(remote_record(prepared, result, self.server_ip)).encode("utf-8")
            self._post(url, body, prepared.request_id, config.log_remote_timeout, config.log_remote_key)

    def _post(self, url: str, body: bytes, request_id: str, timeout: float, key: str) -> None:
        self.in_flight += 1
        try:
            headers: Dict[Union[bytes, str], List[Union[bytes, str]]] = {b"content-type": [b"application/json"]}
            posting = self.http.post(url, data=body, timeout=timeout, headers=headers)
        except Exception as exc:  # a malformed URL fails here, synchronously
            self.in_flight -= 1
            self.failed += 1
            log.warning("%s: remote log to %s failed: %s", request_id, url, exc)
            return
        posting.addCallback(self._answered, url, request_id, key)
        posting.addErrback(self._failed, url, request_id, timeout)
        posting.addBoth(self._done, id(posting))
        if not posting.called:
            self._pending[id(posting)] = posting

    def _answered(self, response: Any, url: str, request_id: str, key: str) -> Deferred:
        def logged(content: bytes) -> None:
            self.sent += 1
            if key:
                try:
                    value = json.loads(content).get(key)
                except (ValueError, AttributeError):
                    value = None
                log.info("%s: remote log %s answered %s, %s = %s", request_id, url, response.code, key, value)
            elif self.debug:
                log.info("%s: remote log %s answered %s %s", request_id, url, response.code,
                         content.decode("utf-8", "replace"))
            else:
                log.info("%s: remote log %s answered %s", request_id, url, response.code)
        return response.content().addCallback(logged)

    def _failed(self, failure: Failure, url: str, request_id: str, timeout: float) -> None:
        self.failed += 1
        from twisted.internet.defer import CancelledError
        from twisted.web.client import ResponseNeverReceived
        if failure.check(CancelledError) or (failure.check(ResponseNeverReceived) and any(
                isinstance(reason.value, CancelledError) for reason in failure.value.reasons)):
            why = f"no answer within {timeout:g} s"
        else:
            why = failure.getErrorMessage() or failure.type.__name__
        log.warning("%s: remote log to %s failed: %s", request_id, url, why)

    def _done(self, _: Any, key: int) -> None:
        self.in_flight -= 1
        self._pending.pop(key, None)

    def stop(self) -> Deferred:
        """Cancel what is still in flight and close the pooled connections."""
        for posting in list(self._pending.values()):
            posting.cancel()
        return self.pool.closeCachedConnections()
