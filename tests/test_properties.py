"""Property-based tests (hypothesis) of the /push parser and validator and
of the configuration parser.

Whatever the body (arbitrary bytes, any JSON value, wake-up requests with
fields of any type or text, duplicate keys, deep nesting, any content type),
the answer is the documented JSON envelope with 200 (a delivery), 400, 404 or
415, never a 500, and nothing is logged at ERROR nor with a traceback.  The
real PushResource is rendered with a DummyRequest, without the network, so
hundreds of examples run in a few seconds; the push client is the recording
double, which answers 200.

Whatever general.ini and applications.ini hold, loading them either works or
raises ConfigError, never another exception; every section ends up an
application or a problem naming it, the real Apple and Firebase clients are
built from what passes without an unexpected error, and no error quotes a
value.

``SYLKPUSH_FUZZ_EXAMPLES`` sets the examples per property (default 150) for a
longer run.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from io import BytesIO
from typing import Any, Dict, List, Optional, Tuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial import unittest
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from sylkpush.notification import MULTILINE_FIELDS, UNSAFE_CHARACTERS, UNSAFE_IN_TEXT
from sylkpush.web import MAX_DEPTH
from tests.helpers import LINPHONE_APPLE, SYLK_APPLE, SYLK_FIREBASE, RecordingClient, start_server, wakeup

EXAMPLES = settings(max_examples=int(os.environ.get("SYLKPUSH_FUZZ_EXAMPLES", "150")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

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
    """Records logged at ERROR, or with a traceback at any level."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info or record.exc_text:
            self.records.append(record)


def watch_errors(testcase: unittest.TestCase) -> _Errors:
    errors = _Errors()
    root = logging.getLogger()
    root.addHandler(errors)
    testcase.addCleanup(root.removeHandler, errors)
    # sylkpush's INFO lines reach the handler too: nothing but ERROR is collected
    sylkpush = logging.getLogger("sylkpush")
    testcase.addCleanup(sylkpush.setLevel, sylkpush.level)
    sylkpush.setLevel(logging.INFO)
    return errors


class PushParserProperties(unittest.TestCase):

    def setUp(self):
        RecordingClient.instances.clear()
        self.server, _ = start_server(self, SYLK_APPLE + SYLK_FIREBASE + LINPHONE_APPLE)
        self.push = self.server.site.resource.children[b"push"]
        self.errors = watch_errors(self)

    def sent(self) -> int:
        return sum(len(client.sent) for client in RecordingClient.instances)

    def render(self, raw: bytes, content_type: Optional[bytes] = b"application/json") -> Tuple[int, Dict[str, Any]]:
        """POST ``raw`` to the resource; (status, parsed envelope), checked for shape."""
        request = DummyRequest([b""])
        request.method = b"POST"
        request.content = BytesIO(raw)
        if content_type is not None:
            request.requestHeaders.setRawHeaders(b"content-type", [content_type])
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
        self.assertEqual([r.getMessage() for r in self.errors.records], [], "an error or a traceback was logged")
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

    @EXAMPLES
    @given(st.sampled_from(KEYS), st.text(max_size=30))
    def test_any_text_in_any_field(self, key: str, text: str):
        """Control characters and lone surrogates included: refused naming the field."""
        code, envelope = self.render(json.dumps(dict(wakeup(), **{key: text})).encode())
        self.assertIn(code, (200, 400, 404))
        unsafe = UNSAFE_IN_TEXT if key in MULTILINE_FIELDS else UNSAFE_CHARACTERS
        if unsafe.search(text):
            self.assertEqual((code, envelope["data"]), (400, {"field": key}))

    @EXAMPLES
    @given(st.lists(st.tuples(st.sampled_from(KEYS), field_values), max_size=12))
    def test_repeated_keys(self, pairs: List[Tuple[str, Any]]):
        raw = ("{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in pairs) + "}").encode()
        code, envelope = self.render(raw)
        self.assertIn(code, (200, 400, 404))
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            self.assertEqual(code, 400)
            self.assertIn("more than once", envelope["description"])

    @EXAMPLES
    @given(st.integers(1, 5000), st.sampled_from("[{"))
    def test_any_depth(self, depth: int, bracket: str):
        opening, closing = ("[", "]") if bracket == "[" else ('{"a":', "}")
        raw = (opening * depth + "1" + closing * depth).encode()
        code, envelope = self.render(raw)
        self.assertEqual(code, 400)
        if depth > MAX_DEPTH:
            self.assertIn("nested deeper", envelope["description"])

    @EXAMPLES
    @given(st.one_of(st.none(), st.binary(max_size=40),
                     st.sampled_from([b"application/json", b"text/plain", b"application/x-www-form-urlencoded",
                                      b"multipart/form-data; boundary=x", b"application/ld+json", b"text/json"])))
    def test_any_content_type(self, content_type: Optional[bytes]):
        code, _ = self.render(json.dumps(wakeup()).encode(), content_type)
        media = (content_type or b"").split(b";")[0].strip().lower()
        if not media or media == b"application/json" or (media.endswith(b"+json") and b"/" in media):
            self.assertEqual(code, 200)
        else:
            self.assertEqual(code, 415)


