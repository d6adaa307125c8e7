"""scripts/sylk-pushclient run as a subprocess against a started server.

The command lines are those the original sylk-pushserver's client accepts
(its --help, and the OpenSIPS example that ships with it): they must keep
their meaning, defaults and exit codes.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import sys

from twisted.internet import defer, utils
from twisted.internet.defer import Deferred
from twisted.trial import unittest

from sylkpush.dispatch import CALL_DEADLINE, OTHER_DEADLINE
from sylkpush.notification import CALL_MEDIA, PLATFORM_ALIASES
from sylkpush.pns.base import PushResult
from tests.helpers import SYLK_APPLE, SYLK_FIREBASE, RecordingClient, keys_file, start_server
from tests.test_remote_log import free_port

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "sylk-pushclient")
VOIP, BACKGROUND = "6688aa71a883fe", "71a883fe6688bb"


def load_script():
    """The script as a module, to check its constants against the server's."""
    loader = importlib.machinery.SourceFileLoader("sylk_pushclient", SCRIPT)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def run(*args):
    """(stdout, stderr, exit code) of the script."""
    return utils.getProcessOutputAndValue(sys.executable, [SCRIPT] + list(args), env=dict(os.environ))


def answer_of(out):
    """The server's JSON answer at the end of the script's first line."""
    line = out.decode("utf-8").splitlines()[0]
    return json.loads(line[line.index("{"):])


