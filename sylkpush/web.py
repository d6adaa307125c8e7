"""The HTTP API (SPEC §4): Twisted resources that speak JSON only.

Every answer, errors included, is ``{"code", "description", "data"}`` with
the HTTP status equal to ``code``; no path leads to Twisted's HTML pages or a
traceback.  Each request is answered exactly once, even when the client has
gone away meanwhile.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from twisted.web import http, resource, server

from sylkpush import __version__
from sylkpush.api_keys import ApiKeys
from sylkpush.dispatch import Answer, ApiError, Dispatcher

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024


def write_json(request: server.Request, code: int, description: str,
               data: Optional[Union[Dict[str, Any], List[Any]]] = None,
               extra: Optional[Dict[str, Any]] = None) -> bytes:
    """Set status and headers of ``request``; the JSON body to return
    (``extra``: more keys beside code, description and data)."""
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps({"code": code, "description": description, "data": data or {}, **(extra or {})}).encode("utf-8")


class ApiRequest(server.Request):
    """A Request that stops buffering a body past :data:`MAX_BODY` and
    answers internal errors with JSON instead of an HTML traceback."""

    body_too_large = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # bodies are JSON: skip Twisted's form parsing, which parses every
        # request's content-type with the email package (costly, hot path)
        self._parsePOSTFormSubmission = False

    def gotLength(self, length: Optional[int]) -> None:
        if length is not None and length > MAX_BODY:
            self.body_too_large = True
            length = 0  # keep an empty in-memory buffer
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.body_too_large:
            return
        if self.content.tell() + len(data) > MAX_BODY:  # chunked bodies have no length
            self.body_too_large = True
            self.content.seek(0)
            self.content.truncate()
            return
        super().handleContentChunk(data)

    def processingFailed(self, reason: Failure) -> None:
        log.error("unhandled error answering %s %s: %s", self.method, self.uri,
                  reason.getTraceback())
        if self.finished or self._disconnected:
            return
        body = write_json(self, 500, "internal server error")
        self.setHeader(b"content-length", str(len(body)).encode("ascii"))
        self.write(body)
        self.finish()


class JsonResource(resource.Resource):
    """A leaf whose 404/405 answers are JSON too."""

    isLeaf = True

    def render(self, request: server.Request) -> Any:
        try:
            return super().render(request)
        except server.UnsupportedMethod as exc:
            request.setHeader(b"allow", b", ".join(exc.allowedMethods))
            method = request.method.decode("ascii", "replace")
            return write_json(request, 405, f"method {method} is not allowed on this path")


class NotFound(JsonResource):
    def render(self, request: server.Request) -> bytes:
        return write_json(request, 404, "no such resource")


class Forbidden(JsonResource):
    def render(self, request: server.Request) -> bytes:
        return write_json(request, 403, "access denied by access list")


class Unauthorized(JsonResource):
    def render(self, request: server.Request) -> bytes:
        request.setHeader(b"www-authenticate", b'Bearer realm="sylk-pushserver"')
        return write_json(request, 401, "authorization required")


class Welcome(JsonResource):
    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return f"Sylk Pushserver {__version__}: POST wake-up requests to /push\n".encode("utf-8")


def client_address(request: server.Request) -> str:
    address = request.getClientAddress()
    return getattr(address, "host", str(address))


def caller(request: server.Request) -> str:
    """Who sent ``request``, for the logs: its address, and the name of its API key."""
    name = getattr(request, "api_key_name", None)
    return f"{client_address(request)} key {name}" if name else client_address(request)


class AnsweringResource(JsonResource):
    """A leaf that answers once the work of a request is done.

    New requests are refused 503 while the server shuts down
    (:attr:`closing`), and the callers still waiting at the drain deadline
    can all be answered at once (:meth:`answer_waiting`).
    """

    def __init__(self, dispatcher: Dispatcher) -> None:
        super().__init__()
        self.dispatcher = dispatcher
        #: set when the server shuts down: new requests are answered 503
        self.closing = False
        #: the answer function of every caller still waiting, by request
        self.waiting: Dict[server.Request, Callable[[Answer], None]] = {}

    def answer_waiting(self, code: int, description: str) -> int:
        """Answer every caller still waiting with ``code``; how many there were."""
        waiting, self.waiting = self.waiting, {}
        for answer in waiting.values():
            answer(Answer(code, description, {}))
        return len(waiting)

    def _refuse(self, request: server.Request, code: int, description: str,
                data: Optional[Dict[str, Any]] = None) -> bytes:
        self.dispatcher.refused(code)
        return write_json(request, code, description, data)

    def read_body(self, request: server.Request) -> Any:
        """The request's decoded JSON body; ApiError when there is none to use."""
        if self.closing:
            raise ApiError(503, "the server is shutting down")
        if getattr(request, "body_too_large", False):
            raise ApiError(413, f"request body is larger than {MAX_BODY} bytes")
        raw = request.content.read()
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"request body is not valid JSON: {exc}") from None

    def answer_later(self, request: server.Request, work: "Deferred[Answer]", request_id: str) -> Any:
        """Answer ``request`` when ``work`` fires (for :meth:`render`)."""
        gone = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def answer(result: Answer) -> None:
            self.waiting.pop(request, None)
            if request.finished:  # answered at the drain deadline already
                return
            if gone:
                log.info("%s: caller went away before the answer %s", request_id, result.code)
                return
            request.write(write_json(request, result.code, result.description, result.data))
            request.finish()

        def failed(failure: Failure) -> None:
            self._unexpected(failure, request_id)
            answer(Answer(500, "internal server error", {}))

        if not work.called:
            self.waiting[request] = answer
        work.addCallbacks(answer, failed)
        return server.NOT_DONE_YET

    @staticmethod
    def _unexpected(failure: Failure, request_id: str) -> None:
        log.error("%s: unexpected error: %s", request_id, failure.getTraceback())


