"""Finding renderer and push-service client classes: built-in, custom modules, and broken ones."""

from __future__ import annotations

import os

from twisted.trial import unittest

from sylkpush import custom_modules
from sylkpush.applications.base import AppleHeaders, ApplePayload, FirebaseHeaders, FirebasePayload
from sylkpush.applications.linphone import FirebaseLinphoneHeaders, FirebaseLinphonePayload
from sylkpush.applications.renderer_classes import renderer_classes
from sylkpush.applications.sylk import AppleSylkHeaders, AppleSylkPayload
from sylkpush.config import AppConfig, ConfigError
from sylkpush.notification import parse_notification

TEMPLATES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "config", "applications")

GOOD_MODULE = """
from sylkpush.applications.base import AppleHeaders, ApplePayload

class AppleGoodHeaders(AppleHeaders):
    pass

class AppleGoodPayload(ApplePayload):
    @property
    def payload(self):
        return {"version": VERSION}

VERSION = %d
"""


class RendererClassesTests(unittest.TestCase):

    def setUp(self) -> None:
        custom_modules.clear_cache()
        self.addCleanup(custom_modules.clear_cache)
        self.extra_dir = self.mktemp()
        os.makedirs(self.extra_dir)

    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.extra_dir, name + ".py")
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(text)
        return os.path.abspath(path)

    def test_client_classes(self) -> None:
        from sylkpush.pns.apple import AppleClient
        from sylkpush.pns.client_classes import client_class
        from sylkpush.pns.firebase import FirebaseClient
        self.assertIs(client_class("apple", self.extra_dir), AppleClient)
        self.assertIs(client_class("firebase"), FirebaseClient)
        path = self.write("mypns", "class MypnsClient:\n    pass\n")
        exc = self.assertRaises(ConfigError, client_class, "mypns", self.extra_dir)
        self.assertEqual(str(exc), f"push service module {path} has no class MypnsClient subclassing "
                                   "sylkpush.pns.base.PushClient")
        exc = self.assertRaises(ConfigError, client_class, "mypns", "")
        self.assertEqual(str(exc), "push service mypns is not built in and no directory for custom modules is set")

    def test_builtins(self) -> None:
        self.assertEqual(renderer_classes("sylk", "apple"), (AppleSylkHeaders, AppleSylkPayload))
        self.assertEqual(renderer_classes("linphone", "firebase", self.extra_dir),
                         (FirebaseLinphoneHeaders, FirebaseLinphonePayload))

    def test_builtin_wins_over_extra_module(self) -> None:
        self.write("sylk", "raise RuntimeError('must not be loaded')\n")
        self.assertEqual(renderer_classes("sylk", "apple", self.extra_dir),
                         (AppleSylkHeaders, AppleSylkPayload))

    def test_builtin_platform_without_classes(self) -> None:
        exc = self.assertRaises(ConfigError, renderer_classes, "sylk", "mypns")
        self.assertIn("sylk", str(exc))
        self.assertIn("MypnsSylkHeaders", str(exc))

    def test_myapp_template(self) -> None:
        apple_headers, apple_payload = renderer_classes("myapp", "apple", TEMPLATES)
        firebase_headers, firebase_payload = renderer_classes("myapp", "firebase", TEMPLATES)
        self.assertEqual([cls.__name__ for cls in (apple_headers, apple_payload,
                                                   firebase_headers, firebase_payload)],
                         ["AppleMyappHeaders", "AppleMyappPayload",
                          "FirebaseMyappHeaders", "FirebaseMyappPayload"])
        self.assertTrue(issubclass(apple_headers, AppleHeaders))
        self.assertTrue(issubclass(apple_payload, ApplePayload))
        self.assertTrue(issubclass(firebase_headers, FirebaseHeaders))
        self.assertTrue(issubclass(firebase_payload, FirebasePayload))

        body = {"app-id": "com.example.myapp.dev", "platform": "ios", "token": "t1",
                "call-id": "abc", "from": "alice@example.com", "to": "bob@example.org",
                "event": "incoming_session", "media-type": "video"}
        apple_app = AppConfig(section="myapp-ios", app_id="com.example.myapp.dev",
                              app_type="myapp", platform="apple")
        notification = parse_notification(body, "myapp")
        self.assertEqual(apple_headers(notification, apple_app, 1000.5).headers, {
            "apns-push-type": "voip",
            "apns-expiration": "1060",
            "apns-priority": "10",
            "apns-topic": "com.example.myapp.voip",
        })
        # md5("abc") = 900150983cd24fb0d6963f7d28e17f72
        self.assertEqual(apple_payload(notification, apple_app, 1000.5).payload, {
            "event": "incoming_session",
            "call-id": "abc",
            "session-id": "90015098-3cd2-4fb0-d696-3f7d28e17f72",
            "media-type": "video",
            "from_uri": "alice@example.com",
            "from_display_name": "alice@example.com",
            "to_uri": "bob@example.org",
        })

        message = parse_notification(dict(body, event="message", **{"media-type": "chat"}), "myapp")
        self.assertEqual(apple_headers(message, apple_app, 1000.5).headers, {
            "apns-push-type": "alert",
            "apns-expiration": "1060",
            "apns-priority": "5",
            "apns-topic": "com.example.myapp",
        })
        self.assertEqual(apple_payload(message, apple_app, 1000.5).payload, {
            "aps": {"alert": {"title": "alice@example.com", "body": "message from alice@example.com"},
                    "sound": "default", "badge": 1},
            "event": "message",
            "call-id": "abc",
        })

        firebase_app = AppConfig(section="myapp-android", app_id="com.example.myapp",
                                 app_type="myapp", platform="firebase",
                                 firebase_authorization_file="/x/sa.json")
        notification = parse_notification(dict(body, platform="android", **{"app-id": "com.example.myapp"}),
                                          "myapp")
        self.assertEqual(firebase_headers(notification, firebase_app, 1000.5).headers, {})
        self.assertEqual(firebase_payload(notification, firebase_app, 1000.5).payload, {"message": {
            "token": "t1",
            "data": {
                "event": "incoming_session",
                "call-id": "abc",
                "session-id": "90015098-3cd2-4fb0-d696-3f7d28e17f72",
                "media-type": "video",
                "from_uri": "alice@example.com",
                "from_display_name": "alice@example.com",
                "to_uri": "bob@example.org",
            },
            "android": {"priority": "high", "ttl": "60s"},
        }})

    def assert_refused(self, app_type: str, platform: str, source: str, *reasons: str) -> None:
        """The module ``source`` of ``app_type`` is refused with its path and ``reasons``."""
        path = self.write(app_type, source)
        exc = self.assertRaises(ConfigError, renderer_classes, app_type, platform, self.extra_dir)
        for expected in (path,) + reasons:
            self.assertIn(expected, str(exc))

    def test_syntax_error(self) -> None:
        self.assert_refused("broken", "apple", "class AppleBrokenHeaders(:\n    pass\n",
                            "SyntaxError", "failed to import")

    def test_import_raises(self) -> None:
        self.assert_refused("needy", "apple", "import sylkpush_no_such_module\n", "sylkpush_no_such_module")

    def test_missing_class(self) -> None:
        self.assert_refused("half", "firebase", (
            "from sylkpush.applications.base import FirebaseHeaders\n"
            "class FirebaseHalfHeaders(FirebaseHeaders):\n    pass\n"), "FirebaseHalfPayload")

    def test_class_not_a_renderer(self) -> None:
        self.assert_refused("plain", "apple", (
            "from sylkpush.applications.base import AppleHeaders\n"
            "class ApplePlainHeaders(AppleHeaders):\n    pass\n"
            "class ApplePlainPayload:\n    payload = {}\n"), "ApplePlainPayload")

    def test_missing_module(self) -> None:
        exc = self.assertRaises(ConfigError, renderer_classes, "ghost", "apple", self.extra_dir)
        self.assertIn(os.path.abspath(os.path.join(self.extra_dir, "ghost.py")), str(exc))
        exc = self.assertRaises(ConfigError, renderer_classes, "ghost", "apple", "")
        self.assertIn("ghost", str(exc))

    def test_app_type_must_be_a_module_name(self) -> None:
        self.write("evil", GOOD_MODULE % 1)
        for app_type in ("../evil", "a/b", "my-app", ""):
            exc = self.assertRaises(ConfigError, renderer_classes, app_type, "apple",
                                    os.path.join(self.extra_dir, "sub"))
            self.assertIn("not a valid module name", str(exc))

    def test_modules_are_cached_until_changed(self) -> None:
        path = self.write("good", GOOD_MODULE % 1)
        first = renderer_classes("good", "apple", self.extra_dir)
        self.assertIs(renderer_classes("good", "apple", self.extra_dir)[1], first[1])
        self.assertEqual(first[1](None, None, 0).payload, {"version": 1})

        self.write("good", GOOD_MODULE % 22)
        stat = os.stat(path)
        # a different size is enough, but make the mtime move too
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1000000000))
        second = renderer_classes("good", "apple", self.extra_dir)
        self.assertIsNot(second[1], first[1])
        self.assertEqual(second[1](None, None, 0).payload, {"version": 22})

    def test_failed_load_is_not_cached(self) -> None:
        self.write("flaky", "raise RuntimeError('boom')\n")
        exc = self.assertRaises(ConfigError, renderer_classes, "flaky", "apple", self.extra_dir)
        self.assertIn("RuntimeError: boom", str(exc))
        # fixed on disk: the next load succeeds
        self.write("flaky", (GOOD_MODULE % 3).replace("Good", "Flaky"))
        headers, payload = renderer_classes("flaky", "apple", self.extra_dir)
        self.assertEqual(payload.__name__, "AppleFlakyPayload")
