"""The HTTP API (docs/api.md): Twisted resources that speak JSON only.

Every answer, errors included, is ``{"code", "description", "data"}`` with
the HTTP status equal to ``code``; no path leads to Twisted's HTML pages or a
traceback.  Each request is answered exactly once, even when the client has
gone away meanwhile.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web import resource, server

from sylkpush import __version__
from sylkpush.api_keys import ApiKeys
from sylkpush.dispatch import Answer, ApiError, Dispatcher, exc_info_of
from sylkpush.http11 import MAX_BODY, Site, envelope

log = logging.getLogger(__name__)

#: the deepest nesting of arrays and objects a body may have (a wake-up is flat)
MAX_DEPTH = 16
#: a call-id in a body that is not (or not all) read as JSON, for the refusal's log line
_CALL_ID = re.compile(rb'"call-id"\s{0,16}:\s{0,16}"([^"\\\x00-\x1f]{1,256})"')


class BodyError(ValueError):
    """A request body that is not a usable JSON document; the message says why."""


def _unique_keys(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise BodyError(f"request body has the key {key!r} more than once")
            seen.add(key)
    return result


def _deeper_than(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


#: one decoder for all bodies: json.loads with a hook would build a new one each time
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)


def decode_json(raw: bytes) -> Any:
    """The JSON document ``raw``; :class:`BodyError` when it is not valid JSON,
    has a key twice (which one counts differs between parsers) or is nested
    deeper than :data:`MAX_DEPTH`."""
    try:
        # as json.loads reads bytes: UTF-8, -16 or -32, with or without a BOM
        value = _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except BodyError:
        raise
    except RecursionError:
        raise BodyError(f"request body is nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BodyError(f"request body is not valid JSON: {exc}") from None
    # cheap first: a body with few brackets cannot be deep
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _deeper_than(value, MAX_DEPTH):
        raise BodyError(f"request body is nested deeper than {MAX_DEPTH} levels")
    return value


def unsupported_content_type(request: server.Request) -> Optional[str]:
    """The request's content type when it is not JSON, else None.

    ``application/json`` and ``+json`` types are JSON; so is no content type
    at all, for old callers.  Refusing the rest keeps a web page in a browser
    on an allowed host from pushing with a cross-site form or text/plain POST.
    """
    value = request.getHeader(b"content-type")
    if value is None:
        return None
    media = value.split(b";", 1)[0].strip().lower()
    if not media or media == b"application/json" or (media.endswith(b"+json") and b"/" in media):
        return None
    return media.decode("latin-1")


def sniff_call_id(raw: bytes) -> Optional[str]:
    """The call-id of a body that could not be read whole, for the log."""
    found = _CALL_ID.search(raw)
    return found.group(1).decode("utf-8", "replace") if found else None


#: the ``data`` of an answer: an object, or a list (the v2 API's per-device results)
AnswerData = Optional[Union[Dict[str, Any], List[Any]]]


def write_json(request: server.Request, code: int, description: str,
               data: AnswerData = None, extra: Optional[Dict[str, Any]] = None) -> bytes:
    """Set status and headers of ``request``; the JSON body to return."""
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return envelope(code, description, data, extra)


class JsonResource(resource.Resource):
    """A leaf whose 404/405 answers are JSON too."""

    isLeaf = True

    def render(self, request: server.Request) -> Any:
        # twisted.web's HEAD falls back to a GET the resource may not have
        if request.method == b"HEAD" and not hasattr(self, "render_GET"):
            return self._not_allowed(request)
        try:
            return super().render(request)
        except server.UnsupportedMethod:
            return self._not_allowed(request)

    def _not_allowed(self, request: server.Request) -> bytes:
        methods = [name[len("render_"):] for name in dir(self)
                   if name.startswith("render_") and (name != "render_HEAD" or hasattr(self, "render_GET"))]
        request.setHeader(b"allow", ", ".join(methods).encode("ascii"))
        method = request.method.decode("ascii", "replace")
        return write_json(request, 405, f"method {method} is not allowed on this path")


class NotFound(JsonResource):
    def render(self, request: server.Request) -> bytes:
        return write_json(request, 404, "no such resource")


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
    host = getattr(address, "host", None)
    return host if host is not None else str(address)


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
        #: every caller still waiting, by request
        self.waiting: Dict[server.Request, "_Waiter"] = {}

    def answer_waiting(self, code: int, description: str) -> int:
        """Answer every caller still waiting with ``code``; how many there were."""
        waiting, self.waiting = self.waiting, {}
        for waiter in waiting.values():
            waiter.answer(Answer(code, description, {}))
        return len(waiting)

    def _refuse(self, request: server.Request, code: int, description: str,
                data: AnswerData = None, call_id: Optional[str] = None) -> bytes:
        """Answer ``code`` without a push; one log line says who, to where and why."""
        path = getattr(request, "path", None) or request.uri  # test doubles may lack a path
        who = f"{caller(request)} to {path.decode('utf-8', 'replace')}"
        if call_id:
            log.info("refused request from %s (call-id %s): %s %s", who, call_id, code, description)
        else:
            log.info("refused request from %s: %s %s", who, code, description)
        self.dispatcher.refused(code)
        return write_json(request, code, description, data)

    def refuse(self, request: server.Request, error: ApiError, body: Any = None) -> bytes:
        """:meth:`_refuse` for ``error``, with the call-id of ``body`` when it has one."""
        call_id = error.call_id
        if call_id is None and isinstance(body, dict) and isinstance(body.get("call-id"), str):
            call_id = body["call-id"]
        return self._refuse(request, error.code, error.description, error.data, call_id)

    def read_body(self, request: server.Request) -> Any:
        """The request's decoded JSON body; ApiError when there is none to use."""
        if self.closing:
            raise ApiError(503, "the server is shutting down")
        media = unsupported_content_type(request)
        if media is not None:
            raise ApiError(415, f"content type {media} is not accepted: send application/json")
        if getattr(request, "body_too_large", False):
            raise ApiError(413, f"request body is larger than {MAX_BODY} bytes",
                           call_id=sniff_call_id(getattr(request, "head", b"")))
        raw = request.content.read()  # type: ignore[attr-defined]  # Twisted declares it None
        request.content = None  # read: not held while the push waits for its answer
        try:
            return decode_json(raw)
        except BodyError as exc:
            raise ApiError(400, str(exc), call_id=sniff_call_id(raw)) from None

    def answer_later(self, request: server.Request, work: "Deferred[Answer]", request_id: str) -> Any:
        """Answer ``request`` when ``work`` fires (for :meth:`render`)."""
        waiter = _Waiter(self, request, request_id)
        if not work.called:
            self.waiting[request] = waiter
            release = getattr(request, "waiting", None)  # an HttpRequest (not a test double)
            if release is not None:
                release()
        work.addBoth(waiter)
        return server.NOT_DONE_YET

    @staticmethod
    def _unexpected(failure: Failure, request_id: str) -> None:
        log.error("%s: unexpected error", request_id, exc_info=exc_info_of(failure))


