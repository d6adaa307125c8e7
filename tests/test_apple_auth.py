"""Provider tokens on a Clock, and the settings AppleClient refuses."""

from __future__ import annotations

import dataclasses
import os

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from sylkpush.config import ConfigError
from sylkpush.pns.apple import AppleClient
from sylkpush.pns.apple_auth import TOKEN_LIFETIME, TokenAuth
from sylkpush.testing.certs import new_ec_key, private_key_pem, public_key_pem
from sylkpush.testing.fake_apns import FakeAPNs


class TokenAuthTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.key = new_ec_key()
        self.path = self.mktemp()
        with open(self.path, "wb") as stream:
            stream.write(private_key_pem(self.key))
        self.auth = TokenAuth(self.path, "KEY1234567", "TEAM123456", self.clock)

    def test_token_is_es256_with_kid_iss_iat(self):
        token = self.auth.token()
        self.assertEqual(jwt.get_unverified_header(token)["kid"], "KEY1234567")
        claims = jwt.decode(token, public_key_pem(self.key), algorithms=["ES256"])
        self.assertEqual(claims, {"iss": "TEAM123456", "iat": 1_700_000_000})
        self.assertEqual(self.auth.authorization(), "bearer " + token)

    def test_token_reused_then_renewed_by_age(self):
        first = self.auth.token()
        self.assertGreaterEqual(TOKEN_LIFETIME, 20 * 60)
        self.assertLessEqual(TOKEN_LIFETIME, 50 * 60)
        self.clock.advance(TOKEN_LIFETIME - 1)
        self.assertEqual(self.auth.token(), first)
        self.clock.advance(1)
        second = self.auth.token()
        self.assertNotEqual(second, first)
        self.assertEqual(jwt.decode(second, options={"verify_signature": False})["iat"],
                         1_700_000_000 + TOKEN_LIFETIME)
        self.assertEqual(self.auth.generated, 2)

    def test_expired_renews_only_the_current_token(self):
        old = self.auth.authorization()
        self.clock.advance(1)
        self.auth.expired(old)
        new = self.auth.authorization()
        self.assertNotEqual(new, old)
        # late answers to requests that carried the old token change nothing
        self.auth.expired(old)
        self.assertEqual(self.auth.authorization(), new)
        self.assertEqual(self.auth.generated, 2)


class ClientSettingsTests(TestCase):
    def setUp(self):
        self.fake = FakeAPNs(Clock(), directory=self.mktemp())
        self.clock = Clock()

    def refused(self, pattern: str, **changes):
        app = dataclasses.replace(self.fake.app_config(auth=changes.pop("auth", "token")), **changes)
        with self.assertRaisesRegex(ConfigError, pattern):
            AppleClient(app, self.clock)

    def write(self, data: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as stream:
            stream.write(data)
        return path

    def test_good_settings_accepted(self):
        self.assertEqual(AppleClient(self.fake.app_config(auth="token"), self.clock).auth.mode, "token")
        client = AppleClient(self.fake.app_config(auth="certificate"), self.clock)
        self.assertEqual(client.auth.mode, "certificate")
        self.assertEqual(client.status()["state"], "stopped")

    def test_neither_auth(self):
        self.refused("neither", apple_key="", key_id="", team_id="")

    def test_key_id_without_team_id(self):
        self.refused("team_id is missing", team_id="")

    def test_team_id_without_key_id(self):
        self.refused("key_id is missing", key_id="")

    def test_token_auth_without_key(self):
        self.refused("needs apple_key", apple_key="")

    def test_key_unreadable(self):
        self.refused("cannot read apple_key", apple_key=os.path.join(self.mktemp(), "missing.p8"))

    def test_key_not_pem(self):
        self.refused("not an unencrypted PEM private key", apple_key=self.write(b"not a key"))

    def test_key_not_p256(self):
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        self.refused("P-256", apple_key=self.write(pem))
        p384 = ec.generate_private_key(ec.SECP384R1())
        pem = p384.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
        self.refused("P-256", apple_key=self.write(pem))

    def test_key_without_certificate(self):
        self.refused("apple_key is set without apple_certificate", auth="certificate",
                     apple_certificate="")

    def test_certificate_unusable(self):
        self.refused("cannot load the certificate", auth="certificate",
                     apple_certificate=self.write(b"garbage"))

    def test_ca_file_unusable(self):
        self.refused("no PEM certificate", tls_ca_file=self.write(b"garbage"))
