"""Keys of general.ini and applications.ini that are not understood are reported."""

from __future__ import annotations

import configparser
import glob
import logging
import os
import re

from twisted.trial import unittest

from sylkpush.config import load_applications, load_settings
from sylkpush.config_keys import APPLICATION_KEYS, GENERAL_KEYS
from tests.helpers import SYLK_APPLE, make_config_dir, start_server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def uncommented(path):
    """A sample file with its ``;key = value`` examples made live."""
    text = open(path).read()
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read_string(re.sub(r"(?m)^;\s*(\[|\w+\s*=)", r"\1", text))
    return parser


class GeneralIniTests(unittest.TestCase):

    def test_misspelt_key_and_section(self):
        directory = make_config_dir("", "[server]\nalowed_hosts = 10.0.0.0/8\nport = 8400\n"
                                        "[Casandra]\nkeyspace = k\n")
        general = os.path.join(directory, "general.ini")
        warnings = load_settings(directory).config_warnings
        self.assertEqual(sorted(warnings), sorted([
            f"{general} [server]: unknown key alowed_hosts; did you mean allowed_hosts? (it is ignored)",
            f"{general}: unknown section [Casandra]; did you mean [Cassandra]? (it is ignored)",
        ]))

    def test_logged_at_start(self):
        with self.assertLogs("sylkpush.service", logging.WARNING) as captured:
            start_server(self, SYLK_APPLE, "[server]\nretrun_async = false\n")
        self.assertTrue(any("unknown key retrun_async; did you mean return_async?" in r.getMessage()
                            for r in captured.records))

    def test_known_keys_are_quiet(self):
        self.assertEqual(load_settings(make_config_dir("", "[server]\nport = 1\n")).config_warnings, ())

    def test_every_key_read_is_known(self):
        """load_settings reads only keys this module knows (a key added there must be added here)."""
        read = []
        original = configparser.ConfigParser.get

        def recording_get(parser, section, option, **kwargs):
            read.append((section, option))
            return original(parser, section, option, **kwargs)
        self.patch(configparser.ConfigParser, "get", recording_get)
        load_settings(make_config_dir(""))
        self.assertTrue(read)
        for section, option in read:
            self.assertIn(option, GENERAL_KEYS.get(section, ()), f"[{section}] {option}")

    def test_sample_is_known(self):
        parser = uncommented(os.path.join(ROOT, "config", "general.ini.sample"))
        for section in parser.sections():
            self.assertEqual(set(parser.options(section)) - GENERAL_KEYS[section], set(), section)


class ApplicationsIniTests(unittest.TestCase):

    def warnings(self, applications):
        directory = make_config_dir(applications)
        logger = logging.getLogger("sylkpush.config")
        with self.assertLogs(logger, logging.WARNING) as captured:
            logger.warning("marker")  # assertLogs fails when nothing at all is logged
            load_applications(load_settings(directory))
        return directory, [r.getMessage() for r in captured.records][1:]

    def test_misspelt_key(self):
        directory, warnings = self.warnings(SYLK_APPLE + "apple_cerificate = sylk.pem\n")
        path = os.path.join(directory, "applications.ini")
        self.assertEqual(warnings, [
            f"{path} [sylk-ios]: unknown key apple_cerificate; did you mean apple_certificate? (it is ignored)"])

    def test_misspelt_required_key_is_named_beside_the_error(self):
        _, warnings = self.warnings("[x]\nappid = com.example.x\napp_type = sylk\napp_platform = ios\n")
        self.assertEqual(len(warnings), 1)
        self.assertIn("unknown key appid; did you mean app_id?", warnings[0])

    def test_unknown_key_without_suggestion(self):
        _, warnings = self.warnings(SYLK_APPLE + "colour = blue\n")
        self.assertEqual(len(warnings), 1)
        self.assertTrue(warnings[0].endswith("[sylk-ios]: unknown key colour (it is ignored)"), warnings[0])

    def test_custom_modules_keep_their_own_keys(self):
        """A custom module's own key is not reported; a misspelling of a known key still is."""
        _, warnings = self.warnings("[mine]\napp_id = com.example.mine\napp_type = myapp\napp_platform = mypns\n"
                                    "mypns_url = https://push.example.com\nlog_remote_ulrs = https://log\n")
        self.assertEqual(len(warnings), 1)
        self.assertIn("unknown key log_remote_ulrs; did you mean log_remote_urls?", warnings[0])

    def test_samples_are_known(self):
        for name in ("applications.ini", "applications.ini.sample"):
            parser = uncommented(os.path.join(ROOT, "config", name))
            for section in parser.sections():
                self.assertEqual(set(parser.options(section)) - APPLICATION_KEYS, set(), f"{name} [{section}]")

    def test_every_key_read_is_known(self):
        """Keys the loader and the built-in clients read must be known here."""
        pattern = re.compile(r"""\b(?:values\.get|need|credential|option)\(\s*["'](\w+)["']""")
        read = set()
        for path in glob.glob(os.path.join(ROOT, "sylkpush", "**", "*.py"), recursive=True):
            if os.sep + "testing" + os.sep in path:
                continue
            read.update(pattern.findall(open(path).read()))
        self.assertIn("apple_certificate", read)
        self.assertEqual(read - APPLICATION_KEYS, set())
