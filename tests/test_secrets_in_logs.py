"""Secrets never reach a log line, through the daemon's own logging set-up.

A client double logs, at DEBUG, the kinds of lines real clients write:
authorization headers (as text, dict and HTTP/2 header tuples), a provider
JWT, a legacy ``key=`` key, an OAuth token response, a service-account
private key, and an exception whose message holds a token.  Pushes run with
debug on; every line written to the log file is then checked.
"""

from __future__ import annotations

import json
import logging
import os
import secrets

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import defer
from twisted.internet.defer import succeed
from twisted.trial import unittest

from sylkpush import logs
from sylkpush.pns.base import PushClient, PushResult
from tests.doubles import log_to_file
from tests.helpers import SYLK_APPLE, post, start_server, wakeup

KEY = ec.generate_private_key(ec.SECP256R1())
PEM = KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption()).decode("ascii")
PEM_BODY = PEM.splitlines()[1]
JWT = jwt.encode({"iss": "TEAM123456", "iat": 1700000000}, KEY, algorithm="ES256", headers={"kid": "KEY1234567"})
if isinstance(JWT, bytes):  # PyJWT 1.x
    JWT = JWT.decode("ascii")
ACCESS_TOKEN = "ya29." + secrets.token_urlsafe(40)
LEGACY_KEY = "AAAA" + secrets.token_urlsafe(30)
REFRESH = secrets.token_hex(20)
SECRETS = {"jwt": JWT, "jwt signature": JWT.rsplit(".", 1)[1], "access token": ACCESS_TOKEN,
           "legacy key": LEGACY_KEY, "private key": PEM_BODY, "refresh token": REFRESH}

log = logging.getLogger("sylkpush.pns.secretive")


class SecretiveClient(PushClient):
    """Logs its credentials in every way a careless client could."""

    def send(self, push):
        rid = push.request_id
        log.debug("%s: outgoing headers %s", rid, {"authorization": f"bearer {JWT}", "apns-topic": "x"})
        log.debug("%s: header block %r", rid, [(b":method", b"POST"), (b"authorization", f"bearer {JWT}".encode())])
        log.debug("%s: legacy headers Authorization: key=%s", rid, LEGACY_KEY)
        log.debug("%s: legacy headers %r", rid, {"Authorization": f"key={LEGACY_KEY}"})
        log.debug("token answer %s", json.dumps({"access_token": ACCESS_TOKEN, "expires_in": 3599,
                                                 "refresh_token": REFRESH}))
        log.debug("new provider token %s for key KEY1234567", JWT)
        log.debug("loaded service account %s", json.dumps({"private_key": PEM, "client_email": "a@b.c"}))
        log.debug("loaded key file:\n%s", PEM)
        log.debug("retrying with Bearer %s", ACCESS_TOKEN)
        try:
            raise ValueError(f"refresh failed: access_token={ACCESS_TOKEN} assertion={JWT}")
        except ValueError:
            log.exception("%s: token refresh failed", rid)
        return succeed(PushResult(200, "OK", "https://push.test/x", {}))


class SecretsTests(unittest.TestCase):

    def setUp(self):
        self.log_file = log_to_file(self, debug=True)

    @defer.inlineCallbacks
    def test_no_secret_in_any_line(self):
        _, url = start_server(self, SYLK_APPLE, "[server]\ndebug = true\n",
                              find_client=lambda platform, extra_dir: SecretiveClient)
        for i in range(3):
            code, _, _ = yield post(url + "/push", wakeup(token=f"token-{i}"))
            self.assertEqual(code, 200)
        logs.stop_logging()  # flushes the listener thread
        with open(self.log_file, encoding="utf-8") as stream:
            text = stream.read()
        # the lines are there, with their request ids, and the debug bodies
        self.assertEqual(text.count("outgoing headers"), 3)
        self.assertIn("incoming_session-com.example.sylk-call-1@example.com: header block", text)
        self.assertIn("incoming body", text)
        self.assertIn("token refresh failed", text)
        self.assertIn("Traceback", text)
        self.assertIn("<redacted private key>", text)
        # with debug, Twisted's access line is logged at DEBUG
        self.assertEqual(text.count("DEBUG sylkpush.web.access"), 3)
        for name, secret in SECRETS.items():
            self.assertNotIn(secret, text, f"{name} leaked into the log")


