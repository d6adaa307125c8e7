"""Custom applications and push services from the config directory,
using the shipped templates config/applications/myapp.py and config/pns/mypns.py."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

from twisted.internet import defer, reactor
from twisted.trial import unittest
from twisted.web import resource, server

from sylkpush.pns.client_classes import client_class
from sylkpush.service import PushServer
from sylkpush.config import load_settings
from tests.doubles import capture_logs
from tests.helpers import SYLK_APPLE, RecordingClient, make_config_dir, post, recording_client_class, wakeup

TEMPLATES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config")

MYAPP_APPLE = """
[myapp-ios]
app_id = com.example.myapp
app_type = myapp
app_platform = apple
"""


def mypns_app(url: str, app_id: str = "com.example.mine") -> str:
    return f"""
[mine]
app_id = {app_id}
app_type = myapp
app_platform = mypns
mypns_url = {url}
"""


class FakeMypns(resource.Resource):
    """A tiny push service: records the JSON it gets, answers 410 for token ``gone``."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.received = []

    def render_POST(self, request):
        body = json.loads(request.content.read())
        self.received.append(body)
        request.setHeader(b"content-type", b"application/json")
        if body["token"] == "gone":
            request.setResponseCode(410)
            return json.dumps({"reason": "Unregistered"}).encode()
        return json.dumps({"id": len(self.received)}).encode()


def config_dir_with_templates(applications: str, pns_source: str = "") -> str:
    directory = make_config_dir(applications)
    os.mkdir(os.path.join(directory, "applications"))
    shutil.copy(os.path.join(TEMPLATES, "applications", "myapp.py"), os.path.join(directory, "applications"))
    os.mkdir(os.path.join(directory, "pns"))
    if pns_source:
        with open(os.path.join(directory, "pns", "mypns.py"), "w") as stream:
            stream.write(pns_source)
    else:
        shutil.copy(os.path.join(TEMPLATES, "pns", "mypns.py"), os.path.join(directory, "pns"))
    return directory


