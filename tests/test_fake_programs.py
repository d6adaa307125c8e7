"""The fakes run as programs (demo, benchmark, soak, package test): one command line for both."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request

from twisted.trial import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeProgramTests(unittest.TestCase):

    def run_fake(self, module: str, name: str, sample: str) -> None:
        directory = os.path.abspath(self.mktemp())
        process = subprocess.Popen(
            [sys.executable, "-u", "-m", module, "--dir", directory, "--host", "127.0.0.1", "--port", "0",
             "--delay", "0", "--app-id", "com.example.cli", "--app-type", "linphone", "--control-port", "0",
             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=ROOT))
        self.addCleanup(lambda: process.poll() is None and process.kill())
        first, second = process.stdout.readline(), process.stdout.readline()
        self.assertTrue(first.startswith(f"{name} listening on 127.0.0.1:"), first)
        self.assertTrue(second.startswith("control port "), second)
        # the sample the scripts read is written before the first line
        with open(os.path.join(directory, sample), encoding="utf-8") as stream:
            text = stream.read()
        self.assertIn("app_id = com.example.cli\n", text)
        self.assertIn("app_type = linphone\n", text)
        self.assertIn(f":{first.rsplit(':', 1)[1].strip()}", text)
        control = int(second.split()[-1])
        with urllib.request.urlopen(f"http://127.0.0.1:{control}/stats", timeout=30) as answer:
            self.assertEqual(json.load(answer)["requests"], 0)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        self.assertIn('stats {"requests": 0', out)
        self.assertNotIn("Traceback", err)

    def test_fake_apns(self) -> None:
        self.run_fake("sylkpush.testing.fake_apns", "fake APNs", "fake-apns.ini")

    def test_fake_fcm(self) -> None:
        self.run_fake("sylkpush.testing.fake_fcm", "fake FCM", "fake-fcm-applications.ini")
