"""general.ini and applications.ini: defaults, overrides, broken sections."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys

from twisted.trial import unittest

from sylkpush.config import (ConfigError, find_config_dir, load_applications, load_settings,
                             parse_networks)
from tests.helpers import make_config_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class SettingsTests(unittest.TestCase):

    def test_defaults_without_general_ini(self):
        directory = make_config_dir("")
        settings = load_settings(directory)
        self.assertEqual((settings.host, settings.port, settings.return_async), ("0.0.0.0", 8400, True))
        self.assertEqual(settings.tls_certificate, "")
        self.assertEqual(settings.allowed_hosts, ())
        self.assertEqual((settings.log_to_file, settings.log_file),
                         (False, "/var/log/sylk-pushserver/push.log"))
        self.assertEqual(settings.spool_dir, "/var/spool/sylk-pushserver")
        self.assertEqual((settings.debug, settings.debug_hpack), (False, False))
        self.assertEqual((settings.applications_file, settings.credentials_folder,
                          settings.extra_applications_dir, settings.extra_pns_dir),
                         ("applications.ini", "credentials", "applications/", "pns/"))
        self.assertEqual(settings.cassandra.contact_points, ())

    def test_values_and_command_line_overrides(self):
        directory = make_config_dir("", "[server]\nhost = 0.0.0.0\nport = 9000\nreturn_async = false\n"
                                        "allowed_hosts = 10.0.0.0/8, 192.0.2.7, 2001:db8::/32\ndebug = yes\n"
                                        "[applications]\nconfig_file = apps.ini\n"
                                        "[Cassandra]\ncluster_contact_points = 10.0.0.1, 10.0.0.2\nkeyspace = k\n")
        settings = load_settings(directory)
        self.assertEqual((settings.host, settings.port, settings.return_async, settings.debug),
                         ("0.0.0.0", 9000, False, True))
        self.assertEqual(len(settings.allowed_hosts), 3)
        self.assertEqual(settings.applications_file, "apps.ini")
        self.assertEqual(settings.cassandra.contact_points, ("10.0.0.1", "10.0.0.2"))
        overridden = load_settings(directory, host="127.0.0.2", port=9100, debug=False)
        self.assertEqual((overridden.host, overridden.port, overridden.debug), ("127.0.0.2", 9100, False))

    def test_cassandra(self):
        settings = load_settings(make_config_dir("", "[Cassandra]\ncluster_contact_points = db1:9142, [2001:db8::7]:9142,"
                                                     " 10.0.0.3\nusername = pusher\npassword = s3cret\n"
                                                     "ca_file = cassandra-ca.pem\nlocal_dc = dc2\ndebug = yes\n"))
        cassandra = settings.cassandra
        self.assertEqual((cassandra.contact_points, cassandra.port), (("db1", "2001:db8::7", "10.0.0.3"), 9142))
        self.assertEqual((cassandra.keyspace, cassandra.table), ("sylk_pushserver", "push_tokens"))
        self.assertEqual((cassandra.username, cassandra.password, cassandra.ca_file, cassandra.local_dc,
                          cassandra.debug), ("pusher", "s3cret", "cassandra-ca.pem", "dc2", True))
        self.assertNotIn("s3cret", repr(settings))
        self.assertEqual(load_settings(make_config_dir("", "[Cassandra]\ncluster_contact_points = ::1\n"))
                         .cassandra.contact_points, ("::1",))

    def test_bad_cassandra_values(self):
        for text, message in (
                ("cluster_contact_points = a:9042, b:9043",
                 "line 2: [Cassandra] cluster_contact_points must all use one port (found 9042, 9043)"),
                ("cluster_contact_points = a:http",
                 "[Cassandra] cluster_contact_points entry 'a:http': the port must be a number"),
                ("cluster_contact_points = [::1", "[Cassandra] cluster_contact_points entry '[::1' is not host, host:port"),
                ("cluster_contact_points = db_1.example.com, db..example.com:9042",
                 "[Cassandra] cluster_contact_points entry 'db..example.com' is not a host name or IP address"),
                ("keyspace = sylk-pushserver", "line 2: [Cassandra] keyspace must be a letter followed by letters"),
                ("table = tokens;drop", "line 2: [Cassandra] table must be a letter followed by letters"),
                ("username = pusher", "[Cassandra] username and password go together")):
            exc = self.assertRaises(ConfigError, load_settings, make_config_dir("", f"[Cassandra]\n{text}\n"))
            self.assertIn(message, str(exc))

    def test_bad_values(self):
        for text, message in (("[server]\nport = http\n", "port must be an integer"),
                              ("[server]\nreturn_async = perhaps\n", "return_async"),
                              ("[server]\nallowed_hosts = 10.0.0.300\n", "allowed_hosts"),
                              ("not an ini file\n", "cannot read")):
            exc = self.assertRaises(ConfigError, load_settings, make_config_dir("", text))
            self.assertIn(message, str(exc))

    def test_networks(self):
        networks = parse_networks(" 127.0.0.1 ,::1, 10.0.0.0/8,")
        self.assertIn(ipaddress.ip_address("10.200.0.1"), networks[2])
        self.assertEqual(str(networks[1]), "::1/128")

    def test_networks_that_would_allow_more_than_written_are_refused(self):
        exc = self.assertRaises(ConfigError, parse_networks, "127.0.0.1, 10.1.2.3/8")
        self.assertEqual(str(exc), "entry '10.1.2.3/8' has host bits set: write 10.0.0.0/8 for the whole network "
                                   "or 10.1.2.3 for the one address")
        for value in (",", " , ,"):  # once read as "no list": everyone allowed
            exc = self.assertRaises(ConfigError, load_settings,
                                    make_config_dir("", f"[server]\nallowed_hosts = {value}\n"))
            self.assertIn("line 2: [server] allowed_hosts lists no address", str(exc))

    def test_errors_name_line_and_key_never_the_value(self):
        secret = "AAAAsecretLegacyKey123"
        for general, expected in (
                (f"[server]\n{secret}\n", "line 2: not a [section] header, a 'key = value' line or a comment"),
                (f"{secret} = 1\n", "line 1: a setting before the first [section] header"),
                (f"[server]\ndebug = {secret}\n", "line 2: [server] debug must be true or false"),
                (f"[server]\nport = {secret}\n", "line 2: [server] port must be an integer"),
                (f"[server]\nport = 1\nport = {secret}\n", "line 3: port appears twice in section [server]"),
                ("[server]\n[server]\n", "line 2: section [server] appears twice"),
                (f"[server]\nrequest_timeout = -{secret}\n", "[server] request_timeout must be a number"),
                ("[server]\nmax_connections = 0\n", "line 2: [server] max_connections must be an integer of "
                                                      "at least 1")):
            exc = self.assertRaises(ConfigError, load_settings, make_config_dir("", general))
            self.assertIn(expected, str(exc))
            self.assertNotIn(secret, str(exc))
        directory = make_config_dir("")
        with open(os.path.join(directory, "general.ini"), "wb") as stream:
            stream.write(b"[server]\n\n; caf\xe9\n")
        exc = self.assertRaises(ConfigError, load_settings, directory)
        self.assertIn("line 3 is not UTF-8 text", str(exc))
        exc = self.assertRaises(ConfigError, load_applications,
                                load_settings(make_config_dir(f"[a]\napp_id = x\n{secret}\n")))
        self.assertIn("line 3: not a [section] header", str(exc))
        self.assertNotIn(secret, str(exc))

    def test_new_server_settings(self):
        settings = load_settings(make_config_dir("", "[server]\nmax_connections = 100\nrequest_timeout = 2.5\n"))
        self.assertEqual((settings.max_connections, settings.request_timeout), (100, 2.5))
        defaults = load_settings(make_config_dir(""))
        self.assertEqual((defaults.max_connections, defaults.request_timeout), (4096, 10.0))

    def test_config_dir_search(self):
        self.assertRaises(ConfigError, find_config_dir, "/nonexistent/sylk")
        directory = make_config_dir("")
        self.assertEqual(find_config_dir(directory), directory)


class ApplicationsTests(unittest.TestCase):

    def load(self, text, files=()):
        directory = make_config_dir(text)
        os.makedirs(os.path.join(directory, "credentials"))
        for name in files:
            with open(os.path.join(directory, "credentials", name), "w") as stream:
                stream.write("x")
        return directory, load_applications(load_settings(directory))

    def test_sections(self):
        directory, (apps, problems) = self.load("""
