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
        self.assertEqual(set(self.doc["paths"]), {"/", "/push", "/health", "/metrics", "/v2/tokens/{account}",
                                                  "/v2/tokens/{account}/push",
                                                  "/v2/tokens/{account}/push/{device-id}"})
        self.assertEqual(set(self.doc["paths"]["/v2/tokens/{account}"]), {"parameters", "post", "delete"})

    def test_v2_bodies_match_the_parsers(self):
        from sylkpush.tokens import Device
        from sylkpush.v2.account_push import device_fields
        from sylkpush.v2.registration import REGISTRATION_FIELDS, REMOVAL_FIELDS, registration_data
        schemas = self.doc["components"]["schemas"]
        self.assertEqual(set(schemas["Registration"]["properties"]), set(REGISTRATION_FIELDS))
        self.assertEqual(set(schemas["Registration"]["properties"]["platform"]["enum"]), set(PLATFORM_ALIASES))
        self.assertEqual(set(schemas["Removal"]["properties"]), set(REMOVAL_FIELDS))
        stored = registration_data(Device("u", "d", "dev", "app", "t", None, "apple", True, None))
        self.assertEqual(set(schemas["StoredDevice"]["properties"]), set(stored))
        # a push to an account: the /push fields, less those each device supplies
        supplied = set(device_fields(Device("u", "d", "dev", "app", "t", None, "apple", True, None), "t"))
        self.assertEqual(set(schemas["AccountPush"]["properties"]), set(self.wakeup["properties"]) - supplied)
        self.assertEqual(set(schemas["AccountPush"]["required"]), set(self.wakeup["required"]) - supplied)
        self.assertEqual(schemas["PushResult"],
                         self.doc["paths"]["/push"]["post"]["responses"]["200"]["content"]["application/json"]
                         ["schema"]["properties"]["data"])

    def test_every_operation_that_pushes_or_stores_takes_a_key(self):
        from sylkpush.web import Root
        for path, operations in self.doc["paths"].items():
            for method, operation in operations.items():
                if method == "parameters":
                    continue
                protected = path.split("/")[1].encode() in Root.protected
                self.assertEqual("401" in operation["responses"], protected, (path, method))
                self.assertEqual(operation.get("security"), [{}, {"apiKey": []}] if protected else None)
