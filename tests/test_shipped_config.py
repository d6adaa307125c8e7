"""The configuration the package installs: a fresh install starts cleanly and
says what to configure."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

from twisted.internet import defer, reactor
from twisted.trial import unittest

from sylkpush.config import load_settings
from sylkpush.service import PushServer
from tests.doubles import capture_logs
from tests.helpers import post

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config")


class ShippedConfigurationTests(unittest.TestCase):

    @defer.inlineCallbacks
    def test_fresh_install_starts_without_errors(self):
        directory = tempfile.mkdtemp(prefix="sylkpush-shipped-")
        self.addCleanup(shutil.rmtree, directory)
        for name in ("general.ini", "applications.ini"):
            shutil.copy(os.path.join(CONFIG, name + ".sample"), os.path.join(directory, name))
        logs = capture_logs(self, logging.INFO)
        settings = load_settings(directory, port=0)
        self.assertEqual(settings.host, "127.0.0.1")
        server = PushServer(settings, reactor)
        server.startService()
        self.addCleanup(server.stopService)

        self.assertEqual([line for line in logs.lines if "ERROR" in line], [])
        applications = os.path.join(directory, "applications.ini")
        self.assertEqual(len(logs.matching(f"no application is configured in {applications}")), 1, logs.lines)
        code, body, _ = yield post(f"http://127.0.0.1:{server.port.getHost().port}/health", None, method="GET")
        self.assertEqual((code, body["description"]), (503, "no application is configured"))