[ios]
app_id = com.example.app.prod
app_type = sylk
app_platform = ios
apple_certificate = cert.pem
apple_push_url = api.sandbox.push.apple.com:2197
voip = yes
tls_ca_file = ca.pem
[android]
app_id = com.example.app
app_type = Linphone
app_platform = android
firebase_push_url = https://fcm.googleapis.com/v1/projects/demo/messages:send
firebase_authorization_file = sa.json
log_remote_urls = http://127.0.0.1:9/a, http://127.0.0.1:9/b
log_remote_timeout = 0.5
log_remote_key = id
""", files=("cert.pem", "ca.pem", "sa.json"))
        self.assertEqual(problems, [])
        ios, android = apps
        self.assertEqual((ios.key, ios.app_type), (("com.example.app.prod", "apple"), "sylk"))
        self.assertEqual((ios.apple_host, ios.apple_port), ("api.sandbox.push.apple.com", 2197))
        self.assertEqual(ios.apple_certificate, os.path.join(directory, "credentials", "cert.pem"))
        self.assertEqual(ios.tls_ca_file, os.path.join(directory, "credentials", "ca.pem"))
        self.assertEqual((android.platform, android.app_type, android.firebase_legacy), ("firebase", "linphone", False))
        self.assertEqual(android.log_remote_urls, ("http://127.0.0.1:9/a", "http://127.0.0.1:9/b"))
        self.assertEqual((android.log_remote_timeout, android.log_remote_key), (0.5, "id"))
        self.assertEqual(android.option("log_remote_key"), "id")

    def test_broken_sections_are_left_out_with_a_reason(self):
        _, (apps, problems) = self.load("""
