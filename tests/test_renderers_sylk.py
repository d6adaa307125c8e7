"""Sylk renderers: the full headers and payload of every event, written out by hand."""

from __future__ import annotations

from typing import Any, Dict

from twisted.trial import unittest

from sylkpush.applications.base import base_topic, session_id
from sylkpush.applications.sylk import (
    AppleSylkHeaders, AppleSylkPayload, FirebaseSylkHeaders, FirebaseSylkPayload,
)
from sylkpush.config import AppConfig
from sylkpush.notification import parse_notification

NOW = 1700000000.75
CALL_ID = "4dbe8-7a53-42bd-95f3-9a7d43938"
# md5("4dbe8-7a53-42bd-95f3-9a7d43938") = c7a6925c4838a5bf146aaa5f7f32973d (md5sum)
SESSION_ID = "c7a6925c-4838-a5bf-146a-aa5f7f32973d"

APPLE = AppConfig(section="sylk-ios", app_id="com.agprojects.sylk-ios.prod",
                  app_type="sylk", platform="apple")
FIREBASE = AppConfig(section="sylk-android", app_id="com.agprojects.sylk",
                     app_type="sylk", platform="firebase",
                     firebase_push_url="https://fcm.googleapis.com/v1/projects/sylk/messages:send",
                     firebase_authorization_file="/etc/sylk-pushserver/credentials/sa.json")
LEGACY = AppConfig(section="sylk-android-legacy", app_id="com.agprojects.sylk",
                   app_type="sylk", platform="firebase",
                   firebase_push_url="https://fcm.googleapis.com/fcm/send",
                   firebase_authorization_key="legacy-server-key")


def request(platform: str, event: str, **extra: Any) -> Dict[str, Any]:
    body = {
        "app-id": "com.agprojects.sylk-ios.prod" if platform == "apple" else "com.agprojects.sylk",
        "platform": platform, "token": "tok-123", "call-id": CALL_ID,
        "from": "alice@example.com", "to": "bob@example.org", "event": event,
        "media-type": "audio",
    }
    body.update(extra)
    return {key: value for key, value in body.items() if value is not None}


def render(app: AppConfig, headers_class: type, payload_class: type, body: Dict[str, Any]):
    notification = parse_notification(body, "sylk")
    return (headers_class(notification, app, NOW).headers,
            payload_class(notification, app, NOW).payload)


def apple(body: Dict[str, Any]):
    return render(APPLE, AppleSylkHeaders, AppleSylkPayload, body)


def firebase(body: Dict[str, Any], app: AppConfig = FIREBASE):
    return render(app, FirebaseSylkHeaders, FirebaseSylkPayload, body)


class HelpersTests(unittest.TestCase):

    def test_session_id_known_value(self) -> None:
        self.assertEqual(session_id(CALL_ID), SESSION_ID)
        # md5("abc") = 900150983cd24fb0d6963f7d28e17f72
        self.assertEqual(session_id("abc"), "90015098-3cd2-4fb0-d696-3f7d28e17f72")

    def test_base_topic(self) -> None:
        self.assertEqual(base_topic("com.example.app.dev"), "com.example.app")
        self.assertEqual(base_topic("com.example.app.prod"), "com.example.app")
        self.assertEqual(base_topic("com.example.app"), "com.example.app")
        self.assertEqual(base_topic("com.example.development"), "com.example.development")
        self.assertEqual(base_topic("com.example.dev.app"), "com.example.dev.app")