# -- the configuration parser -------------------------------------------------------

#: keys whose values may show up in errors: names and identifiers, file paths, addresses
SHOWN = {"app_id", "app_type", "app_platform", "apple_certificate", "apple_key", "firebase_authorization_file",
         "tls_ca_file", "allowed_hosts", "cluster_contact_points"}
SECRET = "S3cr3tValue"
APP_KEYS = ["app_id", "app_type", "app_platform", "apple_certificate", "apple_key", "key_id", "team_id",
            "apple_push_url", "voip", "firebase_push_url", "firebase_authorization_file",
            "firebase_authorization_key", "tls_ca_file", "log_remote_urls", "log_remote_timeout", "log_remote_key"]
GENERAL_KEYS = ["host", "port", "return_async", "allowed_hosts", "log_to_file", "debug", "debug_hpack",
                "max_connections", "request_timeout",
                # [Cassandra]
                "cluster_contact_points", "keyspace", "table", "username", "password", "ca_file", "local_dc"]
ODD_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=25)


def config_values(credentials: Dict[str, str]) -> Any:
    """Values a key of either file plausibly gets, or junk."""
    return st.one_of(
        st.sampled_from(["sylk", "linphone", "apple", "ios", "firebase", "android", "fcm", "yes", "no", "true",
                         "0", "1", "2.5", "-3", "", "api.push.apple.com", "api.sandbox.push.apple.com:2197",
                         "a..b", "[::1]:443", "host:99999", "127.0.0.1", "10.1.2.3/8", ",", "10.0.0.0/8, ::1",
                         "https://fcm.googleapis.com/v1/projects/p/messages:send",
                         "https://fcm.googleäpis.com/v1/projects/p/messages:send", "http://127.0.0.1:9/log",
                         "ftp://x", "https://[::1", "key=AAAA", SECRET, SECRET + "\n  continued"]
                        + list(credentials.values())),
        ODD_TEXT)


def ini_text(draw: Any, keys: List[str], sections: List[str], credentials: Dict[str, str],
             templates: Tuple[Dict[str, str], ...] = ({},)) -> str:
    """An ini file: sections from working ``templates`` with some keys changed to anything."""
    lines = []
    for name in draw(st.lists(st.sampled_from(sections), max_size=len(sections), unique=True)):
        values = dict(draw(st.sampled_from(templates)))
        for key in draw(st.lists(st.sampled_from(keys), max_size=3, unique=True)):
            values[key] = draw(config_values(credentials))
        lines.append(f"[{name}]")
        lines += [f"{key} = {value}" for key, value in values.items()]
        if draw(st.integers(0, 9)) == 0:
            lines.append(draw(st.sampled_from([SECRET, f"{SECRET}: 1", "  " + SECRET, "; comment", "[unclosed"])))
    return "\n".join(lines) + "\n"