[good]
app_id = a
app_type = sylk
app_platform = apple
[missing-file]
app_id = b
app_type = sylk
app_platform = apple
apple_key = nowhere.p8
[no-type]
app_id = c
app_platform = apple
[bad-url]
app_id = d
app_type = sylk
app_platform = apple
apple_push_url = host:port
[bad-fcm]
app_id = e
app_type = sylk
app_platform = firebase
firebase_push_url = ftp://x
[duplicate]
app_id = a
app_type = linphone
app_platform = ios
""")
        self.assertEqual([a.section for a in apps], ["good"])
        reasons = dict(problems)
        self.assertIn("apple_key file", reasons["missing-file"])
        self.assertIn("does not exist", reasons["missing-file"])
        self.assertEqual(reasons["no-type"], "app_type is missing")
        self.assertIn("apple_push_url", reasons["bad-url"])
        self.assertIn("firebase_push_url", reasons["bad-fcm"])
        self.assertEqual(reasons["duplicate"], "apple a is already configured in section good")

    def test_urls_and_hosts_the_clients_could_not_use(self):
        secret = "AIzaSecretPastedHere"
        _, (apps, problems) = self.load(f"""
[fcm-non-ascii]
app_id = a
app_type = sylk
app_platform = firebase
firebase_push_url = https://fcm.googleäpis.com/v1/projects/p/messages:send?{secret}
[fcm-port]
app_id = b
app_type = sylk
app_platform = firebase
firebase_push_url = https://fcm.googleapis.com:99999/{secret}
[apple-empty-label]
app_id = c
app_type = sylk
app_platform = apple
apple_push_url = a..b
[apple-bad-port]
app_id = d
app_type = sylk
app_platform = apple
apple_push_url = api.push.apple.com:70000
[remote-log]
app_id = e
app_type = sylk
app_platform = apple
log_remote_urls = http://127.0.0.1:9/a, http://lögs.example.com/{secret}
[two-lines]
app_id = f
app_type = sylk
app_platform = apple
key_id = ABC
  {secret}