class AppleSylkTests(unittest.TestCase):

    def test_incoming_session(self) -> None:
        headers, payload = apple(request("apple", "incoming_session", **{"from-display-name": "Alice"}))
        self.assertEqual(headers, {
            "apns-push-type": "voip",
            "apns-expiration": "1700000120",
            "apns-priority": "10",
            "apns-topic": "com.agprojects.sylk-ios.voip",
        })
        self.assertEqual(payload, {
            "event": "incoming_session",
            "call-id": CALL_ID,
            "session-id": SESSION_ID,
            "media-type": "audio",
            "from_uri": "alice@example.com",
            "from_display_name": "Alice",
            "to_uri": "bob@example.org",
        })

    def test_incoming_session_without_display_name_uses_from(self) -> None:
        _, payload = apple(request("apple", "incoming_session", **{"media-type": "video"}))
        self.assertEqual(payload, {
            "event": "incoming_session",
            "call-id": CALL_ID,
            "session-id": SESSION_ID,
            "media-type": "video",
            "from_uri": "alice@example.com",
            "from_display_name": "alice@example.com",
            "to_uri": "bob@example.org",
        })

    def test_incoming_conference_request(self) -> None:
        headers, payload = apple(request("apple", "incoming_conference", account="bob@example.org",
                                         from_display_name="Alice"))
        self.assertEqual(headers, {
            "apns-push-type": "voip",
            "apns-expiration": "1700000120",
            "apns-priority": "10",
            "apns-topic": "com.agprojects.sylk-ios.voip",
        })
        self.assertEqual(payload, {
            "event": "incoming_conference_request",
            "call-id": CALL_ID,
            "session-id": SESSION_ID,
            "media-type": "audio",
            "from_uri": "alice@example.com",
            "from_display_name": "Alice",
            "to_uri": "bob@example.org",
            "account": "bob@example.org",
        })

    def test_cancel(self) -> None:
        headers, payload = apple(request("apple", "cancel", reason="answered elsewhere",
                                         **{"media-type": None}))
        self.assertEqual(headers, {
            "apns-push-type": "background",
            "apns-expiration": "1700000120",
            "apns-priority": "5",
            "apns-topic": "com.agprojects.sylk-ios",
        })
        self.assertEqual(payload, {
            "event": "cancel",
            "call-id": CALL_ID,
            "session-id": SESSION_ID,
            "reason": "answered elsewhere",
            "aps": {"content-available": 1},
        })

    def test_cancel_without_reason(self) -> None:
        _, payload = apple(request("apple", "cancel"))
        self.assertEqual(payload, {
            "event": "cancel",
            "call-id": CALL_ID,
            "session-id": SESSION_ID,
            "reason": "",
            "aps": {"content-available": 1},
        })

    def test_message(self) -> None:
        headers, payload = apple(request("apple", "message", badge=3, content="hello",
                                         **{"media-type": "chat", "content-type": "text/plain",
                                            "from-display-name": "Alice"}))
        self.assertEqual(headers, {
            "apns-push-type": "alert",
            "apns-expiration": "1700000120",
            "apns-priority": "5",
            "apns-topic": "com.agprojects.sylk-ios",
        })
        self.assertEqual(payload, {
            "aps": {
                "alert": {"title": "Alice", "body": "From alice@example.com"},
                "message_id": CALL_ID,
                "sound": "default",
                "content-available": 1,
                "mutable-content": 1,
                "badge": 3,
            },
            "data": {
                "event": "message",
                "message_id": CALL_ID,
                "from_uri": "alice@example.com",
                "from_display_name": "Alice",
                "to_uri": "bob@example.org",
                "content": "hello",
                "content_type": "text/plain",
            },
        })

    def test_message_without_display_name_or_content(self) -> None:
        _, payload = apple(request("apple", "message", **{"media-type": "sms"}))
        self.assertEqual(payload, {
            "aps": {
                "alert": {"title": "New message", "body": "From alice@example.com"},
                "message_id": CALL_ID,
                "sound": "default",
                "content-available": 1,
                "mutable-content": 1,
                "badge": 1,
            },
            "data": {
                "event": "message",
                "message_id": CALL_ID,
                "from_uri": "alice@example.com",
                "from_display_name": "alice@example.com",
                "to_uri": "bob@example.org",
                "content": "",
                "content_type": "",
            },
        })

    def test_transfer_audio(self) -> None:
        headers, payload = apple(request("apple", "transfer", filename="note.m4a",
                                         filetype="audio/mp4", from_display_name="Alice"))
        self.assertEqual(headers, {
            "apns-push-type": "alert",
            "apns-expiration": "1700000120",
            "apns-priority": "5",
            "apns-topic": "com.agprojects.sylk-ios",
        })
        self.assertEqual(payload, {
            "aps": {
                "alert": {"title": "New audio message", "body": "From alice@example.com"},
                "sound": "default",
                "mutable-content": 1,
                "badge": 1,
            },
            "data": {
                "event": "transfer",
                "from_uri": "alice@example.com",
                "from_display_name": "Alice",
                "to_uri": "bob@example.org",
                "file-id": CALL_ID,
                "media-type": "audio",
                "metadata": {"filename": "note.m4a", "filetype": "audio/mp4"},
            },
        })

    def test_transfer_file(self) -> None:
        _, payload = apple(request("apple", "transfer", filename="a.pdf", badge="2",
                                   **{"media-type": "file-transfer"}))
        self.assertEqual(payload, {
            "aps": {
                "alert": {"title": "New file", "body": "From alice@example.com"},
                "sound": "default",
                "mutable-content": 1,
                "badge": 2,
            },
            "data": {
                "event": "transfer",
                "from_uri": "alice@example.com",
                "from_display_name": "alice@example.com",
                "to_uri": "bob@example.org",
                "file-id": CALL_ID,
                "media-type": "file-transfer",
                "metadata": {"filename": "a.pdf", "filetype": ""},
            },
        })

    def test_topic_suffixes(self) -> None:
        for app_id, voip_topic, topic in (
                ("com.example.app.dev", "com.example.app.voip", "com.example.app"),
                ("com.example.app.prod", "com.example.app.voip", "com.example.app"),
                ("com.example.app", "com.example.app.voip", "com.example.app")):
            app = AppConfig(section="s", app_id=app_id, app_type="sylk", platform="apple")
            for event, expected in (("incoming_session", voip_topic),
                                    ("incoming_conference_request", voip_topic),
                                    ("cancel", topic), ("message", topic), ("transfer", topic)):
                notification = parse_notification(request("apple", event, **{"app-id": app_id}), "sylk")
                self.assertEqual(AppleSylkHeaders(notification, app, NOW).headers["apns-topic"],
                                 expected, (app_id, event))

    def test_expiration_is_absolute(self) -> None:
        notification = parse_notification(request("apple", "incoming_session"), "sylk")
        self.assertEqual(AppleSylkHeaders(notification, APPLE, 1234.9).headers["apns-expiration"], "1354")