class PushClientScriptTests(unittest.TestCase):

    def setUp(self):
        RecordingClient.instances = []
        self.server, base = start_server(self, SYLK_APPLE + SYLK_FIREBASE)
        self.url = base + "/push"
        self.requests = []  # the requests as the server parsed them
        self.server.dispatcher.observers.append(lambda prepared, _: self.requests.append(prepared.notification))

    @defer.inlineCallbacks
    def test_every_option_of_the_original(self):
        out, err, code = yield run(
            "--url", self.url, "--platform", "ios", "--appid", "com.example.sylk", "--token", VOIP,
            "--deviceid", "dev-1", "--callid", "call-9", "--event", "incoming_session",
            "--from", "alice@example.com", "--from_name", "Alice", "--to", "bob@example.com",
            "--silent", "0", "--mediatype", "video")
        self.assertEqual(code, 0, err)
        self.assertTrue(out.startswith(f"incoming_session push for call-9 to {self.url} response 200 OK: ".encode()))
        self.assertEqual(answer_of(out)["data"]["call_id"], "call-9")
        [request] = self.requests
        self.assertEqual((request.platform, request.token, request.device_id, request.event, request.media_type),
                         ("apple", VOIP, "dev-1", "incoming_session", "video"))
        self.assertEqual((request.sip_from, request.from_display_name, request.sip_to, request.silent),
                         ("alice@example.com", "Alice", "bob@example.com", False))

    @defer.inlineCallbacks
    def test_original_defaults(self):
        """--url, --mediatype, --silent and --deviceid left out, as the original allowed for all but --url."""
        _, err, code = yield run("--url", self.url, "--platform", "apple", "--appid", "com.example.sylk",
                                 "--token", VOIP, "--callid", "c-1", "--from", '"alice@example.com"',
                                 "--to", "bob@example.com")
        self.assertEqual(code, 0, err)
        [request] = self.requests
        self.assertEqual((request.media_type, request.silent, request.event), ("audio", True, "incoming_session"))
        self.assertEqual((request.sip_from, request.from_display_name), ("alice@example.com", "alice@example.com"))

    @defer.inlineCallbacks
    def test_opensips_example_call_and_cancel(self):
        """The original's config/opensips.cfg: --opt="value", "audio, video" media, quoted names, A-B tokens."""
        common = [f'--url={self.url}', '--platform=ios', '--appid=com.example.sylk',
                  '--from_name="Alice Smith"', '--mediatype=audio, video',
                  f'--token={VOIP}-{BACKGROUND}', '--deviceid=<urn:uuid:5f3e-11>', '--callid=abc@10.0.0.1',
                  '--from=alice@example.com', '--to=bob@example.com']
        _, err, code = yield run(*common, "--event=incoming_session")
        self.assertEqual(code, 0, err)
        _, err, code = yield run(*common, "--event=cancel", "--reason=answered elsewhere")
        self.assertEqual(code, 0, err)
        call, cancel = self.requests
        self.assertEqual((call.token, call.media_type, call.from_display_name, call.device_id),
                         (VOIP, "video", "Alice Smith", "<urn:uuid:5f3e-11>"))
        self.assertEqual((cancel.token, cancel.event, cancel.reason), (BACKGROUND, "cancel", "answered elsewhere"))

    @defer.inlineCallbacks
    def test_firebase_tokens_are_never_split(self):
        token = "cXz9:APA91bH-Rk2"
        _, err, code = yield run("--url", self.url, "--platform", "android", "--appid", "com.example.sylk",
                                 "--token", token, "--deviceid", "d", "--callid", "c", "--event", "cancel",
                                 "--from", "a@example.com", "--to", "b@example.com")
        self.assertEqual(code, 0, err)
        [request] = self.requests
        self.assertEqual((request.platform, request.token), ("firebase", token))

    @defer.inlineCallbacks
    def test_new_options_reach_the_request(self):
        _, err, code = yield run("--url", self.url, "--platform", "apple", "--appid", "com.example.sylk",
                                 "--token", f"{VOIP}-{BACKGROUND}", "--callid", "m-1", "--event", "message",
                                 "--mediatype", "sms", "--from", "a@example.com", "--to", "b@example.com",
                                 "--content", "hello", "--content-type", "text/plain", "--badge", "3",
                                 "--silent", "yes")
        self.assertEqual(code, 0, err)
        [request] = self.requests
        self.assertEqual((request.token, request.event, request.media_type), (BACKGROUND, "message", "sms"))
        self.assertEqual((request.content, request.content_type, request.badge, request.silent),
                         ("hello", "text/plain", 3, True))

    @defer.inlineCallbacks
    def test_transfer_metadata(self):
        _, err, code = yield run("--url", self.url, "--platform", "firebase", "--appid", "com.example.sylk",
                                 "--token", "t", "--callid", "f-1", "--event", "transfer",
                                 "--mediatype", "file-transfer", "--from", "a@example.com", "--to", "b@example.com",
                                 "--filename", "cat.jpg", "--filetype", "image/jpeg")
        self.assertEqual(code, 0, err)
        [request] = self.requests
        self.assertEqual((request.event, request.filename, request.filetype), ("transfer", "cat.jpg", "image/jpeg"))

    @defer.inlineCallbacks
    def test_purged_token_exits_1(self):
        self.server.registry.get("com.example.sylk", "apple").client.answers["gone"] = PushResult(
            410, "Unregistered", "https://push.test/gone")
        out, _, code = yield run("--url", self.url, "--platform", "apple", "--appid", "com.example.sylk",
                                 "--token", "gone", "--deviceid", "d", "--callid", "c-410",
                                 "--from", "a@example.com", "--to", "b@example.com")
        self.assertEqual(code, 1)
        first, second = out.decode().splitlines()
        self.assertTrue(first.startswith(f"incoming_session push for c-410 to {self.url} failed: 410: "))
        self.assertEqual(answer_of(out)["code"], 410)
        self.assertEqual(second, "Token gone must be purged")

    @defer.inlineCallbacks
    def test_refusals_exit_1(self):
        """What the server refuses exits 1 as in the original, not 2: unknown
        application, media type or event, a --silent it cannot read."""
        base = ["--url", self.url, "--platform", "apple", "--token", "t", "--callid", "c",
                "--from", "a@example.com", "--to", "b@example.com"]
        for extra, field in [(["--appid", "org.unknown"], None),
                             (["--appid", "com.example.sylk", "--mediatype", "fax"], "media-type"),
                             (["--appid", "com.example.sylk", "--event", "ring"], "event"),
                             (["--appid", "com.example.sylk", "--silent", "maybe"], "silent")]:
            out, _, code = yield run(*base, *extra)
            self.assertEqual(code, 1, extra)
            answer = answer_of(out)
            self.assertIn(answer["code"], (400, 404))
            if field:
                self.assertEqual(answer["data"]["field"], field)
        self.assertEqual(self.requests, [])

    @defer.inlineCallbacks
    def test_usage_errors_exit_2(self):
        _, err, code = yield run("--platform", "apple")
        self.assertEqual(code, 2)
        self.assertIn(b"the following arguments are required", err)

    @defer.inlineCallbacks
    def test_unreachable_server_exits_1(self):
        url = f"http://127.0.0.1:{free_port()}/push"
        out, _, code = yield run("--url", url, "--platform", "apple", "--appid", "com.example.sylk",
                                 "--token", "t", "--callid", "c", "--from", "a", "--to", "b")
        self.assertEqual(code, 1)
        self.assertIn(f"incoming_session push for c to {url} failed: connection error".encode(), out)

    @defer.inlineCallbacks
    def test_no_answer_within_timeout_exits_1(self):
        never = Deferred()
        self.server.registry.get("com.example.sylk", "apple").client.answers["slow"] = never
        self.addCleanup(lambda: never.called or never.callback(PushResult(200, "OK", "")))
        out, _, code = yield run("--url", self.url, "--platform", "apple", "--appid", "com.example.sylk",
                                 "--token", "slow", "--callid", "c", "--from", "a", "--to", "b",
                                 "--timeout", "0.5")
        self.assertEqual(code, 1)
        self.assertIn(b"failed: no answer within 0.5 s", out)