def app_templates(files: Dict[str, str]) -> Tuple[Dict[str, str], ...]:
    """Working sections of each kind, for the real clients to be built from."""
    apple = {"app_id": "com.example.a", "app_type": "sylk", "app_platform": "apple",
             "apple_push_url": "127.0.0.1:2197", "tls_ca_file": files["ca"]}
    firebase = {"app_id": "com.example.f", "app_type": "linphone", "app_platform": "firebase",
                "firebase_push_url": "https://127.0.0.1:9/v1/projects/fuzz/messages:send", "tls_ca_file": files["ca"]}
    return (dict(apple, apple_certificate=files["cert"], apple_key=files["key"]),
            dict(apple, apple_key=files["p8"], key_id="KEY1234567", team_id="TEAM123456", voip="yes"),
            dict(firebase, firebase_authorization_file=files["account"], log_remote_urls="http://127.0.0.1:9/l"),
            dict(firebase, firebase_authorization_key="AAAAlegacy"))


class ConfigParserProperties(unittest.TestCase):
    """General.ini and applications.ini of any content."""

    _credentials: Dict[str, str] = {}

    @classmethod
    def credential_files(cls) -> Dict[str, str]:
        """Certificate, keys and a service account, made once for all examples."""
        if cls._credentials:
            return cls._credentials
        from cryptography.hazmat.primitives import serialization
        from sylkpush.testing.certs import CertificateAuthority, new_ec_key, private_key_pem
        from tests.firebase_helpers import service_key

        directory = cls.directory = tempfile.mkdtemp(prefix="sylkpush-fuzz-")
        ca = CertificateAuthority()
        cert, key = ca.client("com.example.fuzz").write(directory, "client")
        p8 = os.path.join(directory, "AuthKey.p8")
        with open(p8, "wb") as stream:
            stream.write(private_key_pem(new_ec_key()))
        account = os.path.join(directory, "service-account.json")
        pem = service_key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()).decode("ascii")
        with open(account, "w") as stream:
            json.dump({"type": "service_account", "project_id": "fuzz", "private_key": pem,
                       "client_email": "fuzz@example.com", "token_uri": "https://oauth2.example.com/token"}, stream)
        cls._credentials.update(cert=cert, key=key, p8=p8, account=account, ca=ca.write(directory),
                                missing=os.path.join(directory, "missing.pem"))
        return cls._credentials

    def setUp(self):
        self.errors = watch_errors(self)
        self.credentials = self.credential_files()

    def check_message(self, message: str) -> None:
        """Only values of keys whose values are shown may be quoted; no traceback."""
        if SECRET in message:
            self.assertTrue(any(key in message for key in SHOWN), message)
        self.assertNotIn("Traceback", message)

    @EXAMPLES
    @given(st.data())
    def test_any_files(self, data: Any):
        from twisted.internet.task import Clock

        from sylkpush.config import ConfigError, load_applications, load_settings
        from sylkpush.app_registry import build_registry

        general = ini_text(data.draw, GENERAL_KEYS, ["server", "Cassandra"], {})
        applications = ini_text(data.draw, APP_KEYS, ["one", "two", "three"], self.credentials,
                                app_templates(self.credentials))
        directory = tempfile.mkdtemp(dir=self.directory)
        for name, text in (("general.ini", general), ("applications.ini", applications)):
            with open(os.path.join(directory, name), "w", encoding="utf-8") as stream:
                stream.write(text)
        try:
            settings = load_settings(directory)
            configs, problems = load_applications(settings)
        except ConfigError as exc:
            self.check_message(str(exc))
            return
        sections = {config.section for config in configs} | {section for section, _ in problems}
        self.assertLessEqual(sections, {"one", "two", "three"})
        registry, more = build_registry(settings, configs, Clock())
        for app in registry:
            if app.client is not None:
                app.client.stop()
        for section, reason in problems + more:
            self.check_message(reason)
            self.assertFalse(reason.startswith(("cannot be set up", "cannot be started")), reason)
        self.assertEqual([r.getMessage() for r in self.errors.records], [], "an error or a traceback was logged")