class FirebaseSylkTests(unittest.TestCase):

    def test_headers_are_empty(self) -> None:
        headers, _ = firebase(request("firebase", "incoming_session"))
        self.assertEqual(headers, {})

    def test_incoming_session(self) -> None:
        _, payload = firebase(request("firebase", "incoming_session", **{"from-display-name": "Alice",
                                                                         "media-type": "video"}))
        self.assertEqual(payload, {"message": {
            "token": "tok-123",
            "data": {
                "event": "incoming_session",
                "call-id": CALL_ID,
                "session-id": SESSION_ID,
                "media-type": "video",
                "from_uri": "alice@example.com",
                "from_display_name": "Alice",
                "to_uri": "bob@example.org",
            },
            "android": {"priority": "high", "ttl": "60s"},
        }})

    def test_incoming_session_without_display_name_uses_from(self) -> None:
        _, payload = firebase(request("firebase", "incoming_session"))
        self.assertEqual(payload["message"]["data"]["from_display_name"], "alice@example.com")

    def test_incoming_conference_request(self) -> None:
        _, payload = firebase(request("firebase", "incoming_conference_request",
                                      account="room@conference.example.org"))
        self.assertEqual(payload, {"message": {
            "token": "tok-123",
            "data": {
                "event": "incoming_conference_request",
                "call-id": CALL_ID,
                "session-id": SESSION_ID,
                "media-type": "audio",
                "from_uri": "alice@example.com",
                "from_display_name": "alice@example.com",
                "to_uri": "bob@example.org",
                "account": "room@conference.example.org",
            },
            "android": {"priority": "high", "ttl": "60s"},
        }})

    def test_cancel(self) -> None:
        _, payload = firebase(request("firebase", "cancel", reason="busy", **{"media-type": None}))
        self.assertEqual(payload, {"message": {
            "token": "tok-123",
            "data": {
                "event": "cancel",
                "call-id": CALL_ID,
                "session-id": SESSION_ID,
                "reason": "busy",
            },
            "android": {"priority": "high", "ttl": "60s"},
        }})

    def test_message(self) -> None:
        _, payload = firebase(request("firebase", "message", content="hi there", badge=4,
                                      **{"media-type": "chat", "content-type": "text/plain",
                                         "from-display-name": "Alice"}))
        self.assertEqual(payload, {"message": {
            "token": "tok-123",
            "data": {
                "event": "message",
                "message_id": CALL_ID,
                "from_uri": "alice@example.com",
                "to_uri": "bob@example.org",
                "content": "hi there",
                "content_type": "text/plain",
            },
            "android": {"priority": "high", "ttl": "60s"},
            "apns": {"headers": {"apns-priority": "5"}},
        }})

    def test_transfer(self) -> None:
        _, payload = firebase(request("firebase", "transfer", filename="clip.mp4", filetype="video/mp4",
                                      **{"media-type": "video"}))
        self.assertEqual(payload, {"message": {
            "token": "tok-123",
            "data": {
                "event": "transfer",
                "from_uri": "alice@example.com",
                "to_uri": "bob@example.org",
                "media-type": "video",
                "file-id": CALL_ID,
                "metadata": '{"filename":"clip.mp4","filetype":"video/mp4"}',
            },
            "notification": {"title": "New video message", "body": "From alice@example.com"},
            "android": {
                "priority": "high",
                "ttl": "60s",
                "notification": {
                    "channel_id": "sylk-messages-sound",
                    "sound": "default",
                    "notification_priority": "PRIORITY_HIGH",
                },
            },
        }})

    def test_transfer_image_is_a_file(self) -> None:
        _, payload = firebase(request("firebase", "transfer", filename="cat.jpg",
                                      **{"media-type": "image"}))
        self.assertEqual(payload["message"]["notification"],
                         {"title": "New file", "body": "From alice@example.com"})
        self.assertEqual(payload["message"]["data"]["metadata"], '{"filename":"cat.jpg","filetype":""}')

    def test_every_data_value_is_a_string(self) -> None:
        """FCM v1 rejects the whole message when any data value is not a string."""
        bodies = [
            request("firebase", "incoming_session"),
            request("firebase", "incoming_conference_request"),
            request("firebase", "cancel", **{"media-type": None}),
            request("firebase", "message", badge=7, **{"media-type": "chat"}),
            request("firebase", "transfer", filename="a", filetype="b", badge=2,
                    **{"media-type": "file-transfer"}),
        ]
        for body in bodies:
            for app in (FIREBASE, LEGACY):
                _, payload = firebase(body, app)
                data = payload["data"] if app is LEGACY else payload["message"]["data"]
                self.assertTrue(data)
                for key, value in data.items():
                    self.assertIsInstance(value, str, (body["event"], key, app.section))


