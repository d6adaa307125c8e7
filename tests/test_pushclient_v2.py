"""scripts/sylk-pushclient-v2 (the original's command line) run as a subprocess against a started server."""

from __future__ import annotations

import json
import os
import sys

from twisted.internet import defer, utils
from twisted.trial import unittest

from sylkpush.pns.base import PushResult
from tests.helpers import SYLK_APPLE, SYLK_FIREBASE, RecordingClient, keys_file, start_server
from tests.test_remote_log import free_port

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "sylk-pushclient-v2")
ACCOUNT = "alice@example.com"


def run(*args, env=None):
    """(stdout, stderr, exit code) of the script."""
    return utils.getProcessOutputAndValue(sys.executable, [SCRIPT] + list(args), env=dict(os.environ, **(env or {})))


def answer_of(out: bytes):
    """The status and JSON answer in the script's ``<Action> request to <url> - <code>: <answer>`` line."""
    head, _, text = out.decode().splitlines()[0].partition(": ")
    return int(head.rsplit(" ", 1)[1]), json.loads(text)


class PushClientV2Tests(unittest.TestCase):

    def setUp(self):
        RecordingClient.instances = []
        self.server, self.url = start_server(self, SYLK_APPLE + SYLK_FIREBASE)

    def apple(self):
        return self.server.registry.get("com.example.sylk", "apple").client

    def add(self, *extra, device="<urn:uuid:5e1f-d0d0>", token="voip-alert", platform="ios"):
        return run("--url", self.url + "/", "--account", ACCOUNT, "add", "--platform", platform,
                   "--appid", "com.example.sylk", "--token", token, "--deviceid", device, *extra)

    def push(self, *extra):
        return run("--url", self.url, "--account", ACCOUNT, "push", "--callid", "call-3",
                   "--from", '"bob@example.com"', "--from_name", '"Bob"', "--to", ACCOUNT, *extra)

    @defer.inlineCallbacks
    def test_add_push_remove(self):
        out, err, code = yield self.add("--user_agent", "Sylk/5", "--silent", "0")
        self.assertEqual(code, 0, err)
        self.assertTrue(out.startswith(f"Add request to {self.url}/v2/tokens/{ACCOUNT} - 200: ".encode()), out)
        status, answer = answer_of(out)
        self.assertEqual(answer["data"], {"app-id": "com.example.sylk", "platform": "apple", "token": "voip",
                                          "background-token": "alert", "device-id": "5e1f-d0d0", "silent": False,
                                          "user-agent": "Sylk/5"})
        out, err, code = yield self.push("--mediatype", "audio, video")
        self.assertEqual(code, 0, err)
        status, answer = answer_of(out)
        self.assertEqual((status, answer["description"]), (200, "push notification responses"))
        [push] = self.apple().sent
        self.assertEqual((push.token, push.payload["media-type"], push.payload["from_uri"],
                          push.payload["from_display_name"]), ("voip", "video", "bob@example.com", "Bob"))
        out, err, code = yield self.push("--event", "cancel", "--reason", "busy", "--deviceid",
                                         "<urn:uuid:5e1f-d0d0>")
        self.assertEqual(code, 0, err)
        self.assertIn(b"/push/%3Curn%3Auuid%3A5e1f-d0d0%3E - 200", out)
        self.assertEqual(self.apple().sent[-1].token, "alert")
        remove = ("--url", self.url, "--account", ACCOUNT, "remove", "--appid", "com.example.sylk",
                  "--deviceid", "5e1f-d0d0")
        out, err, code = yield run(*remove)
        self.assertEqual(code, 0, err)
        self.assertTrue(out.startswith(f"Remove request to {self.url}/v2/tokens/{ACCOUNT} - 200".encode()), out)
        out, _, code = yield run(*remove)
        self.assertEqual(code, 1)
        self.assertEqual(answer_of(out)[0], 404)
        self.assertIn(b"failed: 404", out)

    @defer.inlineCallbacks
    def test_failures_exit_1(self):
        out, _, code = yield self.push()
        self.assertEqual((code, answer_of(out)[0]), (1, 404))
        yield self.add(token="gone")
        self.apple().answers["gone"] = PushResult(503, "unreachable", "https://push.test/gone")
        out, _, code = yield self.push()
        self.assertEqual((code, answer_of(out)[0]), (1, 503))
        out, _, code = yield run("--url", f"http://127.0.0.1:{free_port()}", "--account", ACCOUNT, "remove",
                                 "--appid", "a", "--deviceid", "d")
        self.assertEqual(code, 1)
        self.assertIn(b"failed: connection error", out)

    @defer.inlineCallbacks
    def test_usage_errors_exit_2(self):
        for args in (["add", "--platform", "apple"], ["--account", ACCOUNT, "add", "--appid", "a"],
                     ["--account", ACCOUNT], ["--account", ACCOUNT, "push", "--callid", "c", "--from", "f",
                                              "--to", "t", "--badge", "many"]):
            _, _, code = yield run("--url", self.url, *args)
            self.assertEqual(code, 2, args)


class ApiKeyTests(unittest.TestCase):

    @defer.inlineCallbacks
    def test_key_from_the_environment(self):
        _, url = start_server(self, SYLK_APPLE, f"[api]\nkeys_file = {keys_file('proxy 0123456789abcdef0123')}\n")
        args = ("--url", url, "--account", ACCOUNT, "add", "--platform", "apple", "--appid", "com.example.sylk",
                "--token", "t", "--deviceid", "d")
        out, _, code = yield run(*args)
        self.assertEqual((code, answer_of(out)[0]), (1, 401))
        out, _, code = yield run(*args, env={"SYLK_PUSHSERVER_API_KEY": "0123456789abcdef0123"})
        self.assertEqual((code, answer_of(out)[0]), (0, 200))