class PushResource(AnsweringResource):
    """``POST /push``: one wake-up request in, one push result out."""

    def __init__(self, dispatcher: Dispatcher, return_async: Callable[[], bool]) -> None:
        super().__init__(dispatcher)
        self.return_async = return_async

    def render_POST(self, request: server.Request) -> Any:
        try:
            body = self.read_body(request)
        except ApiError as exc:
            return self._refuse(request, exc.code, exc.description, exc.data)
        address = caller(request)
        try:
            prepared = self.dispatcher.prepare(body, address)
        except ApiError as exc:
            log.info("refused request from %s: %s %s", address, exc.code, exc.description)
            return self._refuse(request, exc.code, exc.description, exc.data)
        delivery = ensureDeferred(self.dispatcher.deliver(prepared))
        if not self.return_async():
            delivery.addErrback(self._unexpected, prepared.request_id)
            return write_json(request, 202, "accepted for delivery")
        return self.answer_later(request, delivery, prepared.request_id)


class Root(resource.Resource):
    """Routes by path and applies ``allowed_hosts`` before anything else,
    then the API keys (when configured) to the paths that push or store."""

    #: the paths that need an API key when keys are configured
    protected = frozenset({b"push", b"v2"})

    def __init__(self, allowed: Sequence[Any] = (), keys: Optional[ApiKeys] = None) -> None:
        super().__init__()
        self.allowed = tuple(allowed)
        self.keys = keys
        self.welcome = Welcome()

    def getChildWithDefault(self, path: bytes, request: server.Request) -> resource.IResource:
        if self.allowed and not self._allowed(client_address(request)):
            return Forbidden()
        if path == b"" and not request.postpath:
            return self.welcome
        child = self.children.get(path)
        if child is None or (request.postpath and child.isLeaf and request.postpath != [b""]):
            return NotFound()
        if self.keys is not None and path in self.protected:
            name = self.keys.authenticate(request.getHeader(b"authorization"))
            if name is None:
                log.info("refused request from %s to /%s: 401 no valid API key", client_address(request),
                         path.decode("ascii", "replace"))
                return Unauthorized()
            request.api_key_name = name
        return child

    def _allowed(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False
        if getattr(address, "ipv4_mapped", None):
            address = address.ipv4_mapped
        return any(address in network for network in self.allowed)


class ApiSite(server.Site):
    """A Site whose access log goes to the ``sylkpush.web.access`` logger at
    DEBUG, and costs nothing unless that level is enabled: the request-id lines
    of the dispatcher already say who asked what and what they got, and
    Twisted's per-request access line (formatted and written for every
    request) is measurable work on the hot path."""

    access_log = logging.getLogger(__name__ + ".access")

    def log(self, request: server.Request) -> None:
        if self.access_log.isEnabledFor(logging.DEBUG):
            stamp = self._logDateTime or http.datetimeToLogString()
            self.access_log.debug("%s", self._logFormatter(stamp, request).rstrip())


class ConnectionTracker(WrappingFactory):
    """Wraps the Site to know its open connections, so a shutdown can close
    them after their last answer is flushed (the reactor's own shutdown drops
    whatever is still in the write buffers)."""

    def __init__(self, site: server.Site) -> None:
        super().__init__(site)
        self._closed: List[Deferred] = []

    def unregisterProtocol(self, p: Any) -> None:
        super().unregisterProtocol(p)
        if not self.protocols:
            waiters, self._closed = self._closed, []
            for waiter in waiters:
                waiter.callback(None)

    def close_all(self) -> "Deferred[None]":
        """Close every connection once its pending output is written; fires when all are gone."""
        if not self.protocols:
            return succeed(None)
        waiter: Deferred = Deferred()
        self._closed.append(waiter)
        for wrapper in list(self.protocols):
            wrapper.transport.loseConnection()
        return waiter


def make_site(dispatcher: Dispatcher, allowed: Sequence[Any] = (),
              return_async: Callable[[], bool] = lambda: True, keys: Optional[ApiKeys] = None) -> server.Site:
    """The API's Site: /, /push; more routes are added with ``site.resource.putChild``."""
    root = Root(allowed, keys)
    root.putChild(b"push", PushResource(dispatcher, return_async))
    site = ApiSite(root)
    site.requestFactory = ApiRequest
    site.displayTracebacks = False
    site.noisy = False
    return site
