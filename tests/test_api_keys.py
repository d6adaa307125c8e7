"""API keys: ``[api] keys_file``, Bearer keys on /push and /v2, reloaded on SIGHUP, never logged."""

from __future__ import annotations

import os
import signal

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from sylkpush.api_keys import ApiKeys, parse_keys
from sylkpush.config import ConfigError
from tests.doubles import capture_logs
from tests.helpers import SYLK_APPLE, keys_file, post, start_server, wakeup

OPS_KEY = "0123456789abcdef-ops-secret"
PROXY_KEY = "fedcba9876543210-proxy-secret"


def bearer(key):
    return {b"authorization": [b"Bearer " + key.encode()]}


class ParseTests(unittest.TestCase):

    def test_names_and_keys(self):
        keys = ApiKeys("keys", parse_keys(f"# operators\n\nops {OPS_KEY}\n  proxy   {PROXY_KEY}  \n", "keys"))
        self.assertEqual(keys.names, ("ops", "proxy"))
        self.assertEqual(keys.authenticate(b"Bearer " + OPS_KEY.encode()), "ops")
        self.assertEqual(keys.authenticate(b"bearer  " + PROXY_KEY.encode() + b" "), "proxy")
        for header in (None, b"", b"Bearer", b"Bearer ", b"Basic " + OPS_KEY.encode(), OPS_KEY.encode(),
                       b"Bearer " + OPS_KEY.encode()[:-1], b"Bearer " + OPS_KEY.encode() + b"x"):
            self.assertIsNone(keys.authenticate(header), header)

    def test_bad_files_name_the_line_never_the_key(self):
        for text, message in ((f"ops {OPS_KEY} extra\n", "keys line 1: expected 'name key'"),
                              ("ops\n", "keys line 1: expected 'name key'"),
                              ("# nothing\n", "keys holds no key (one 'name key' a line)"),
                              ("ops short-key\n", "keys line 1: the key of ops is shorter than 16 characters"),
                              (f"ops {OPS_KEY}\nops {PROXY_KEY}\n", "keys line 2: ops is named twice"),
                              (f"ops {OPS_KEY}\nproxy {OPS_KEY}\n",
                               "keys line 2: the key of proxy is also another name's key")):
            exc = self.assertRaises(ConfigError, parse_keys, text, "keys")
            self.assertEqual(str(exc), message)
            self.assertNotIn(OPS_KEY, str(exc))


class KeysServerTests(unittest.TestCase):

    def setUp(self):
        self.logs = capture_logs(self, redact=False)
        self.keys_file = keys_file(f"ops {OPS_KEY}", f"proxy {PROXY_KEY}")
        self.server, self.url = start_server(self, SYLK_APPLE,
                                             f"[server]\ndebug = true\n[api]\nkeys_file = {self.keys_file}\n",
                                             handle_sighup=True)

    def write_keys(self, text):
        with open(self.keys_file, "w") as stream:
            stream.write(text)

    @defer.inlineCallbacks
    def test_push_and_v2_need_a_key(self):
        for path, body in (("/push", wakeup()),
                           ("/v2/tokens/alice@example.com", {"app-id": "com.example.sylk", "platform": "apple",
                                                             "token": "a1", "device-id": "d1"})):
            code, answer, response = yield post(self.url + path, body)
            self.assertEqual((code, answer), (401, {"code": 401, "description": "authorization required",
                                                    "data": {}}))
            self.assertEqual(response.headers.getRawHeaders(b"www-authenticate"), [b'Bearer realm="sylk-pushserver"'])
            code, _, _ = yield post(self.url + path, body, headers=bearer(PROXY_KEY + "x"))
            self.assertEqual(code, 401)
            code, answer, _ = yield post(self.url + path, body, headers=bearer(PROXY_KEY))
            self.assertEqual(code, 200, answer)
        self.assertTrue(self.logs.matching("incoming request from 127.0.0.1 key proxy"))
        self.assertTrue(self.logs.matching("registration from 127.0.0.1 key proxy"))
        self.assertTrue(self.logs.matching("refused request from 127.0.0.1 to /push: 401 no valid API key"))

    @defer.inlineCallbacks
    def test_operations_paths_need_none(self):
        for path in ("/", "/health", "/metrics"):
            code, _, _ = yield post(self.url + path, None, method="GET")
            self.assertEqual(code, 200, path)

    @defer.inlineCallbacks
    def test_keys_never_reach_the_logs(self):
        yield post(self.url + "/push", wakeup(), headers=bearer(OPS_KEY))
        yield post(self.url + "/push", wakeup(), headers=bearer(PROXY_KEY[::-1]))
        self.server.reload_keys()
        self.assertTrue(self.logs.matching("API keys required on /push and /v2: ops, proxy"))
        for line in self.logs.lines:
            self.assertNotIn(OPS_KEY, line)
            self.assertNotIn(PROXY_KEY[::-1], line)

    @defer.inlineCallbacks
    def test_sighup_reads_the_file_again(self):
        newer = "0123456789abcdef-newer"
        self.write_keys(f"ops {newer}\n")
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(500):
            if self.logs.matching("API keys reloaded"):
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.assertTrue(self.logs.matching("API keys reloaded from"))
        code, _, _ = yield post(self.url + "/push", wakeup(), headers=bearer(newer))
        self.assertEqual(code, 200)
        code, _, _ = yield post(self.url + "/push", wakeup(), headers=bearer(OPS_KEY))
        self.assertEqual(code, 401)

    @defer.inlineCallbacks
    def test_a_broken_file_leaves_the_keys_in_force(self):
        self.write_keys("ops tooshort\n")
        applied = yield self.server.reload_keys()
        self.assertFalse(applied)
        self.assertTrue(self.logs.matching("the key of ops is shorter than 16 characters; "
                                           "the previous API keys stay in force"))
        code, _, _ = yield post(self.url + "/push", wakeup(), headers=bearer(OPS_KEY))
        self.assertEqual(code, 200)

    def test_a_missing_file_stops_the_start(self):
        exc = self.assertRaises(ConfigError, start_server, self, SYLK_APPLE, "[api]\nkeys_file = nowhere\n")
        self.assertIn("cannot read keys_file", str(exc))


class NoKeysTests(unittest.TestCase):

    @defer.inlineCallbacks
    def test_no_keys_file_no_check(self):
        _, url = start_server(self, SYLK_APPLE)
        code, _, _ = yield post(url + "/push", wakeup())
        self.assertEqual(code, 200)
