"""The v2 requests that store and remove devices: their fields and rules.

``POST /v2/tokens/{account}`` carries ``app-id``, ``platform``, ``token``,
``device-id``, ``silent`` and ``user-agent``; ``DELETE`` carries ``app-id``
and ``device-id``.  Field rules are the v1 ones
(:mod:`sylkpush.notification`); errors are :class:`ApiError` naming the
field, as for ``/push``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from sylkpush.dispatch import ApiError, Dispatcher
from sylkpush.notification import (UNSAFE_CHARACTERS, UNSAFE_RULE, ValidationError, check_strings, parse_app_id,
                                   read_bool, read_string)
from sylkpush.tokens import Device, normalize_device_id, split_account, split_token


#: the fields of a registration
REGISTRATION_FIELDS = ("app-id", "platform", "token", "device-id", "silent", "user-agent")
#: the fields of a removal
REMOVAL_FIELDS = ("app-id", "device-id")


def _invalid(exc: ValidationError) -> ApiError:
    return ApiError(400, str(exc), {"field": exc.field})


def _printable(text: str, name: str) -> str:
    if UNSAFE_CHARACTERS.search(text) is not None:
        raise ValidationError(name, UNSAFE_RULE)
    return text


def parse_account(segment: bytes) -> Tuple[str, str]:
    """(username, domain) of the ``{account}`` path segment."""
    try:
        account = _printable(segment.decode("utf-8"), "account")
        return split_account(account)
    except UnicodeDecodeError:
        raise _invalid(ValidationError("account", "must be UTF-8")) from None
    except ValidationError as exc:
        raise _invalid(exc) from None
    except ValueError:
        raise _invalid(ValidationError("account", "must be user@domain")) from None


def parse_device_segment(segment: bytes) -> str:
    """The ``{device-id}`` path segment of a push to one device."""
    try:
        device_id = normalize_device_id(_printable(segment.decode("utf-8"), "device-id"))
    except UnicodeDecodeError:
        raise _invalid(ValidationError("device-id", "must be UTF-8")) from None
    except ValidationError as exc:
        raise _invalid(exc) from None
    if not device_id:
        raise _invalid(ValidationError("device-id", "is required"))
    return device_id


def _device_id(body: Mapping[str, Any]) -> str:
    device_id = normalize_device_id(_printable(read_string(body, "device-id", True) or "", "device-id"))
    if not device_id:
        raise ValidationError("device-id", "is required")
    return device_id


def parse_registration(body: Any, username: str, domain: str, dispatcher: Dispatcher) -> Device:
    """The device a registration stores; its application must be configured."""
    app = dispatcher.application(body)  # a JSON object naming a configured app, or ApiError
    try:
        token = read_string(body, "token", True) or ""
        device_id = _device_id(body)
        silent = read_bool(body, "silent", True)
        user_agent = read_string(body, "user-agent", False)
    except ValidationError as exc:
        raise _invalid(exc) from None
    device_token, background_token = split_token(app.config.platform, token)
    return Device(username=username, domain=domain, device_id=device_id, app_id=app.config.app_id,
                  device_token=device_token, background_token=background_token, platform=app.config.platform,
                  silent=silent, user_agent=user_agent)


def registration_data(device: Device) -> Dict[str, Any]:
    """What a registration answers: the device as stored, in the request's field names."""
    return {"app-id": device.app_id, "platform": device.platform, "token": device.device_token,
            "background-token": device.background_token, "device-id": device.device_id,
            "silent": device.silent, "user-agent": device.user_agent}


@dataclass(frozen=True)
class Removal:
    """A ``DELETE``: which device of the account to forget."""

    app_id: str
    device_id: str

    def data(self) -> Dict[str, str]:
        return {"app-id": self.app_id, "device-id": self.device_id}


def parse_removal(body: Any) -> Removal:
    if not isinstance(body, Mapping):
        raise ApiError(400, "request body must be a JSON object")
    try:
        check_strings(body)
        return Removal(parse_app_id(body), _device_id(body))
    except ValidationError as exc:
        raise _invalid(exc) from None


def token_for(device: Device, event: Optional[Any]) -> str:
    """The token a push of ``event`` goes to: cancels and messages use the
    background token of an app that registered one."""
    if event in ("cancel", "message") and device.background_token:
        return device.background_token
    return device.device_token
