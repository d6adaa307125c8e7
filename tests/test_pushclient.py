"""scripts/sylk-pushclient (SPEC §12) run as a subprocess against a started server."""

from __future__ import annotations

import json
import os
import sys

from twisted.internet import defer, utils
from twisted.trial import unittest

from sylkpush.pns.base import PushResult
from tests.helpers import SYLK_APPLE, RecordingClient, keys_file, start_server
from tests.test_remote_log import free_port

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "sylk-pushclient")


def run(*args):
    """(stdout, stderr, exit code) of the script."""
    return utils.getProcessOutputAndValue(sys.executable, [SCRIPT] + list(args), env=dict(os.environ))


def call(url, *extra, token="a1b2c3d4"):
    return run("--url", url, "--platform", "ios", "--appid", "com.example.sylk", "--token", token,
               "--deviceid", "dev-1", "--callid", "call-9", "--event", "incoming_session",
               "--from", "alice@example.com", "--from_name", "Alice", "--to", "bob@example.com",
               "--silent", "false", *extra)


class PushClientScriptTests(unittest.TestCase):

    def setUp(self):
        RecordingClient.instances = []
        self.server, base = start_server(self, SYLK_APPLE)
        self.url = base + "/push"

    @defer.inlineCallbacks
    def test_delivered_exits_0(self):
        out, err, code = yield call(self.url, "--mediatype", "video")
        self.assertEqual(code, 0, err)
        answer = json.loads(out)
        self.assertEqual(answer["code"], 200)
        self.assertEqual(answer["data"]["call_id"], "call-9")
        [client] = RecordingClient.instances
        [push] = client.sent
        self.assertEqual(push.payload["media-type"], "video")
        self.assertEqual(push.payload["from_display_name"], "Alice")

    @defer.inlineCallbacks
    def test_refused_push_exits_1(self):
        client = self.server.registry.get("com.example.sylk", "apple").client
        client.answers["gone"] = PushResult(410, "Unregistered", "https://push.test/gone")
        out, _, code = yield call(self.url, "--mediatype", "audio", token="gone")
        self.assertEqual(code, 1)
        self.assertEqual(json.loads(out)["code"], 410)

    @defer.inlineCallbacks
    def test_invalid_request_exits_1(self):
        out, _, code = yield run("--url", self.url, "--platform", "apple", "--appid", "org.unknown",
                                 "--token", "t", "--callid", "c", "--from", "a", "--to", "b",
                                 "--mediatype", "audio")
        self.assertEqual(code, 1)
        self.assertEqual(json.loads(out)["code"], 404)

    @defer.inlineCallbacks
    def test_cancel_needs_no_media_type(self):
        _, err, code = yield call(self.url, "--event", "cancel", "--reason", "answered elsewhere")
        self.assertEqual(code, 0, err)
        [push] = RecordingClient.instances[0].sent
        self.assertEqual(push.payload["reason"], "answered elsewhere")

    @defer.inlineCallbacks
    def test_usage_errors_exit_2(self):
        _, err, code = yield call(self.url)  # no --mediatype for a call
        self.assertEqual(code, 2)
        self.assertIn(b"--mediatype is required", err)
        _, _, code = yield run("--platform", "apple")
        self.assertEqual(code, 2)
        self.assertEqual(RecordingClient.instances[0].sent, [])

    @defer.inlineCallbacks
    def test_unreachable_server_exits_2(self):
        _, err, code = yield call(f"http://127.0.0.1:{free_port()}/push", "--mediatype", "audio")
        self.assertEqual(code, 2)
        self.assertIn(b"cannot reach", err)


class ApiKeyTests(unittest.TestCase):

    @defer.inlineCallbacks
    def test_key_from_the_environment(self):
        _, base = start_server(self, SYLK_APPLE, f"[api]\nkeys_file = {keys_file('proxy 0123456789abcdef0123')}\n")
        out, _, code = yield call(base + "/push", "--mediatype", "audio")
        self.assertEqual((code, json.loads(out)["code"]), (1, 401))
        out, _, code = yield utils.getProcessOutputAndValue(
            sys.executable, [SCRIPT, "--url", base + "/push", "--platform", "ios", "--appid", "com.example.sylk",
                             "--token", "t", "--callid", "c", "--from", "a", "--to", "b", "--mediatype", "audio"],
            env=dict(os.environ, SYLK_PUSHSERVER_API_KEY="0123456789abcdef0123"))
        self.assertEqual((code, json.loads(out)["code"]), (0, 200))
