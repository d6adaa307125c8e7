"""Linphone renderers: the full headers and payload, written out by hand."""

from __future__ import annotations

from typing import Any, Dict

from twisted.trial import unittest

from sylkpush.applications.linphone import (
    AppleLinphoneHeaders, AppleLinphonePayload, FirebaseLinphoneHeaders, FirebaseLinphonePayload,
)
from sylkpush.config import AppConfig
from sylkpush.notification import parse_notification

# 1700000000 is 2023-11-14 22:13:20 UTC (date -u -d @1700000000)
NOW = 1700000000.6
SEND_TIME = "2023-11-14 22:13:20"
CALL_ID = "a84b4c76e66710@pc33.example.com"

APPLE = AppConfig(section="linphone-ios", app_id="org.linphone.phone.dev",
                  app_type="linphone", platform="apple")
FIREBASE = AppConfig(section="linphone-android", app_id="org.linphone",
                     app_type="linphone", platform="firebase",
                     firebase_push_url="https://fcm.googleapis.com/v1/projects/linphone/messages:send",
                     firebase_authorization_file="/etc/sylk-pushserver/credentials/sa.json")
LEGACY = AppConfig(section="linphone-android-legacy", app_id="org.linphone",
                   app_type="linphone", platform="firebase",
                   firebase_push_url="https://fcm.googleapis.com/fcm/send",
                   firebase_authorization_key="legacy-server-key")


def request(platform: str, **extra: Any) -> Dict[str, Any]:
    body = {"app-id": "org.linphone", "platform": platform, "token": "tok-9",
            "call-id": CALL_ID, "from": "sip:alice@example.com", "to": "sip:bob@example.org",
            "media-type": "audio"}
    body.update(extra)
    return body


def render(app: AppConfig, headers_class: type, payload_class: type, body: Dict[str, Any]):
    notification = parse_notification(body, "linphone")
    return (headers_class(notification, app, NOW).headers,
            payload_class(notification, app, NOW).payload)


class AppleLinphoneTests(unittest.TestCase):

    def test_silent(self) -> None:
        headers, payload = render(APPLE, AppleLinphoneHeaders, AppleLinphonePayload,
                                  request("apple", event="incoming_session"))
        self.assertEqual(headers, {
            "apns-push-type": "voip",
            "apns-expiration": "1700000010",
            "apns-priority": "10",
            "apns-topic": "org.linphone.phone.voip",
        })
        self.assertEqual(payload, {
            "aps": {
                "sound": "",
                "loc-key": "IC_SIL",
                "call-id": CALL_ID,
                "send-time": SEND_TIME,
            },
            "from-uri": "sip:alice@example.com",
            "pn_ttl": 2592000,
        })

    def test_not_silent(self) -> None:
        headers, payload = render(APPLE, AppleLinphoneHeaders, AppleLinphonePayload,
                                  request("apple", silent="0"))
        self.assertEqual(headers, {
            "apns-push-type": "voip",
            "apns-expiration": "1700000010",
            "apns-priority": "10",
            "apns-topic": "org.linphone.phone.voip",
        })
        self.assertEqual(payload, {
            "aps": {
                "alert": {"loc-key": "IC_MSG", "loc-args": ["sip:alice@example.com"]},
                "sound": "msg.caf",
                "badge": 1,
            },
            "pn_ttl": 2592000,
            "call-id": CALL_ID,
            "send-time": SEND_TIME,
        })

    def test_topic(self) -> None:
        for app_id, topic in (("org.linphone.phone", "org.linphone.phone.voip"),
                              ("org.linphone.phone.prod", "org.linphone.phone.voip"),
                              ("org.linphone.phone.dev", "org.linphone.phone.voip"),
                              ("org.linphone.phone.voip", "org.linphone.phone.voip"),
                              ("org.linphone.phone.voip.dev", "org.linphone.phone.voip"),
                              ("org.linphone.voip.phone", "org.linphone.voip.phone")):
            app = AppConfig(section="s", app_id=app_id, app_type="linphone", platform="apple")
            notification = parse_notification(request("apple", **{"app-id": app_id}), "linphone")
            self.assertEqual(AppleLinphoneHeaders(notification, app, NOW).headers["apns-topic"],
                             topic, app_id)

    def test_send_time_is_utc(self) -> None:
        notification = parse_notification(request("apple"), "linphone")
        # 86399 s after the epoch is the last second of 1970-01-01 in UTC
        payload = AppleLinphonePayload(notification, APPLE, 86399.9).payload
        self.assertEqual(payload["aps"]["send-time"], "1970-01-01 23:59:59")


class FirebaseLinphoneTests(unittest.TestCase):

    def test_silent(self) -> None:
        headers, payload = render(FIREBASE, FirebaseLinphoneHeaders, FirebaseLinphonePayload,
                                  request("firebase"))
        self.assertEqual(headers, {})
        self.assertEqual(payload, {"message": {
            "token": "tok-9",
            "data": {
                "call-id": CALL_ID,
                "sip-from": "sip:alice@example.com",
                "loc-key": "",
                "loc-args": "sip:alice@example.com",
                "send-time": SEND_TIME,
            },
            "android": {"priority": "high", "ttl": "60s"},
        }})

    def test_not_silent(self) -> None:
        headers, payload = render(FIREBASE, FirebaseLinphoneHeaders, FirebaseLinphonePayload,
                                  request("firebase", silent=False))
        self.assertEqual(headers, {})
        self.assertEqual(payload, {"message": {
            "token": "tok-9",
            "data": {
                "call-id": CALL_ID,
                "sip-from": "sip:alice@example.com",
                "loc-key": "",
                "loc-args": "sip:alice@example.com",
                "send-time": SEND_TIME,
            },
            "android": {"priority": "high", "ttl": "60s"},
        }})

    def test_legacy_silent(self) -> None:
        headers, payload = render(LEGACY, FirebaseLinphoneHeaders, FirebaseLinphonePayload,
                                  request("android", silent=True))
        self.assertEqual(headers, {})
        self.assertEqual(payload, {
            "to": "tok-9",
            "time_to_live": 2419199,
            "priority": "high",
            "data": {
                "call-id": CALL_ID,
                "sip-from": "sip:alice@example.com",
                "loc-key": "",
                "loc-args": "sip:alice@example.com",
                "send-time": SEND_TIME,
            },
        })

    def test_legacy_not_silent(self) -> None:
        _, payload = render(LEGACY, FirebaseLinphoneHeaders, FirebaseLinphonePayload,
                            request("fcm", silent="false"))
        self.assertEqual(payload, {
            "to": "tok-9",
            "time_to_live": 2419199,
            "priority": "high",
            "data": {
                "call-id": CALL_ID,
                "sip-from": "sip:alice@example.com",
                "loc-key": "",
                "loc-args": "sip:alice@example.com",
                "send-time": SEND_TIME,
            },
        })

    def test_every_data_value_is_a_string(self) -> None:
        for app in (FIREBASE, LEGACY):
            for silent in (True, False):
                _, payload = render(app, FirebaseLinphoneHeaders, FirebaseLinphonePayload,
                                    request("firebase", silent=silent))
                data = payload["data"] if app is LEGACY else payload["message"]["data"]
                for key, value in data.items():
                    self.assertIsInstance(value, str, (app.section, silent, key))
