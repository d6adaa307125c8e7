"""Base classes of the renderers: a request in, headers and payload out.

An application family (``sylk``, ``linphone``, a custom ``myapp``) provides,
per platform, ``<Platform><Apptype>Headers`` and ``<Platform><Apptype>Payload``
subclassing these.  Renderers are pure: no I/O, no logging, no clock reads
(``now`` is passed in), so every one of them is tested by comparing literals.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from typing import Any, Dict, Mapping

from sylkpush.config import AppConfig
from sylkpush.notification import Notification


def session_id(call_id: str) -> str:
    """The MD5 hex digest of ``call_id`` laid out as 8-4-4-4-12."""
    digest = hashlib.md5(call_id.encode("utf-8")).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:]}"


@lru_cache(maxsize=1024)  # a handful of application ids, asked for every push
def base_topic(app_id: str) -> str:
    """``app_id`` without a trailing ``.dev`` or ``.prod``."""
    for suffix in (".dev", ".prod"):
        if app_id.endswith(suffix):
            return app_id[: -len(suffix)]
    return app_id


def compact_json(value: Any) -> str:
    """``value`` as JSON without spaces (nested values inside FCM data)."""
    return json.dumps(value, separators=(",", ":"))


def fcm_data(values: Mapping[str, Any]) -> Dict[str, str]:
    """An FCM ``data`` map: FCM v1 rejects any value that is not a string.

    None becomes ``""`` (the key stays, so an app sees the same keys for an
    event whatever the caller sent), numbers their decimal text, booleans
    ``"true"``/``"false"``, and lists and objects compact JSON.
    """
    data = {}
    for key, value in values.items():
        if value is None:
            data[key] = ""
        elif isinstance(value, str):
            data[key] = value
        elif isinstance(value, bool):
            data[key] = "true" if value else "false"
        elif isinstance(value, (int, float)):
            data[key] = str(value)
        else:
            data[key] = compact_json(value)
    return data


class Renderer:
    """Shared constructor of the header and payload renderers."""

    def __init__(self, notification: Notification, app: AppConfig, now: float) -> None:
        self.notification = notification
        self.app = app
        self.now = now


class AppleHeaders(Renderer):
    """APNs request headers (everything except ``authorization``, which is the client's)."""

    #: seconds until APNs may drop the notification
    ttl = 120

    def push_type(self) -> str:
        return "voip" if self.notification.is_voip else "alert"

    def topic(self) -> str:
        return base_topic(self.app.app_id)

    def priority(self) -> int:
        return 10

    def expiration(self) -> int:
        return int(self.now) + self.ttl

    @property
    def headers(self) -> Dict[str, str]:
        return {
            "apns-push-type": self.push_type(),
            "apns-expiration": str(self.expiration()),
            "apns-priority": str(self.priority()),
            "apns-topic": self.topic(),
        }


class ApplePayload(Renderer):
    """The JSON payload of an APNs request."""

    @property
    def payload(self) -> Dict[str, Any]:
        raise NotImplementedError


class FirebaseHeaders(Renderer):
    """Extra HTTP headers of an FCM request (auth is the client's business)."""

    @property
    def headers(self) -> Dict[str, str]:
        return {}


class FirebasePayload(Renderer):
    """The JSON message of an FCM request (v1 form, or legacy when configured).

    Subclasses usually only provide :meth:`data`; :attr:`payload` wraps it in
    the v1 ``message`` (``android`` priority high, ``ttl``) or, for an app
    configured with a legacy server key, in the legacy form
    ``{to, priority, time_to_live, data}``.
    """

    #: seconds FCM keeps an undelivered message (v1 ``android.ttl``)
    ttl = 60
    #: seconds FCM keeps an undelivered message (legacy ``time_to_live``)
    legacy_ttl = 60

    def data(self) -> Dict[str, Any]:
        """The ``data`` map; values are turned into strings by :func:`fcm_data`."""
        raise NotImplementedError

    def v1_message(self) -> Dict[str, Any]:
        """The v1 ``message`` object; override to add ``apns``, ``notification``..."""
        return {
            "token": self.notification.token,
            "data": fcm_data(self.data()),
            "android": {"priority": "high", "ttl": f"{self.ttl}s"},
        }

    def legacy_payload(self) -> Dict[str, Any]:
        """The body for the legacy ``/fcm/send`` API."""
        return {
            "to": self.notification.token,
            "priority": "high",
            "time_to_live": self.legacy_ttl,
            "data": fcm_data(self.data()),
        }

    @property
    def payload(self) -> Dict[str, Any]:
        if self.app.firebase_legacy:
            return self.legacy_payload()
        return {"message": self.v1_message()}