class AcceptedTests(unittest.TestCase):

    @defer.inlineCallbacks
    def test_accepted_exits_0(self):
        """return_async = false: the server answers 202 at once, which is no failure."""
        _, base = start_server(self, SYLK_APPLE, "[server]\nreturn_async = false\n")
        out, err, code = yield run("--url", base + "/push", "--platform", "apple", "--appid", "com.example.sylk",
                                   "--token", "t", "--callid", "c", "--from", "a", "--to", "b")
        self.assertEqual(code, 0, err)
        self.assertEqual(answer_of(out)["code"], 202)


class ApiKeyTests(unittest.TestCase):

    @defer.inlineCallbacks
    def test_key_from_the_environment(self):
        _, base = start_server(self, SYLK_APPLE, f"[api]\nkeys_file = {keys_file('proxy 0123456789abcdef0123')}\n")
        args = [SCRIPT, "--url", base + "/push", "--platform", "ios", "--appid", "com.example.sylk",
                "--token", "t", "--callid", "c", "--from", "a", "--to", "b"]
        out, _, code = yield run(*args[1:])
        self.assertEqual((code, answer_of(out)["code"]), (1, 401))
        out, _, code = yield utils.getProcessOutputAndValue(
            sys.executable, args, env=dict(os.environ, SYLK_PUSHSERVER_API_KEY="0123456789abcdef0123"))
        self.assertEqual((code, answer_of(out)["code"]), (0, 200))


class ScriptRulesTests(unittest.TestCase):
    """The script cannot import the server (standard library only): its copies
    of the server's rules must stay equal to them."""

    def setUp(self):
        self.script = load_script()

    def test_deadlines_follow_the_server(self):
        self.assertEqual((self.script.CALL_DEADLINE, self.script.OTHER_DEADLINE), (CALL_DEADLINE, OTHER_DEADLINE))
        self.assertEqual(set(self.script.CALL_MEDIA), set(CALL_MEDIA))
        self.assertEqual(set(self.script.APPLE_PLATFORMS), {k for k, v in PLATFORM_ALIASES.items() if v == "apple"})

    def test_timeout_follows_the_event(self):
        parse = self.script.argument_parser().parse_args
        base = ["--platform", "apple", "--appid", "a", "--token", "t", "--callid", "c", "--from", "f", "--to", "t"]

        def timeout(*extra):
            args = parse(base + list(extra))
            return self.script.answer_timeout(args, self.script.media_type(args.mediatype))
        margin = self.script.ANSWER_MARGIN
        self.assertEqual(timeout(), CALL_DEADLINE + margin)
        self.assertEqual(timeout("--event", "cancel", "--mediatype", "chat"), CALL_DEADLINE + margin)
        self.assertEqual(timeout("--event", "message", "--mediatype", "sms"), OTHER_DEADLINE + margin)
        self.assertEqual(timeout("--event", "transfer", "--mediatype", "file-transfer"), OTHER_DEADLINE + margin)
        self.assertEqual(timeout("--mediatype", "sms", "--timeout", "5"), 5)

    def test_media_type_mapping(self):
        media = self.script.media_type
        self.assertEqual([media(v) for v in ("audio, video", "video", "audio, chat", "chat", "sms")],
                         ["video", "video", "audio", "chat", "sms"])

    def test_token_convention(self):
        pick = self.script.pick_token
        self.assertEqual(pick("A-B", "ios", "cancel"), "B")
        self.assertEqual(pick("A-B", "apple", "message"), "B")
        self.assertEqual(pick("A-B", "Apple", "incoming_session"), "A")
        self.assertEqual(pick("A#B", "apns", "cancel"), "B")
        self.assertEqual(pick("A-", "apple", "cancel"), "A")
        self.assertEqual(pick("A-B-C", "apple", "cancel"), "A-B-C")
        self.assertEqual(pick("A-B", "firebase", "cancel"), "A-B")

    def test_help_shows_every_default(self):
        text = self.script.argument_parser().format_help()
        for default in ("http://127.0.0.1:8400/push", "default: incoming_session", "default: 1",
                        "default: audio", "default: 74", "1030"):
            self.assertIn(default, text)
