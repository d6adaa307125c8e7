"""A push to an account: one v1 push to each of its stored devices, all at once.

Each device's push is the v2 request's fields plus the device's ``app-id``,
``platform``, ``token`` (its background token for cancels and messages, when
it has one), ``device-id`` and ``silent``, validated, rendered and sent by the
dispatcher exactly as a ``/push`` would be.  A device whose push ends in 410
is removed from the store (unless it registered another token meanwhile).
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from twisted.internet.defer import DeferredList

from sylkpush.dispatch import Answer, ApiError, Dispatcher, PreparedPush
from sylkpush.tokens import Device, StorageError, StorageUnavailable, TokenStore
from sylkpush.v2.metrics import TokenMetrics
from sylkpush.v2.registration import token_for

log = logging.getLogger(__name__)

#: what a DeferredList gives for each Deferred: (True, its result) or
#: (False, its Failure); Twisted's annotation leaves the Failure out
Outcomes = Sequence[Tuple[bool, Any]]


def device_fields(device: Device, token: str) -> Dict[str, Any]:
    """The fields of a /push request that a stored device supplies."""
    return {"app-id": device.app_id, "platform": device.platform, "token": token,
            "device-id": device.device_id, "silent": device.silent}


def storage_answer(error: StorageError) -> Answer:
    """What a caller hears when the store failed: 503 when it may work later, else 500."""
    if isinstance(error, StorageUnavailable):
        return Answer(503, f"token storage unavailable: {error}", {})
    return Answer(500, "internal error: token storage", {})


def _refused_result(device: Device, body: Mapping[str, Any], token: str, error: ApiError) -> Dict[str, Any]:
    """A device the request could not be pushed to, in the shape of a push result."""
    call_id = body.get("call-id")
    return {"code": error.code, "reason": error.description, "url": "", "platform": device.platform,
            "call_id": call_id if isinstance(call_id, str) else None, "token": token, "body": {}}


class AccountPusher:
    """Pushes to the devices of an account through ``dispatcher``."""

    def __init__(self, store: TokenStore, dispatcher: Dispatcher, metrics: TokenMetrics) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.metrics = metrics

    @staticmethod
    def request_id(body: Mapping[str, Any], account: str) -> str:
        """``<event>-<account>-<call-id>``: tags every log line about the request."""
        return f"{body.get('event') or 'incoming_session'}-{account}-{body.get('call-id')}"

    async def push(self, username: str, domain: str, device_id: Optional[str], body: Mapping[str, Any],
                   caller: str) -> Answer:
        """Push ``body`` to the account's devices (only ``device_id``'s when given)."""
        account = f"{username}@{domain}"
        request_id = self.request_id(body, account)
        try:
            devices = await self.store.devices(username, domain, device_id)
        except StorageError as exc:
            log.error("%s: reading the devices failed: %s", request_id, exc)
            return storage_answer(exc)
        if not devices:
            self.dispatcher.refused(404)
            if device_id is None:
                log.info("%s: refused request from %s: %s has no device", request_id, caller, account)
                return Answer(404, "Push request was not sent: user not found", {"account": account})
            log.info("%s: refused request from %s: %s has no device %s", request_id, caller, account, device_id)
            return Answer(404, "Push request was not sent: device not found", {"device_id": device_id})

        # every device is prepared first, then all are sent at once
        outcomes: List[Union[PreparedPush, Dict[str, Any]]] = []
        first_refusal: Optional[ApiError] = None
        for device in devices:
            token = token_for(device, body.get("event"))
            v1 = dict(body, **device_fields(device, token))
            try:
                outcomes.append(self.dispatcher.prepare(v1, caller, request_id))
            except ApiError as exc:
                log.info("%s: device %s (%s) refused: %s %s", request_id, device.device_id, device.app_id,
                         exc.code, exc.description)
                first_refusal = first_refusal or exc
                outcomes.append(_refused_result(device, body, token, exc))
        prepared = [o for o in outcomes if isinstance(o, PreparedPush)]
        if first_refusal is not None and not prepared:
            # the request suits none of the devices: answered as /push would answer it
            self.dispatcher.refused(first_refusal.code)
            return Answer(first_refusal.code, first_refusal.description, first_refusal.data)

        sent: Outcomes = await DeferredList([self.dispatcher.deliver(p) for p in prepared],
                                            consumeErrors=True)
        answers = iter(sent)
        results: List[Dict[str, Any]] = []
        expired: List[Device] = []
        for device, outcome in zip(devices, outcomes):
            if isinstance(outcome, dict):
                results.append(outcome)
                continue
            ok, answer = next(answers)
            if not ok:
                log.error("%s: pushing to device %s failed: %s", request_id, device.device_id,
                          answer.getTraceback())
                error = ApiError(500, "internal server error")
                answer = Answer(500, error.description, _refused_result(device, body, outcome.push.token, error))
            results.append(answer.data)
            self.metrics.pushed(answer.code)
            if answer.code == 410:
                expired.append(device)
        removed = await self._remove_expired(request_id, expired)
        log.info("%s: %s", request_id, ", ".join(
            f"{d.device_id} ({d.app_id}) {r['code']}{' removed' if d in removed else ''}"
            for d, r in zip(devices, results)))
        return Answer(self.answer_code(results), "push notification responses", results)

    @staticmethod
    def answer_code(results: List[Dict[str, Any]]) -> int:
        """200 when a device was reached (or told us to forget it), else the
        first device's code: with one device, what a v1 push would answer."""
        if any(result["code"] in (200, 410) for result in results):
            return 200
        return results[0]["code"]

    async def _remove_expired(self, request_id: str, devices: List[Device]) -> List[Device]:
        """Remove the devices whose token is gone; those removed."""
        if not devices:
            return []
        done: Outcomes = await DeferredList([self.store.remove_expired(d) for d in devices], consumeErrors=True)
        removed = []
        for device, (ok, result) in zip(devices, done):
            if not ok:
                log.error("%s: removing device %s of %s after 410 failed: %s", request_id, device.device_id,
                          device.account, result.getErrorMessage())
            elif result:
                removed.append(device)
                self.metrics.removed("410")
        return removed

