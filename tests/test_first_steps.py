"""The first minutes in a checkout: missing dependencies and `make run`'s ports."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

from twisted.trial import unittest

from sylkpush.dependencies import REQUIRED

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, python_options=()):
    return subprocess.run([sys.executable, *python_options, *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


class MissingDependenciesTests(unittest.TestCase):

    def test_one_line_says_what_to_install(self):
        # -S: no site-packages, as on a machine where nothing was installed yet
        result = run(os.path.join(ROOT, "sylk-pushserver"), "--version", python_options=["-S"])
        self.assertEqual(result.returncode, 1)
        self.assertNotIn("Traceback", result.stderr)
        [line] = result.stderr.strip().splitlines()
        self.assertTrue(line.startswith("sylk-pushserver: missing Python packages: Twisted, "), line)
        self.assertIn("pip install -r requirements.txt", line)

    def test_installed_dependencies_pass(self):
        result = run(os.path.join(ROOT, "sylk-pushserver"), "--version")
        self.assertEqual(result.returncode, 0, result.stderr)

    def test_requirements_are_all_checked(self):
        with open(os.path.join(ROOT, "requirements.txt")) as stream:
            names = {re.split(r"[\[<>=]", line.strip())[0].lower() for line in stream
                     if line.strip() and not line.lstrip().startswith("#")}
        names.discard("hypothesis")  # tests only
        names.discard("cassandra-driver")  # only with a [Cassandra] token storage
        self.assertEqual(names, {name.lower() for name in REQUIRED})


class DemoPortsTests(unittest.TestCase):
    """scripts/demo-run (make run) with a port already taken: one line, before anything starts."""

    def setUp(self):
        self.taken = socket.socket()
        self.taken.bind(("127.0.0.1", 0))
        self.taken.listen()
        self.addCleanup(self.taken.close)
        self.port = self.taken.getsockname()[1]

    def free_port(self):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]

    def demo(self, apns, fcm, daemon):
        return run(os.path.join(ROOT, "scripts", "demo-run"), "--apns-port", str(apns), "--fcm-port", str(fcm),
                   "--ip", "127.0.0.1", "--port", str(daemon))

    def test_fake_port_taken(self):
        result = self.demo(self.port, self.free_port(), self.free_port())
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr.strip(),
                         f"demo: port {self.port} for the fake APNs on 127.0.0.1 cannot be used "
                         f"(Address already in use): choose another with make run APNS_PORT=...")

    def test_daemon_port_taken(self):
        result = self.demo(self.free_port(), self.free_port(), self.port)
        self.assertEqual(result.returncode, 1)
        [line] = result.stderr.strip().splitlines()
        self.assertIn(f"port {self.port} for Sylk Pushserver", line)
        self.assertIn("make run PORT=...", line)


class DemoConfigurationTests(unittest.TestCase):
    """`make run` keeps everything it writes inside the checkout."""

    def test_token_storage_stays_in_the_demo_directory(self):
        # a demo run as root must not leave a token database in the system's
        # spool directory, where the Debian package's user could not write it
        import importlib.machinery
        import importlib.util

        from sylkpush.config import load_settings
        before = os.getcwd()
        loader = importlib.machinery.SourceFileLoader("demo_run", os.path.join(ROOT, "scripts", "demo-run"))
        spec = importlib.util.spec_from_loader("demo_run", loader)
        demo_run = importlib.util.module_from_spec(spec)
        loader.exec_module(demo_run)
        self.assertEqual(os.getcwd(), before, "importing demo-run changed the directory of the tests")
        directory = os.path.abspath(self.mktemp())
        os.mkdir(directory)
        for name, content in (("general.ini", demo_run.GENERAL_INI), ("applications.ini", "")):
            with open(os.path.join(directory, name), "w") as stream:
                stream.write(content)
        settings = load_settings(directory)
        self.assertEqual(os.path.dirname(settings.path(settings.spool_dir)), directory)