class CustomModuleTests(unittest.TestCase):

    def setUp(self):
        RecordingClient.instances = []
        self.logs = capture_logs(self)
        self.fake = FakeMypns()
        port = reactor.listenTCP(0, server.Site(self.fake), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.fake_url = f"http://127.0.0.1:{port.getHost().port}/send"

    def start(self, directory, find_client=client_class):
        settings = dataclasses.replace(load_settings(directory, host="127.0.0.1", port=0),
                                       spool_dir=os.path.join(directory, "spool"))
        push_server = PushServer(settings, reactor, find_client=find_client)
        push_server.startService()
        self.addCleanup(push_server.stopService)
        return push_server, f"http://127.0.0.1:{push_server.port.getHost().port}/push"

    @defer.inlineCallbacks
    def test_custom_push_service_delivers(self):
        _, url = self.start(config_dir_with_templates(mypns_app(self.fake_url)))
        code, body, _ = yield post(url, wakeup(**{"app-id": "com.example.mine", "platform": "mypns"}))
        self.assertEqual(code, 200, body)
        self.assertEqual(body["data"]["url"], self.fake_url)
        self.assertEqual(body["data"]["body"], {"id": 1})
        self.assertEqual(body["data"]["platform"], "mypns")
        [received] = self.fake.received
        self.assertEqual(received["token"], "a1b2c3d4")
        self.assertEqual(received["headers"], {"x-mypns-priority": "high"})
        self.assertEqual(received["payload"]["call-id"], "call-1@example.com")
        self.assertEqual(received["payload"]["from"], "alice@example.com")
        code, body, _ = yield post(url, wakeup(**{"app-id": "com.example.mine", "platform": "mypns",
                                                  "token": "gone"}))
        self.assertEqual(code, 410)
        self.assertEqual(body["data"]["reason"], "Unregistered")

    @defer.inlineCallbacks
    def test_custom_application_renders_its_payload(self):
        _, url = self.start(config_dir_with_templates(MYAPP_APPLE), recording_client_class)
        code, _, _ = yield post(url, wakeup(**{"app-id": "com.example.myapp", "event": "message",
                                               "media-type": "chat"}))
        self.assertEqual(code, 200)
        [client] = RecordingClient.instances
        [push] = client.sent
        self.assertEqual(push.payload["aps"]["alert"], {"title": "Alice",
                                                        "body": "message from alice@example.com"})
        self.assertEqual(push.payload["call-id"], "call-1@example.com")
        self.assertEqual(push.headers["apns-push-type"], "alert")
        self.assertEqual(push.headers["apns-topic"], "com.example.myapp")

    @defer.inlineCallbacks
    def test_broken_push_service_module_disables_only_its_apps(self):
        directory = config_dir_with_templates(mypns_app(self.fake_url) + SYLK_APPLE,
                                              pns_source="import nothing_of_that_name\n")
        _, url = self.start(directory, lambda platform, extra_dir: (
            client_class(platform, extra_dir) if platform == "mypns" else RecordingClient))
        [line] = self.logs.matching("application [mine] disabled")
        self.assertIn("pns/mypns.py failed to import: ModuleNotFoundError", line)
        code, body, _ = yield post(url, wakeup(**{"app-id": "com.example.mine", "platform": "mypns"}))
        self.assertEqual(code, 503)
        self.assertIn("not available", body["data"]["reason"])
        self.assertEqual(self.fake.received, [])
        code, _, _ = yield post(url, wakeup())
        self.assertEqual(code, 200)

    @defer.inlineCallbacks
    def test_push_service_module_without_its_class(self):
        directory = config_dir_with_templates(mypns_app(self.fake_url), pns_source="class Other:\n    pass\n")
        _, url = self.start(directory)
        [line] = self.logs.matching("application [mine] disabled")
        self.assertIn("has no class MypnsClient", line)
        code, _, _ = yield post(url, wakeup(**{"app-id": "com.example.mine", "platform": "mypns"}))
        self.assertEqual(code, 503)

    def test_push_service_module_raising_config_error_of_pns_base(self):
        # modules written from the earlier template import ConfigError from sylkpush.pns.base
        source = ("from sylkpush.pns.base import ConfigError, PushClient\n\n"
                  "class MypnsClient(PushClient):\n"
                  "    def __init__(self, app, reactor):\n"
                  "        raise ConfigError('mypns_url is missing')\n")
        self.start(config_dir_with_templates(mypns_app(self.fake_url), pns_source=source))
        [line] = self.logs.matching("application [mine] disabled")
        self.assertTrue(line.endswith("application [mine] disabled: mypns_url is missing"), line)

    @defer.inlineCallbacks
    def test_broken_application_module_disables_only_its_apps(self):
        directory = config_dir_with_templates(MYAPP_APPLE + SYLK_APPLE)
        with open(os.path.join(directory, "applications", "myapp.py"), "w") as stream:
            stream.write("def broken(:\n")
        _, url = self.start(directory, recording_client_class)
        [line] = self.logs.matching("application [myapp-ios] disabled")
        self.assertIn("myapp.py failed to import: SyntaxError", line)
        code, _, _ = yield post(url, wakeup(**{"app-id": "com.example.myapp"}))
        self.assertEqual(code, 404)
        code, _, _ = yield post(url, wakeup())
        self.assertEqual(code, 200)

    @defer.inlineCallbacks
    def test_broken_module_on_reload_keeps_the_working_app(self):
        directory = config_dir_with_templates(mypns_app(self.fake_url))
        push_server, url = self.start(directory)
        client = push_server.registry.get("com.example.mine", "mypns").client
        with open(os.path.join(directory, "pns", "mypns.py"), "a") as stream:
            stream.write("\nraise RuntimeError('half-edited')\n")
        with open(os.path.join(directory, "applications.ini"), "a") as stream:
            stream.write("mypns_option = changed\n")  # a changed section needs the module again
        applied = yield push_server.reload()
        self.assertTrue(applied)
        self.assertIs(push_server.registry.get("com.example.mine", "mypns").client, client)
        self.assertTrue(self.logs.matching("RuntimeError: half-edited"))
        code, _, _ = yield post(url, wakeup(**{"app-id": "com.example.mine", "platform": "mypns"}))
        self.assertEqual(code, 200)
