"""The v2 HTTP API: ``/v2/tokens/{account}`` and ``/v2/tokens/{account}/push[/{device-id}]``.

Routes, bodies and answers are the original server's, in this server's JSON
envelope: ``POST /v2/tokens/{account}`` stores a device, ``DELETE`` removes
one, ``POST .../push`` pushes to every device of the account (or to the one
named) and answers with the list of their push results.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, List, Optional

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.web import resource, server

from sylkpush.dispatch import Answer, ApiError, Dispatcher
from sylkpush.http11 import Site
from sylkpush.tokens import StorageError, TokenStore
from sylkpush.v2.account_push import AccountPusher, storage_answer
from sylkpush.v2.metrics import TokenMetrics
from sylkpush.v2.registration import (parse_account, parse_device_segment, parse_registration, parse_removal,
                                      registration_data)
from sylkpush.web import AnsweringResource, NotFound, caller, write_json

log = logging.getLogger(__name__)


class TokensResource(AnsweringResource):
    """``/v2/tokens/...``: everything below is routed here by its path segments."""

    isLeaf = True

    def __init__(self, store: TokenStore, dispatcher: Dispatcher, return_async: Callable[[], bool],
                 metrics: TokenMetrics) -> None:
        super().__init__(dispatcher)
        self.store = store
        self.return_async = return_async
        self.metrics = metrics
        self.pusher = AccountPusher(store, dispatcher, metrics)

    def render(self, request: server.Request) -> Any:
        path: List[bytes] = list(request.postpath or [])
        if path and path[-1] == b"" and len(path) > 1:  # a trailing slash
            path.pop()
        if len(path) == 1 and path[0]:
            allowed = {b"POST": self.register, b"DELETE": self.remove}
        elif len(path) in (2, 3) and path[0] and path[1] == b"push" and (len(path) == 2 or path[2]):
            allowed = {b"POST": self.push}
        else:
            return NotFound().render(request)
        handler = allowed.get(request.method)
        if handler is None:
            request.setHeader(b"allow", b", ".join(sorted(allowed)))
            method = request.method.decode("ascii", "replace")
            return write_json(request, 405, f"method {method} is not allowed on this path")
        body = None
        try:
            username, domain = parse_account(path[0])
            body = self.read_body(request)
            return handler(request, username, domain, body, path[2:])
        except ApiError as exc:
            return self.refuse(request, exc, body)

    def register(self, request: server.Request, username: str, domain: str, body: Any, rest: List[bytes]) -> Any:
        device = parse_registration(body, username, domain, self.dispatcher)
        request_id = f"{device.account}-{device.app_id}-{device.device_id}"
        log.info("%s: registration from %s: %s token %s%s silent %s user agent %s", request_id, caller(request),
                 device.platform, device.device_token,
                 f" background token {device.background_token}" if device.background_token else "",
                 device.silent, device.user_agent or "-")

        async def store() -> Answer:
            try:
                await self.store.store(device)
            except StorageError as exc:
                log.error("%s: storing failed: %s", request_id, exc)
                return storage_answer(exc)
            self.metrics.registered()
            log.info("%s: stored", request_id)
            return Answer(200, "push token stored", registration_data(device))
        # stored before the answer, even with return_async = false: a 200 means stored
        return self.answer_later(request, ensureDeferred(store()), request_id)

    def remove(self, request: server.Request, username: str, domain: str, body: Any, rest: List[bytes]) -> Any:
        removal = parse_removal(body)
        account = f"{username}@{domain}"
        request_id = f"{account}-{removal.app_id}-{removal.device_id}"

        async def remove() -> Answer:
            try:
                removed = await self.store.remove(username, domain, removal.app_id, removal.device_id)
            except StorageError as exc:
                log.error("%s: removing failed: %s", request_id, exc)
                return storage_answer(exc)
            if not removed:
                log.info("%s: removal from %s: no such device", request_id, caller(request))
                return Answer(404, "Push token not found", dict(removal.data(), account=account))
            self.metrics.removed("caller")
            log.info("%s: removed by %s", request_id, caller(request))
            return Answer(200, "push token removed", removal.data())
        return self.answer_later(request, ensureDeferred(remove()), request_id)

    def push(self, request: server.Request, username: str, domain: str, body: Any, rest: List[bytes]) -> Any:
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        device_id: Optional[str] = parse_device_segment(rest[0]) if rest else None
        account = f"{username}@{domain}"
        request_id = self.pusher.request_id(body, account)
        work: Deferred = ensureDeferred(self.pusher.push(username, domain, device_id, body, caller(request)))
        if not self.return_async():
            work.addErrback(self._unexpected, request_id)
            return write_json(request, 202, "accepted for delivery")
        return self.answer_later(request, work, request_id)


class V2Root(resource.Resource):
    """``/v2``: only ``tokens`` below it."""

    def __init__(self, tokens: TokensResource) -> None:
        super().__init__()
        self.tokens = tokens

    def getChild(self, path: bytes, request: server.Request) -> resource.IResource:
        return self.tokens if path == b"tokens" else NotFound()

    def render(self, request: server.Request) -> bytes:
        return NotFound().render(request)


def mount(site: Site, store: TokenStore, dispatcher: Dispatcher, return_async: Callable[[], bool],
          metrics: TokenMetrics) -> TokensResource:
    """Add ``/v2`` to the API's Site; the resource that answers its requests."""
    tokens = TokensResource(store, dispatcher, return_async, metrics)
    site.resource.putChild(b"v2", V2Root(tokens))
    return tokens