class FirebaseSylkLegacyTests(unittest.TestCase):
    """Legacy server-key apps: ``{to, priority, time_to_live, data}``."""

    def test_incoming_session(self) -> None:
        _, payload = firebase(request("firebase", "incoming_session", from_display_name="Alice"), LEGACY)
        self.assertEqual(payload, {
            "to": "tok-123",
            "priority": "high",
            "time_to_live": 60,
            "data": {
                "event": "incoming_session",
                "call-id": CALL_ID,
                "session-id": SESSION_ID,
                "media-type": "audio",
                "from_uri": "alice@example.com",
                "from_display_name": "Alice",
                "to_uri": "bob@example.org",
            },
        })

    def test_incoming_conference_request(self) -> None:
        _, payload = firebase(request("firebase", "incoming_conference_request"), LEGACY)
        self.assertEqual(payload, {
            "to": "tok-123",
            "priority": "high",
            "time_to_live": 60,
            "data": {
                "event": "incoming_conference_request",
                "call-id": CALL_ID,
                "session-id": SESSION_ID,
                "media-type": "audio",
                "from_uri": "alice@example.com",
                "from_display_name": "alice@example.com",
                "to_uri": "bob@example.org",
                "account": "",
            },
        })

    def test_cancel(self) -> None:
        _, payload = firebase(request("firebase", "cancel", reason="declined"), LEGACY)
        self.assertEqual(payload, {
            "to": "tok-123",
            "priority": "high",
            "time_to_live": 60,
            "data": {
                "event": "cancel",
                "call-id": CALL_ID,
                "session-id": SESSION_ID,
                "reason": "declined",
            },
        })

    def test_message(self) -> None:
        _, payload = firebase(request("firebase", "message", content="yo",
                                      **{"media-type": "sms", "content-type": "text/plain"}), LEGACY)
        self.assertEqual(payload, {
            "to": "tok-123",
            "priority": "high",
            "time_to_live": 60,
            "data": {
                "event": "message",
                "message_id": CALL_ID,
                "from_uri": "alice@example.com",
                "to_uri": "bob@example.org",
                "content": "yo",
                "content_type": "text/plain",
            },
        })

    def test_transfer(self) -> None:
        _, payload = firebase(request("firebase", "transfer", filename="n.m4a", filetype="audio/mp4"),
                              LEGACY)
        self.assertEqual(payload, {
            "to": "tok-123",
            "priority": "high",
            "time_to_live": 60,
            "data": {
                "event": "transfer",
                "from_uri": "alice@example.com",
                "to_uri": "bob@example.org",
                "media-type": "audio",
                "file-id": CALL_ID,
                "metadata": '{"filename":"n.m4a","filetype":"audio/mp4"}',
            },
            "notification": {
                "title": "New audio message",
                "body": "From alice@example.com",
                "sound": "default",
                "android_channel_id": "sylk-messages-sound",
            },
        })
