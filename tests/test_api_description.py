"""resources/openapi.json describes the API the code implements."""

from __future__ import annotations

import json
import os

from twisted.trial import unittest

from sylkpush.notification import EVENT_ALIASES, EVENTS, MEDIA_TYPES, PLATFORM_ALIASES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ApiDescriptionTests(unittest.TestCase):

    def setUp(self):
        with open(os.path.join(ROOT, "resources", "openapi.json"), encoding="utf-8") as stream:
            self.doc = json.load(stream)
        self.wakeup = self.doc["paths"]["/push"]["post"]["requestBody"]["content"]["application/json"]["schema"]

    def test_enums_match_the_validator(self):
        properties = self.wakeup["properties"]
        self.assertEqual(set(properties["platform"]["enum"]), set(PLATFORM_ALIASES))
        self.assertEqual(set(properties["media-type"]["enum"]), set(MEDIA_TYPES))
        self.assertEqual(set(properties["event"]["enum"]), set(EVENTS) | set(EVENT_ALIASES))

    def test_every_field_the_validator_reads_is_described(self):
        from tests.helpers import wakeup
        every = dict(wakeup(), reason="r", badge=1, account="a", content="c", **{"content-type": "t"},
                     filename="f", filetype="t", from_display_name="x")
        self.assertEqual(set(every) - set(self.wakeup["properties"]), set())
        self.assertEqual(set(self.wakeup["required"]), {"app-id", "platform", "token", "call-id", "from", "to"})

    def test_routes(self):
        self.assertEqual(set(self.doc["paths"]), {"/", "/push", "/health", "/metrics"})