class AccessLogTests(unittest.TestCase):

    @defer.inlineCallbacks
    def test_no_access_line_without_debug(self):
        from tests.doubles import capture_logs
        from tests.helpers import recording_client_class
        captured = capture_logs(self, logging.INFO)
        _, url = start_server(self, SYLK_APPLE, find_client=recording_client_class)
        code, _, _ = yield post(url + "/push", wakeup())
        self.assertEqual(code, 200)
        self.assertTrue(captured.matching("result 200 OK"))
        self.assertEqual([r for r in captured.records if r.name == "sylkpush.web.access"], [])


class RealClientSecretsTests(SecretsTests):
    """The same check with the real Apple (both auth modes) and Firebase
    (v1 and legacy) clients talking to the fakes, debug on."""

    @defer.inlineCallbacks
    def test_no_secret_in_any_line(self):
        from twisted.internet import reactor

        from sylkpush.testing.fake_apns import FakeAPNs
        from sylkpush.testing.fake_fcm import FakeFCM
        from tests.firebase_helpers import service_key

        apns = FakeAPNs(reactor, directory=os.path.abspath(self.mktemp()))
        fcm = FakeFCM(reactor, os.path.abspath(self.mktemp()), service_key=service_key(),
                      legacy_key=LEGACY_KEY)
        yield apns.start()
        yield fcm.start()
        self.addCleanup(apns.stop)
        self.addCleanup(fcm.stop)
        applications = (apns.applications_ini("com.example.token", auth="token")
                        + apns.applications_ini("com.example.cert", auth="certificate")
                        + fcm.applications_ini("com.example.v1")
                        + fcm.applications_ini("com.example.legacy", legacy=True))
        _, url = start_server(self, applications, "[server]\ndebug = true\n", find_client=None)
        token = "0a1b2c3d" * 8
        for app_id, platform in (("com.example.token", "apple"), ("com.example.cert", "apple"),
                                 ("com.example.v1", "firebase"), ("com.example.legacy", "firebase")):
            code, body, _ = yield post(url + "/push", wakeup(app_id=app_id, platform=platform, token=token))
            self.assertEqual(code, 200, body)
        logs.stop_logging()
        with open(self.log_file, encoding="utf-8") as stream:
            self.text = text = stream.read()
        self.assertIn("outgoing", text.lower())  # debug lines were written
        secrets_used = {f"provider JWT {i}": jwt_ for i, jwt_ in enumerate(apns.tokens_seen)}
        secrets_used.update({f"access token {i}": t for i, t in enumerate(set(fcm.authorizations))})
        secrets_used["legacy key"] = LEGACY_KEY
        for path in (apns.auth_key_file, apns.client_key_file):
            with open(path, encoding="ascii") as stream:
                secrets_used[f"key {path}"] = stream.read().splitlines()[1]
        with open(fcm.service_account_file, encoding="utf-8") as stream:
            secrets_used["service account key"] = json.load(stream)["private_key"].splitlines()[1]
        self.assertEqual(len([k for k in secrets_used if k.startswith("provider JWT")]), 1)
        self.assertTrue(any(k.startswith("access token") for k in secrets_used))
        for name, secret in secrets_used.items():
            self.assertNotIn(secret, text, f"{name} leaked into the log")


class HpackTraceSecretsTests(RealClientSecretsTests):
    """With debug_hpack as well: hpack's traces are written, but never an
    encoded header block (the provider token in it is beyond redaction)."""

    def setUp(self):
        super().setUp()
        for name in ("hpack", "h2"):
            self.addCleanup(logging.getLogger(name).setLevel, logging.getLogger(name).level)
        logs.setup_logging(foreground=True, debug=True, debug_hpack=True, log_file=self.log_file)  # again, with hpack

    @defer.inlineCallbacks
    def test_no_secret_in_any_line(self):
        yield super().test_no_secret_in_any_line()
        # the daemon's encoder (sylkpush.pns.h2frames.LiteralEncoder) writes no trace; the fakes' decoders do
        self.assertRegex(self.text, r"DEBUG hpack\.hpack: Decoded \(b'authorization', (b')?<redacted>")
        self.assertNotIn("Encoded header block", self.text)
        self.assertNotIn("Decoding b", self.text)
