"""The default listen address and the warning for a server open to any caller."""

from __future__ import annotations

import logging

from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from sylkpush.config import load_settings
from sylkpush.exposure import is_loopback, open_access_warning
from sylkpush.service import PushServer
from tests.helpers import SYLK_APPLE, keys_file, make_config_dir, recording_client_class


def settings_with(general=""):
    return load_settings(make_config_dir(SYLK_APPLE, general))


class ExposureTests(unittest.TestCase):

    def test_loopback(self):
        for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"):
            self.assertTrue(is_loopback(host), host)
        for host in ("0.0.0.0", "::", "10.0.0.1", "192.0.2.7", "2001:db8::1", "push.example.com", ""):
            self.assertFalse(is_loopback(host), host)

    def test_warning_only_when_open_beyond_loopback(self):
        open_settings = settings_with()
        warning = open_access_warning(open_settings, "0.0.0.0", 8400)
        self.assertIn("0.0.0.0 port 8400", warning)
        self.assertIn("allowed_hosts", warning)
        self.assertIsNone(open_access_warning(open_settings, "127.0.0.1", 8400))
        restricted = settings_with("[server]\nallowed_hosts = 10.0.0.0/8\n")
        self.assertIsNone(open_access_warning(restricted, "0.0.0.0", 8400))
        keyed = settings_with(f"[api]\nkeys_file = {keys_file('proxy 0123456789abcdef0123')}\n")
        self.assertIsNone(open_access_warning(keyed, "0.0.0.0", 8400))

    def warnings_at_listen(self, general):
        """The WARNING lines a server logs when it opens its port (in memory: nothing is bound)."""
        server = PushServer(settings_with(general), MemoryReactorClock(), find_client=recording_client_class)
        with self.assertLogs("sylkpush.service", logging.INFO) as captured:
            server.listen()
        return [r.getMessage() for r in captured.records if r.levelno == logging.WARNING]

    def test_default_host_warns_at_start(self):
        """A general.ini that leaves host out, as the original's sample does, listens everywhere."""
        [warning] = self.warnings_at_listen("[server]\n; host = 0.0.0.0\n")
        self.assertIn("listening on 0.0.0.0", warning)

    def test_no_warning_when_restricted_or_local(self):
        self.assertEqual(self.warnings_at_listen("[server]\nallowed_hosts = 192.0.2.0/24\n"), [])
        self.assertEqual(self.warnings_at_listen("[server]\nhost = 127.0.0.1\n"), [])
