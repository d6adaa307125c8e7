"""Property-based tests of the /push parser and validator (hypothesis).

Whatever the body (arbitrary bytes, any JSON value, wake-up requests with
fields of any type), the answer is the documented JSON envelope with 200 (a
delivery), 400 or 404, never a 500 and never a logged traceback.  The real
PushResource is rendered with a DummyRequest, without the network, so
hundreds of examples run in a few seconds; the push client is the recording
double, which answers 200.
"""

from __future__ import annotations

import json
import logging
from io import BytesIO
from typing import Any, Dict, List, Tuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial import unittest
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from tests.helpers import LINPHONE_APPLE, SYLK_APPLE, SYLK_FIREBASE, RecordingClient, start_server, wakeup

EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = ["app-id", "platform", "token", "device-id", "call-id", "from", "to", "from-display-name",
        "from_display_name", "event", "media-type", "silent", "reason", "badge", "account", "content",
        "content-type", "filename", "filetype"]
APP_IDS = ["com.example.sylk", "org.linphone.phone", "com.example.other"]
PLATFORMS = ["apple", "ios", "apns", "firebase", "android", "fcm", "APPLE", "blackberry"]
EVENTS = ["incoming_session", "incoming_conference_request", "incoming_conference", "cancel", "message",
          "transfer", "bogus"]
MEDIA = ["audio", "video", "chat", "sms", "file-transfer", "image", "fax"]

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=12)
# values a field plausibly gets: the right kind, the documented choices, or junk
field_values = (st.sampled_from(APP_IDS + PLATFORMS + EVENTS + MEDIA + ["", "1", "0", "true", "false"])
                | json_values)


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class PushParserProperties(unittest.TestCase):

    def setUp(self):
        RecordingClient.instances.clear()
        self.server, _ = start_server(self, SYLK_APPLE + SYLK_FIREBASE + LINPHONE_APPLE)
        self.push = self.server.site.resource.children[b"push"]
        self.errors = _Errors()
        logging.getLogger().addHandler(self.errors)
        self.addCleanup(logging.getLogger().removeHandler, self.errors)

    def sent(self) -> int:
        return sum(len(client.sent) for client in RecordingClient.instances)

    def render(self, raw: bytes) -> Tuple[int, Dict[str, Any]]:
        """POST ``raw`` to the resource; (status, parsed envelope), checked for shape."""
        request = DummyRequest([b""])
        request.method = b"POST"
        request.content = BytesIO(raw)
        result = self.push.render(request)
        if result is not NOT_DONE_YET:
            request.write(result)
            request.finish()
        self.assertEqual(request.finished, 1, "not answered exactly once")
        envelope = json.loads(b"".join(request.written))
        self.assertEqual(set(envelope), {"code", "description", "data"})
        self.assertEqual(envelope["code"], request.responseCode)
        self.assertIsInstance(envelope["description"], str)
        self.assertIsInstance(envelope["data"], dict)
        self.assertEqual([r.getMessage() for r in self.errors.records], [], "an error was logged")
        return request.responseCode, envelope

    @EXAMPLES
    @given(st.binary(max_size=300))
    def test_arbitrary_bytes(self, raw: bytes):
        before = self.sent()
        code, _ = self.render(raw)
        self.assertIn(code, (200, 400, 404))
        self.assertEqual(self.sent() - before, 1 if code == 200 else 0)

    @EXAMPLES
    @given(json_values)
    def test_arbitrary_json_values(self, value: Any):
        code, envelope = self.render(json.dumps(value).encode())
        if not isinstance(value, dict):
            self.assertEqual((code, envelope["description"]), (400, "request body must be a JSON object"))
        else:
            self.assertIn(code, (400, 404))  # no app-id/platform of a configured app by chance

    @EXAMPLES
    @given(st.dictionaries(st.sampled_from(KEYS), field_values, max_size=len(KEYS)))
    def test_arbitrary_fields(self, body: Dict[str, Any]):
        before = self.sent()
        code, envelope = self.render(json.dumps(body).encode())
        self.assertIn(code, (200, 400, 404))
        self.assertEqual(self.sent() - before, 1 if code == 200 else 0)
        if code == 400 and "field" in envelope["data"]:
            self.assertIn(envelope["data"]["field"], KEYS + ["body"])

    @EXAMPLES
    @given(st.sampled_from(KEYS), field_values, st.booleans())
    def test_one_field_changed_in_a_valid_request(self, key: str, value: Any, remove: bool):
        body = wakeup(**{key.replace("-", "_"): None}) if remove else dict(wakeup(), **{key: value})
        before = self.sent()
        code, envelope = self.render(json.dumps(body).encode())
        self.assertIn(code, (200, 400, 404))
        self.assertEqual(self.sent() - before, 1 if code == 200 else 0)
        if code == 200:
            self.assertEqual(envelope["data"]["call_id"], body["call-id"])
            self.assertEqual(envelope["data"]["token"], body["token"])

    @EXAMPLES
    @given(st.text(max_size=40), st.binary(max_size=40))
    def test_broken_encodings_and_truncations(self, text: str, junk: bytes):
        valid = json.dumps(wakeup(from_display_name=text)).encode()
        for raw in (valid[: len(valid) // 2], junk + valid, valid + junk, valid.replace(b'"', b"", 1),
                    text.encode("utf-16")):
            code, _ = self.render(raw)
            self.assertIn(code, (200, 400, 404))