[fine]
app_id = g
app_type = sylk
app_platform = apple
apple_push_url = [::1]:2197
[unclosed-bracket]
app_id = h
app_type = sylk
app_platform = firebase
firebase_push_url = https://[::1/v1
""")
        self.assertEqual([app.section for app in apps], ["fine"])
        reasons = dict(problems)
        self.assertEqual(reasons, {
            "fcm-non-ascii": "line 6: firebase_push_url must be an http(s) URL with a valid host name, in ASCII",
            "fcm-port": "line 11: firebase_push_url has an invalid port",
            "apple-empty-label": "line 16: apple_push_url must be host or host:port, with a valid host name",
            "apple-bad-port": "line 21: apple_push_url has an invalid port",
            "remote-log": "line 26: log_remote_urls must be an http(s) URL with a valid host name, in ASCII",
            "two-lines": "line 31: key_id must be one line without control characters",
            "unclosed-bracket": "line 42: firebase_push_url must be an http(s) URL with a valid host name, in ASCII"})
        self.assertEqual((apps[0].apple_host, apps[0].apple_port), ("::1", 2197))

    def test_host_names_tls_cannot_use(self):
        # these pass a look at their characters but not the IDNA encoding the
        # TLS connection does when the client is built
        _, (apps, problems) = self.load("""
[fcm-underscore]
app_id = a
app_type = sylk
app_platform = firebase
firebase_push_url = https://_/x
[fcm-underscore-label]
app_id = b
app_type = sylk
app_platform = firebase
firebase_push_url = https://push_1.example.com/v1
[apple-hyphens]
app_id = c
app_type = sylk
app_platform = apple
apple_push_url = ab--cd.example.com
[apple-a-label]
app_id = d
app_type = sylk
app_platform = apple
apple_push_url = xn--zz.example.com:2197
[fine]
app_id = e
app_type = sylk
app_platform = firebase
firebase_push_url = https://FCM.Example.com:8443/v1
""")
        self.assertEqual([app.section for app in apps], ["fine"])
        self.assertEqual(dict(problems), {
            "fcm-underscore": "line 6: firebase_push_url must be an http(s) URL with a valid host name, in ASCII",
            "fcm-underscore-label": "line 11: firebase_push_url must be an http(s) URL with a valid host name, "
                                    "in ASCII",
            "apple-hyphens": "line 16: apple_push_url must be host or host:port, with a valid host name",
            "apple-a-label": "line 21: apple_push_url must be host or host:port, with a valid host name"})

    def test_unreadable_file(self):
        directory = make_config_dir("[broken\n")
        self.assertRaises(ConfigError, load_applications, load_settings(directory))


class CommandLineTests(unittest.TestCase):
    """The executable's own error handling (run as a real process)."""

    def run_server(self, *args):
        return subprocess.run([sys.executable, os.path.join(ROOT, "sylk-pushserver"), *args],
                              capture_output=True, text=True, timeout=60)

    def test_help(self):
        result = self.run_server("-h")
        self.assertEqual(result.returncode, 0)
        for option in ("--config_dir", "--ip", "--port", "--no-fork", "--debug"):
            self.assertIn(option, result.stdout)

    def test_missing_config_dir(self):
        result = self.run_server("--config_dir", "/nonexistent/sylk", "--no-fork")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr.strip(),
                         "sylk-pushserver: configuration directory /nonexistent/sylk does not exist")

    def test_unreadable_general_ini(self):
        directory = make_config_dir("", "[server\nport = 1\n")
        result = self.run_server("--config_dir", directory, "--no-fork")
        self.assertEqual(result.returncode, 1)
        self.assertIn("cannot read", result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    def test_missing_applications_ini(self):
        directory = make_config_dir("")
        os.unlink(os.path.join(directory, "applications.ini"))
        result = self.run_server("--config_dir", directory, "--no-fork", "--ip", "127.0.0.1", "--port", "0")
        self.assertEqual(result.returncode, 1)
        self.assertIn("cannot read", result.stderr)
        self.assertNotIn("Traceback", result.stderr)
