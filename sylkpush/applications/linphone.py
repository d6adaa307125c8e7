"""Linphone: what is sent to Apple and Firebase for an incoming call (docs/payloads.md).

Linphone applications only take ``incoming_session``.  ``send-time`` is the
``now`` given to the renderer, in UTC, as ``YYYY-MM-DD HH:MM:SS``.

Apple's ``loc-args`` is sent as ``[from]``: the original server sent the
bare string, but APNs requires an array of strings there.  Firebase ``data`` values must be
strings, so there ``loc-args`` is the from URI itself.
"""

from __future__ import annotations

import time
from typing import Any, Dict

from sylkpush.applications.base import (
    AppleHeaders, ApplePayload, FirebaseHeaders, FirebasePayload, base_topic,
)

__all__ = ["AppleLinphoneHeaders", "AppleLinphonePayload",
           "FirebaseLinphoneHeaders", "FirebaseLinphonePayload"]

#: seconds Linphone keeps a push meaningful (``pn_ttl``, 30 days)
PN_TTL = 2592000
#: legacy FCM ``time_to_live`` Linphone servers use (just under 28 days)
LEGACY_TTL = 2419199


def send_time(now: float) -> str:
    """``now`` (UNIX time) as ``YYYY-MM-DD HH:MM:SS`` in UTC."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now))


class AppleLinphoneHeaders(AppleHeaders):
    """Always a voip push at priority 10 that expires after 10 s."""

    ttl = 10

    def push_type(self) -> str:
        return "voip"

    def topic(self) -> str:
        topic = base_topic(self.app.app_id)
        return topic if ".voip" in topic else topic + ".voip"

    def priority(self) -> int:
        return 10


class AppleLinphonePayload(ApplePayload):
    """Silent: a wake-up the app turns into a call; not silent: a visible alert."""

    @property
    def payload(self) -> Dict[str, Any]:
        notification = self.notification
        sent = send_time(self.now)
        if notification.silent:
            return {
                "aps": {
                    "sound": "",
                    "loc-key": "IC_SIL",
                    "call-id": notification.call_id,
                    "send-time": sent,
                },
                "from-uri": notification.sip_from,
                "pn_ttl": PN_TTL,
            }
        return {
            "aps": {
                "alert": {"loc-key": "IC_MSG", "loc-args": [notification.sip_from]},
                "sound": "msg.caf",
                "badge": 1,
            },
            "pn_ttl": PN_TTL,
            "call-id": notification.call_id,
            "send-time": sent,
        }


class FirebaseLinphoneHeaders(FirebaseHeaders):
    """No extra headers: authorization and content type are the client's."""


class FirebaseLinphonePayload(FirebasePayload):
    """v1 ``message`` with high priority, or the legacy form with a 28-day TTL."""

    legacy_ttl = LEGACY_TTL

    def data(self) -> Dict[str, Any]:
        notification = self.notification
        return {
            "call-id": notification.call_id,
            "sip-from": notification.sip_from,
            "loc-key": "",
            "loc-args": notification.sip_from,
            "send-time": send_time(self.now),
        }