class _Waiter:
    """A caller waiting for its answer: one small object (thousands wait
    during an outage) rather than closures, bound methods and a Deferred of
    notifyFinish."""

    __slots__ = ("resource", "request", "request_id")

    def __init__(self, resource: AnsweringResource, request: server.Request, request_id: str) -> None:
        self.resource = resource
        self.request = request
        self.request_id = request_id

    def answer(self, result: Answer) -> None:
        request = self.request
        self.resource.waiting.pop(request, None)
        if request.finished:  # answered at the drain deadline already
            return
        if getattr(request, "_disconnected", False):  # twisted.web's mark of a caller gone (not in test doubles)
            log.info("%s: caller went away before the answer %s", self.request_id, result.code)
            return
        request.write(write_json(request, result.code, result.description, result.data))
        request.finish()

    def __call__(self, outcome: Union[Answer, Failure]) -> None:
        """The work's result or failure (itself the Deferred's callback: no bound methods held)."""
        if isinstance(outcome, Failure):
            self.resource._unexpected(outcome, self.request_id)
            outcome = Answer(500, "internal server error", {})
        self.answer(outcome)


class PushResource(AnsweringResource):
    """``POST /push``: one wake-up request in, one push result out."""

    def __init__(self, dispatcher: Dispatcher, return_async: Callable[[], bool]) -> None:
        super().__init__(dispatcher)
        self.return_async = return_async

    def render_POST(self, request: server.Request) -> Any:
        body = None
        try:
            body = self.read_body(request)
            prepared = self.dispatcher.prepare(body, caller(request))
        except ApiError as exc:
            return self.refuse(request, exc, body)
        delivery = self.dispatcher.deliver(prepared)
        if not self.return_async():
            delivery.addErrback(self._unexpected, prepared.request_id)
            return write_json(request, 202, "accepted for delivery")
        return self.answer_later(request, delivery, prepared.request_id)


class Root(resource.Resource):
    """Routes by path, and applies the API keys (when configured) to the
    paths that push or store.  (Callers outside ``allowed_hosts`` never get
    here: their connections are refused as they are accepted.)"""

    #: the paths that need an API key when keys are configured
    protected = frozenset({b"push", b"v2"})

    def __init__(self, keys: Optional[ApiKeys] = None) -> None:
        super().__init__()
        self.keys = keys
        self.welcome = Welcome()

    def getChildWithDefault(self, path: bytes, request: server.Request) -> resource.IResource:
        if self.keys is not None and path in self.protected:
            name = self.keys.authenticate(request.getHeader(b"authorization"))
            if name is None:
                log.info("refused request from %s to /%s: 401 no valid API key", client_address(request),
                         path.decode("ascii", "replace"))
                return Unauthorized()
            setattr(request, "api_key_name", name)  # for the log lines: see caller()
        if path == b"" and not request.postpath:
            return self.welcome
        child = self.children.get(path)
        if child is None or (request.postpath and child.isLeaf and request.postpath != [b""]):
            return NotFound()
        return child


def make_site(dispatcher: Dispatcher, return_async: Callable[[], bool] = lambda: True,
              keys: Optional[ApiKeys] = None) -> Site:
    """The API's Site: /, /push; more routes are added with ``site.resource.putChild``."""
    root = Root(keys)
    root.putChild(b"push", PushResource(dispatcher, return_async))
    return Site(root)
