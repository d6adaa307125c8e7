"""Validation rules of the wake-up request, without HTTP."""

from __future__ import annotations

from twisted.trial import unittest

from sylkpush.notification import ValidationError, parse_notification, parse_platform
from tests.helpers import wakeup


class NotificationTests(unittest.TestCase):

    def parse(self, app_type="sylk", **overrides):
        return parse_notification(wakeup(**overrides), app_type)

    def refused(self, app_type="sylk", **overrides):
        return self.assertRaises(ValidationError, self.parse, app_type, **overrides)

    def test_fields(self):
        n = self.parse(badge="3", silent="0", account="conf@example.com")
        self.assertEqual((n.app_id, n.platform, n.token, n.call_id), ("com.example.sylk", "apple", "a1b2c3d4", "call-1@example.com"))
        self.assertEqual((n.sip_from, n.sip_to, n.from_display_name, n.device_id),
                         ("alice@example.com", "bob@example.com", "Alice", "dev-1"))
        self.assertEqual((n.badge, n.silent, n.account), (3, False, "conf@example.com"))
        self.assertEqual(n.request_id, "incoming_session-com.example.sylk-call-1@example.com")
        self.assertTrue(n.is_voip and n.is_call)

    def test_silent_spellings(self):
        for value, expected in ((True, True), (False, False), (1, True), (0, False), ("1", True),
                                ("0", False), ("true", True), ("false", False)):
            self.assertEqual(self.parse(silent=value).silent, expected, value)
        for value in ("yes", 2, [], {}):
            self.assertEqual(self.refused(silent=value).field, "silent")

    def test_platform_aliases(self):
        for alias, platform in (("ios", "apple"), ("apns", "apple"), ("Android", "firebase"), ("fcm", "firebase")):
            self.assertEqual(parse_platform({"platform": alias}), platform)
        self.assertEqual(parse_platform({"platform": "mypns"}, custom=("mypns",)), "mypns")
        error = self.assertRaises(ValidationError, parse_platform, {"platform": "mypns"})
        self.assertEqual(str(error), "platform must be one of android, apns, apple, fcm, firebase, ios")

    def test_required_fields(self):
        for field in ("token", "call-id", "from", "to", "app-id", "platform"):
            error = self.refused(**{field.replace("-", "_"): None})
            self.assertEqual((error.field, error.rule), (field, "is required"))

    def test_media_type_rules(self):
        self.assertEqual(self.refused(media_type=None).field, "media-type")
        self.assertIsNone(self.parse(event="cancel", media_type=None).media_type)
        self.assertEqual(self.parse(event="transfer", media_type="image").media_type, "image")

    def test_deadline_class(self):
        self.assertTrue(self.parse(event="cancel", media_type=None).is_call)
        self.assertFalse(self.parse(event="message", media_type="chat").is_call)
        self.assertFalse(self.parse(event="message", media_type="chat").is_voip)

    def test_linphone_event(self):
        self.assertEqual(self.parse("linphone", event=None).event, "incoming_session")
        self.assertEqual(self.refused("linphone", event="message").rule,
                         "must be incoming_session for linphone applications")

    def test_badge(self):
        self.assertEqual(self.parse(badge=None).badge, 1)
        for value in (-1, True, "x", 1.5):
            self.assertEqual(self.refused(badge=value).field, "badge")

    def test_strings_only(self):
        for field in ("from", "device-id", "reason", "content"):
            self.assertEqual(self.refused(**{field.replace("-", "_"): 7}).rule, "must be a string")
