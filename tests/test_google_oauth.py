"""Service-account loading, JWT assertions and the access-token cache."""

from __future__ import annotations

import base64
import json
import os
import threading

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial import unittest
from treq.client import HTTPClient
from twisted.web.client import Agent, HTTPConnectionPool

from sylkpush.config import ConfigError
from sylkpush.pns import google_oauth
from sylkpush.pns.firebase import _VerifiedTLSPolicy
from sylkpush.pns.google_oauth import AccessTokenSource, TokenError, load_service_account, make_assertion
from sylkpush.testing.fake_fcm import write_service_account
from tests.firebase_helpers import FakeFCMMixin, wait_until


class LoadServiceAccountTests(unittest.TestCase):

    def write(self, content: str) -> str:
        path = self.mktemp()
        with open(path, "w") as stream:
            stream.write(content)
        return path

    def test_missing_file(self):
        error = self.assertRaises(ConfigError, load_service_account, "/nonexistent/sa.json")
        self.assertIn("cannot read", str(error))

    def test_not_json(self):
        error = self.assertRaises(ConfigError, load_service_account, self.write("{not json"))
        self.assertIn("not JSON", str(error))

    def test_missing_fields(self):
        error = self.assertRaises(ConfigError, load_service_account,
                                  self.write(json.dumps({"type": "service_account", "client_email": "a@b"})))
        self.assertIn("token_uri", str(error))
        self.assertIn("private_key", str(error))

    def test_wrong_type(self):
        error = self.assertRaises(ConfigError, load_service_account,
                                  self.write(json.dumps({"type": "authorized_user"})))
        self.assertIn("not a service account", str(error))

    def test_bad_key_is_not_shown(self):
        secret = "-----BEGIN PRIVATE KEY-----\nTOPSECRETMATERIAL\n-----END PRIVATE KEY-----\n"
        path = self.write(json.dumps({"type": "service_account", "client_email": "a@b.example",
                                      "token_uri": "https://oauth2.example/token", "private_key": secret}))
        error = self.assertRaises(ConfigError, load_service_account, path)
        self.assertIn("cannot be used", str(error))
        self.assertNotIn("TOPSECRETMATERIAL", str(error))


class AssertionTests(FakeFCMMixin, unittest.TestCase):
    """The fake's token endpoint checks assertions as Google does; so do we here."""

    def test_assertion_accepted(self):
        account = load_service_account(self.fake.service_account_file)
        assertion = make_assertion(account, self.fake.wall_time()).decode("ascii")
        self.assertIsNone(self.fake.check_assertion(assertion))

    def test_tampered_signature_refused(self):
        account = load_service_account(self.fake.service_account_file)
        head, claims, signature = make_assertion(account, self.fake.wall_time()).decode("ascii").split(".")
        forged = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
        forged["scope"] += " https://www.googleapis.com/auth/cloud-platform"
        claims = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode()
        self.assertEqual(self.fake.check_assertion(".".join((head, claims, signature)))[0], "invalid_grant")

    def test_stale_assertion_refused(self):
        account = load_service_account(self.fake.service_account_file)
        assertion = make_assertion(account, self.fake.wall_time() - 7200).decode("ascii")
        error, description = self.fake.check_assertion(assertion)
        self.assertEqual(error, "invalid_grant")
        self.assertIn("iat and exp", description)

    def test_wrong_scope_refused(self):
        account = load_service_account(self.fake.service_account_file)
        assertion = make_assertion(account, self.fake.wall_time(),
                                   scopes=("https://www.googleapis.com/auth/devstorage.read_only",))
        self.assertEqual(self.fake.check_assertion(assertion.decode("ascii"))[0], "invalid_scope")


class AccessTokenSourceTests(FakeFCMMixin, unittest.TestCase):

    def source(self, clock=None) -> AccessTokenSource:
        account = load_service_account(self.fake.service_account_file)
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        agent = Agent(reactor, contextFactory=_VerifiedTLSPolicy(self.fake.ca_file, ["127.0.0.1"]), pool=pool)
        source = AccessTokenSource(account, HTTPClient(agent), reactor, clock)
        self.addCleanup(source.stop)
        return source

    @defer.inlineCallbacks
    def test_one_request_for_concurrent_callers(self):
        source = self.source()
        tokens = yield defer.gatherResults([source.get() for _ in range(20)])
        self.assertEqual(set(tokens), {self.fake.issued[0]})
        self.assertEqual(self.fake.token_requests, 1)
        again = yield source.get()
        self.assertEqual(again, tokens[0])
        self.assertEqual(self.fake.token_requests, 1)

    @defer.inlineCallbacks
    def test_signing_runs_off_the_reactor_thread(self):
        threads = []
        original = google_oauth.make_assertion

        def recording(*args, **kwargs):
            threads.append(threading.current_thread())
            return original(*args, **kwargs)
        self.patch(google_oauth, "make_assertion", recording)
        yield self.source().get()
        self.assertEqual(len(threads), 1)
        self.assertIsNot(threads[0], threading.main_thread())

    @defer.inlineCallbacks
    def test_renewed_early_in_the_background(self):
        clock = Clock()
        source = self.source(clock)
        first = yield source.get()
        clock.advance(3600 - 300 - 1)
        self.assertEqual((yield source.get()), first)
        self.assertEqual(self.fake.token_fetches, 1)
        clock.advance(2)  # inside the 5 minute margin: still valid, renewed in the background
        self.assertEqual((yield source.get()), first)
        yield wait_until(lambda: self.fake.token_fetches == 2 and not source.fetching)
        self.assertEqual((yield source.get()), self.fake.issued[1])
        self.assertEqual(source.refreshes, 2)

    @defer.inlineCallbacks
    def test_expired_token_waits_for_a_new_one(self):
        clock = Clock()
        source = self.source(clock)
        first = yield source.get()
        clock.advance(3601)
        second = yield source.get()
        self.assertNotEqual(first, second)
        self.assertEqual(self.fake.token_fetches, 2)

    @defer.inlineCallbacks
    def test_invalidate_only_the_current_token(self):
        source = self.source()
        first = yield source.get()
        source.invalidate("some older token")
        self.assertEqual((yield source.get()), first)
        source.invalidate(first)
        self.assertNotEqual((yield source.get()), first)
        self.assertEqual(self.fake.token_fetches, 2)

    @defer.inlineCallbacks
    def test_refused_assertion_is_permanent(self):
        # a service account file whose key the fake does not know
        other = self.mktemp()
        os.makedirs(other)
        path, _ = write_service_account(other, self.fake.token_uri, "sylk-test")
        source = self.source()
        source.account = load_service_account(path)
        error = yield self.assertFailure(source.get(), TokenError)
        self.assertTrue(error.permanent)
        self.assertIn("invalid_grant", error.reason)

    @defer.inlineCallbacks
    def test_server_error_is_temporary(self):
        self.fake.fail_token_requests(1, 503)
        source = self.source()
        error = yield self.assertFailure(source.get(), TokenError)
        self.assertFalse(error.permanent)
        token = yield source.get()
        self.assertEqual(token, self.fake.issued[0])
