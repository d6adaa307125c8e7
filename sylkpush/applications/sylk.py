"""Sylk (the AG Projects mobile client): what is sent to Apple and Firebase (docs/payloads.md).

Choices for values the request may leave out:

- ``from_display_name`` is always a string: the caller's display name, or the
  from URI when the request had none (Firebase's rule, used for Apple too so
  both apps read the same thing).
- Other optional text fields (``reason``, ``account``, ``content``,
  ``content_type``, ``filename``, ``filetype``) are sent as ``""`` when the
  request did not have them, on both platforms: every event always carries
  the same keys, and FCM only accepts strings anyway.
"""

from __future__ import annotations

from typing import Any, Dict

from sylkpush.applications.base import (
    AppleHeaders, ApplePayload, FirebaseHeaders, FirebasePayload, base_topic, session_id,
)
from sylkpush.notification import CALL_MEDIA, Notification

__all__ = ["AppleSylkHeaders", "AppleSylkPayload", "FirebaseSylkHeaders", "FirebaseSylkPayload"]

#: Android notification channel the Sylk app plays its message sound on
MESSAGES_CHANNEL = "sylk-messages-sound"


def _text(value: Any) -> str:
    return "" if value is None else value


def display_name(notification: Notification) -> str:
    """The caller's display name, or the from URI when there is none."""
    return notification.from_display_name or notification.sip_from


def transfer_title(notification: Notification) -> str:
    """``New audio message`` / ``New video message``, else ``New file``."""
    if notification.media_type in CALL_MEDIA:
        return f"New {notification.media_type} message"
    return "New file"


def voip_fields(notification: Notification) -> Dict[str, Any]:
    """The call description shared by both platforms for voip events."""
    fields = {
        "event": notification.event,
        "call-id": notification.call_id,
        "session-id": session_id(notification.call_id),
        "media-type": notification.media_type,
        "from_uri": notification.sip_from,
        "from_display_name": display_name(notification),
        "to_uri": notification.sip_to,
    }
    if notification.event == "incoming_conference_request":
        fields["account"] = _text(notification.account)
    return fields


def cancel_fields(notification: Notification) -> Dict[str, Any]:
    return {
        "event": notification.event,
        "call-id": notification.call_id,
        "session-id": session_id(notification.call_id),
        "reason": _text(notification.reason),
    }


class AppleSylkHeaders(AppleHeaders):
    """voip for calls, background for cancel, alert for message and transfer."""

    ttl = 120

    def push_type(self) -> str:
        if self.notification.is_voip:
            return "voip"
        if self.notification.event == "cancel":
            return "background"
        return "alert"

    def topic(self) -> str:
        topic = base_topic(self.app.app_id)
        return topic + ".voip" if self.notification.is_voip else topic

    def priority(self) -> int:
        return 10 if self.notification.is_voip else 5


class AppleSylkPayload(ApplePayload):
    """The APNs payload of each Sylk event."""

    @property
    def payload(self) -> Dict[str, Any]:
        notification = self.notification
        if notification.is_voip:
            return voip_fields(notification)
        if notification.event == "cancel":
            payload = cancel_fields(notification)
            # without content-available APNs refuses a background push
            payload["aps"] = {"content-available": 1}
            return payload
        if notification.event == "message":
            return {
                "aps": {
                    "alert": {
                        "title": notification.from_display_name or "New message",
                        "body": f"From {notification.sip_from}",
                    },
                    "message_id": notification.call_id,
                    "sound": "default",
                    "content-available": 1,
                    "mutable-content": 1,
                    "badge": notification.badge,
                },
                "data": {
                    "event": notification.event,
                    "message_id": notification.call_id,
                    "from_uri": notification.sip_from,
                    "from_display_name": display_name(notification),
                    "to_uri": notification.sip_to,
                    "content": _text(notification.content),
                    "content_type": _text(notification.content_type),
                },
            }
        if notification.event == "transfer":
            return {
                "aps": {
                    "alert": {
                        "title": transfer_title(notification),
                        "body": f"From {notification.sip_from}",
                    },
                    "sound": "default",
                    "mutable-content": 1,
                    "badge": notification.badge,
                },
                "data": {
                    "event": notification.event,
                    "from_uri": notification.sip_from,
                    "from_display_name": display_name(notification),
                    "to_uri": notification.sip_to,
                    "file-id": notification.call_id,
                    "media-type": notification.media_type,
                    "metadata": {
                        "filename": _text(notification.filename),
                        "filetype": _text(notification.filetype),
                    },
                },
            }
        raise ValueError(f"sylk applications do not handle event {notification.event}")


class FirebaseSylkHeaders(FirebaseHeaders):
    """No extra headers: authorization and content type are the client's."""


class FirebaseSylkPayload(FirebasePayload):
    """The FCM message of each Sylk event.

    Legacy API (``firebase_authorization_key``): ``{to, priority: "high",
    time_to_live: 60, data}`` with the same string-only ``data`` as v1; a
    transfer adds the legacy ``notification`` (title, body, ``sound``,
    ``android_channel_id``).  The legacy API has no per-platform APNs headers,
    so a message gets nothing more there.
    """

    def data(self) -> Dict[str, Any]:
        notification = self.notification
        if notification.is_voip:
            return voip_fields(notification)
        if notification.event == "cancel":
            return cancel_fields(notification)
        if notification.event == "message":
            return {
                "event": notification.event,
                "message_id": notification.call_id,
                "from_uri": notification.sip_from,
                "to_uri": notification.sip_to,
                "content": notification.content,
                "content_type": notification.content_type,
            }
        if notification.event == "transfer":
            return {
                "event": notification.event,
                "from_uri": notification.sip_from,
                "to_uri": notification.sip_to,
                "media-type": notification.media_type,
                "file-id": notification.call_id,
                "metadata": {
                    "filename": _text(notification.filename),
                    "filetype": _text(notification.filetype),
                },
            }
        raise ValueError(f"sylk applications do not handle event {notification.event}")

    def alert(self) -> Dict[str, str]:
        return {"title": transfer_title(self.notification),
                "body": f"From {self.notification.sip_from}"}

    def v1_message(self) -> Dict[str, Any]:
        message = super().v1_message()
        if self.notification.event == "message":
            # iOS devices accept data-only FCM messages at normal priority only
            message["apns"] = {"headers": {"apns-priority": "5"}}
        elif self.notification.event == "transfer":
            message["notification"] = self.alert()
            message["android"]["notification"] = {
                "channel_id": MESSAGES_CHANNEL,
                "sound": "default",
                "notification_priority": "PRIORITY_HIGH",
            }
        return message

    def legacy_payload(self) -> Dict[str, Any]:
        payload = super().legacy_payload()
        if self.notification.event == "transfer":
            payload["notification"] = dict(self.alert(), sound="default",
                                           android_channel_id=MESSAGES_CHANNEL)
        return payload
