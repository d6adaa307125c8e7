"""Live reload of applications.ini: file changes, SIGHUP, broken files."""

from __future__ import annotations

import gc
import json
import os
import signal
import threading
import weakref

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from tests.doubles import DelayedClient, capture_logs, start_ops_server, write_applications
from tests.helpers import LINPHONE_APPLE, SYLK_APPLE, SYLK_FIREBASE, post, wakeup
from sylkpush.reload import FileWatcher
from sylkpush.service import tune_garbage_collector

SYLK_APPLE_CHANGED = SYLK_APPLE + "apple_apns_id = true\n"
BROKEN_SYLK_APPLE = SYLK_APPLE + "apple_certificate = missing.pem\n"


@defer.inlineCallbacks
def until(condition, step=0.01, limit=None):
    """Wait (on the reactor, never blocking it) until ``condition()`` is
    true, or ``limit`` seconds have passed (the caller then asserts)."""
    waited = 0.0
    while not condition() and (limit is None or waited < limit):
        yield task.deferLater(reactor, step, lambda: None)
        waited += step


def keep_collector_settings(test):
    """Give the garbage collector back its thresholds, and unfreeze, after ``test``."""
    test.addCleanup(gc.set_threshold, *gc.get_threshold())
    test.addCleanup(gc.unfreeze)


class FileWatcherTests(unittest.TestCase):

    def setUp(self):
        self.directory = self.mktemp()
        os.mkdir(self.directory)
        self.path = os.path.join(self.directory, "applications.ini")
        with open(self.path, "w") as stream:
            stream.write("[a]\n")
        self.clock = task.Clock()
        self.changes = []
        self.watcher = FileWatcher(self.path, lambda: self.changes.append(1), self.clock, interval=1.0)
        self.watcher.start()
        self.addCleanup(self.watcher.stop)

    def test_change_seen_at_the_next_poll(self):
        self.clock.advance(1.0)
        self.assertEqual(self.changes, [])
        write_applications(self.directory, "[a]\n[b]\n")
        self.clock.advance(0.99)
        self.assertEqual(self.changes, [])
        self.clock.advance(0.01)  # at most one interval (1 s) after the change
        self.assertEqual(self.changes, [1])
        self.clock.advance(5)
        self.assertEqual(self.changes, [1])

    def test_rewrite_in_place_and_removal_are_changes(self):
        with open(self.path, "a") as stream:
            stream.write("[c]\n")
        self.clock.advance(1.0)
        os.remove(self.path)
        self.clock.advance(1.0)
        self.assertEqual(self.changes, [1, 1])

    def test_failing_callback_keeps_watching(self):
        self.watcher.changed = lambda: 1 / 0
        logs = capture_logs(self)
        write_applications(self.directory, "[x]\n[y]\n")
        self.clock.advance(1.0)
        self.assertTrue(logs.matching("reloading after a change"))
        self.assertTrue(self.watcher._loop.running)


class ReloadTests(unittest.TestCase):

    def setUp(self):
        DelayedClient.instances = []
        self.logs = capture_logs(self)
        self.server, self.url, self.directory = start_ops_server(self, SYLK_APPLE + SYLK_FIREBASE)

    def app(self, platform="apple", app_id="com.example.sylk"):
        return self.server.registry.get(app_id, platform)

    @defer.inlineCallbacks
    def test_added_removed_unchanged(self):
        apple, firebase = self.app().client, self.app("firebase").client
        write_applications(self.directory, SYLK_APPLE + LINPHONE_APPLE)
        applied = yield self.server.reload()
        self.assertTrue(applied)
        self.assertIs(self.app().client, apple)  # unchanged: same connection
        self.assertFalse(apple.stopping)
        self.assertIsNone(self.app("firebase"))
        self.assertTrue(firebase.stopping)
        linphone = self.app(app_id="org.linphone.phone").client
        self.assertTrue(linphone.started)
        code, _, _ = yield post(self.url + "/push", wakeup(**{"app-id": "org.linphone.phone"}))
        self.assertEqual(code, 200)
        code, _, _ = yield post(self.url + "/push", wakeup(platform="firebase"))
        self.assertEqual(code, 404)

    @defer.inlineCallbacks
    def test_what_was_frozen_at_start_is_given_back_at_a_reload(self):
        keep_collector_settings(self)
        tune_garbage_collector()  # as the daemon does once it has started
        self.assertGreater(gc.get_freeze_count(), 0)
        write_applications(self.directory, SYLK_APPLE_CHANGED + SYLK_FIREBASE)
        applied = yield self.server.reload()
        self.assertTrue(applied)
        # the retired client was frozen with the rest: it must be collectable again
        self.assertEqual(gc.get_freeze_count(), 0)

    @defer.inlineCallbacks
    def test_once_the_retired_clients_are_gone_the_rest_is_frozen_again(self):
        keep_collector_settings(self)
        tune_garbage_collector()
        retired = weakref.ref(self.app().client)
        write_applications(self.directory, SYLK_APPLE_CHANGED + SYLK_FIREBASE)
        yield self.server.reload()
        DelayedClient.instances = []  # the test double's own list of its clients
        self.assertEqual(gc.get_freeze_count(), 0)  # until the retired client has stopped
        yield until(gc.get_freeze_count, limit=2.0)
        self.assertGreater(gc.get_freeze_count(), 0)
        self.assertIsNone(retired())  # freed before the rest was frozen
        self.assertIsNot(self.app().client, None)

    @defer.inlineCallbacks
    def test_changed_app_replaced(self):
        old = self.app().client
        write_applications(self.directory, SYLK_APPLE_CHANGED + SYLK_FIREBASE)
        yield self.server.reload()
        new = self.app().client
        self.assertIsNot(new, old)
        self.assertTrue(new.started)
        self.assertTrue(old.stopping)
        self.assertTrue(self.app().config.apple_apns_id)

    @defer.inlineCallbacks
    def test_unparsable_file_keeps_everything(self):
        registry = self.server.registry
        write_applications(self.directory, "this is not an ini file\n[broken")
        applied = yield self.server.reload()
        self.assertFalse(applied)
        self.assertIs(self.server.registry, registry)
        self.assertEqual(len(registry), 2)
        self.assertFalse(any(c.stopping for c in DelayedClient.instances))
        [line] = self.logs.matching("the previous applications stay active")
        self.assertIn("applications.ini", line)
        code, _, _ = yield post(self.url + "/push", wakeup())
        self.assertEqual(code, 200)

    @defer.inlineCallbacks
    def test_missing_file_keeps_everything(self):
        registry = self.server.registry
        os.remove(os.path.join(self.directory, "applications.ini"))
        applied = yield self.server.reload()
        self.assertFalse(applied)
        self.assertIs(self.server.registry, registry)

    @defer.inlineCallbacks
    def test_broken_section_keeps_previous_settings(self):
        apple = self.app().client
        broken_new = "[new-broken]\napp_id = com.example.new\napp_type = sylk\n"  # no platform
        write_applications(self.directory, BROKEN_SYLK_APPLE + broken_new + LINPHONE_APPLE)
        applied = yield self.server.reload()
        self.assertTrue(applied)
        # the broken section's previous working application stays, with its client
        self.assertIs(self.app().client, apple)
        self.assertFalse(apple.stopping)
        self.assertFalse(self.app().config.apple_certificate)
        # a broken section that never worked is left out; removed ones go
        self.assertIsNone(self.app(app_id="com.example.new"))
        self.assertIsNone(self.app("firebase"))
        self.assertIsNotNone(self.app(app_id="org.linphone.phone"))
        # said once, as a warning: the application still delivers
        [problem] = self.logs.matching("application [sylk-ios]")
        self.assertIn("WARNING sylkpush.app_registry: application [sylk-ios]: new settings not applied, its previous "
                      "working settings stay active: ", problem)
        self.assertIn("apple_certificate file ", problem)
        self.assertIn("missing.pem does not exist", problem)
        [problem] = self.logs.matching("application [new-broken]")
        self.assertIn("ERROR sylkpush.app_registry: application [new-broken] disabled: app_platform is missing", problem)
        code, _, _ = yield post(self.url + "/push", wakeup())
        self.assertEqual(code, 200)
        # once fixed, the new settings are applied
        write_applications(self.directory, SYLK_APPLE_CHANGED)
        yield self.server.reload()
        self.assertTrue(self.app().config.apple_apns_id)
        self.assertTrue(apple.stopping)

    @defer.inlineCallbacks
    def test_file_change_applied_by_polling(self):
        server, _, directory = start_ops_server(self, SYLK_APPLE, watch_interval=0.02)
        write_applications(directory, SYLK_APPLE + SYLK_FIREBASE)
        yield until(lambda: server.reloads)
        self.assertIsNotNone(server.registry.get("com.example.sylk", "firebase"))

    @defer.inlineCallbacks
    def test_sighup_reloads(self):
        before = signal.getsignal(signal.SIGHUP)  # SIG_IGN under nohup
        server, _, directory = start_ops_server(self, SYLK_APPLE, handle_sighup=True)
        write_applications(directory, SYLK_APPLE + SYLK_FIREBASE)
        os.kill(os.getpid(), signal.SIGHUP)
        yield until(lambda: server.reloads)
        self.assertIsNotNone(server.registry.get("com.example.sylk", "firebase"))
        self.assertTrue(self.logs.matching("SIGHUP: reloading"))
        yield server.stopService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), before)

    @defer.inlineCallbacks
    def test_overlapping_reloads_run_one_after_the_other(self):
        write_applications(self.directory, SYLK_APPLE_CHANGED)
        first, second = self.server.reload(), self.server.reload()
        results = yield defer.gatherResults([first, second])
        self.assertEqual(results, [True, True])
        self.assertEqual(self.server.reloads, 2)
        self.assertEqual(len(self.server.registry), 1)

    @defer.inlineCallbacks
    def test_no_request_lost_or_answered_twice_during_reloads(self):
        """A steady stream of 200 pushes while the app's settings change 5
        times: each change retires the client that has pushes in flight."""
        DelayedClient.default_delay = 0.03
        self.addCleanup(setattr, DelayedClient, "default_delay", 0.01)
        variants = [SYLK_APPLE + f"delay = 0.0{i % 3 + 2}\n" + (SYLK_FIREBASE if i % 2 else LINPHONE_APPLE)
                    for i in range(5)]
        calls, reloads = [], []
        for i in range(200):
            calls.append(post(self.url + "/push", wakeup(token=f"token-{i}", call_id=f"call-{i}")))
            if i % 40 == 20:
                write_applications(self.directory, variants[i // 40])
                reloads.append(self.server.reload())
            yield task.deferLater(reactor, 0.002, lambda: None)
        answers = yield defer.gatherResults(calls)
        applied = yield defer.gatherResults(reloads)
        self.assertEqual(applied, [True] * 5)
        codes = [code for code, _, _ in answers]
        tokens = [body["data"]["token"] for _, body, _ in answers]
        self.assertEqual(codes, [200] * 200)
        self.assertEqual(sorted(tokens), sorted(f"token-{i}" for i in range(200)))
        sent = [push.token for client in DelayedClient.instances for push in client.sent]
        self.assertEqual(len(sent), 200)  # each push delivered once: none lost, none twice
        self.assertEqual(len(set(sent)), 200)
        self.assertEqual([c for c in DelayedClient.instances if c.late], [])
        apple_clients = [c for c in DelayedClient.instances if c.app.platform == "apple" and c.sent
                         and c.app.app_id == "com.example.sylk"]
        self.assertGreaterEqual(len(apple_clients), 4)  # the stream really crossed the swaps
        # retired clients still had pushes in flight, which finished after the swap
        self.assertGreater(sum(c.in_flight_at_stop for c in apple_clients), 0)
        if os.environ.get("SYLKPUSH_FIGURES"):
            print(f"\nreload stream: 200 requests, {len(set(tokens))} answered, {len(sent) - len(set(sent))} "
                  f"duplicates, {200 - len(set(sent))} lost, {len(apple_clients)} clients, "
                  f"{sum(c.in_flight_at_stop for c in apple_clients)} in flight at retirement")


class GarbageCollectorTests(unittest.TestCase):
    """What the daemon does to the garbage collector once it has started."""

    def setUp(self) -> None:
        keep_collector_settings(self)

    def collections_in_churn(self) -> list:
        """The generations collected while objects are made and freed as
        pushes in flight are: up to 5 000 alive at once."""
        collected = []

        def record(phase: str, info: dict) -> None:
            if phase == "start":
                collected.append(info["generation"])
        gc.callbacks.append(record)
        try:
            for _ in range(50):
                in_flight = [{"push": n} for n in range(5000)]
                del in_flight
        finally:
            gc.callbacks.remove(record)
        return collected

    def test_objects_freed_by_their_counts_start_no_young_collection(self):
        tune_garbage_collector()
        self.assertEqual(self.collections_in_churn(), [])

    def test_the_default_threshold_would_collect_all_along(self):
        # the measure above can fail: with CPython's threshold the same churn collects
        gc.set_threshold(700)
        self.assertGreater(len(self.collections_in_churn()), 50)


class HandOverTests(unittest.TestCase):
    """A reload that fixes an application during an outage hands its waiting pushes over."""

    @defer.inlineCallbacks
    def test_waiting_pushes_go_to_the_new_settings(self):
        import socket

        from sylkpush.testing.fake_apns import FakeAPNs

        fake = FakeAPNs(reactor, directory=os.path.abspath(self.mktemp()))
        yield fake.start()
        self.addCleanup(fake.stop)
        right = fake.applications_ini("com.example.sylk", "sylk")
        with socket.socket() as probe:  # a loopback port nobody listens on
            probe.bind(("127.0.0.1", 0))
            dead = probe.getsockname()[1]
        wrong = right.replace(fake.authority, f"127.0.0.1:{dead}")
        server, url, directory = start_ops_server(self, wrong, find_client=None)
        token = "0a1b2c3d" * 8
        answers = [post(url + "/push", wakeup(token=token, call_id=f"wait-{n}@example.com")) for n in range(5)]
        [old] = [app.client for app in server.registry]
        yield until(lambda: old.status()["queued"] == 5)
        write_applications(directory, right)
        applied = yield server.reload()
        self.assertTrue(applied)
        results = yield defer.gatherResults(answers)
        self.assertEqual([code for code, _, _ in results], [200] * 5)
        self.assertEqual(sorted(d.payload["call-id"] for d in fake.notifications),
                         [f"wait-{n}@example.com" for n in range(5)])
        self.assertEqual(old.status()["queued"], 0)


class ReplacedFileTests(unittest.TestCase):
    """A certificate, key or service-account file replaced in place, with
    applications.ini unchanged: the reload gives the application a new
    client that loads it."""

    def setUp(self):
        DelayedClient.instances = []
        self.logs = capture_logs(self)

    def section(self, directory, **files):
        for name, content in files.items():
            with open(os.path.join(directory, name), "w") as stream:
                stream.write(content)
        return SYLK_APPLE + "".join(f"{key} = {name}\n" for key, name in
                                    (("tls_ca_file", "ca.pem"), ("acme_token_file", "acme.token"))
                                    if name in files)

    @defer.inlineCallbacks
    def test_a_file_replaced_in_place_replaces_the_client(self):
        server, _, directory = start_ops_server(self, "")
        write_applications(directory, self.section(directory, **{"ca.pem": "one", "acme.token": "t1"}))
        yield server.reload()
        first = server.registry.get("com.example.sylk", "apple").client
        for name, content in (("ca.pem", "two"), ("acme.token", "t2")):  # a credential, a custom module's file
            with open(os.path.join(directory, name), "w") as stream:
                stream.write(content)
            applied = yield server.reload()
            self.assertTrue(applied)
            client = server.registry.get("com.example.sylk", "apple").client
            self.assertIsNot(client, first)
            self.assertTrue(client.started)
            self.assertTrue(first.stopping)
            first = client
        # the operator reads which application the reload rebuilt
        self.assertEqual(len(self.logs.matching("1 started, 0 unchanged), 1 retired, 0 with problems; "
                                                "started (new or changed settings or files): sylk-ios")), 2)

    @defer.inlineCallbacks
    def test_the_same_contents_keep_the_client(self):
        server, _, directory = start_ops_server(self, "")
        write_applications(directory, self.section(directory, **{"ca.pem": "one"}))
        yield server.reload()
        client = server.registry.get("com.example.sylk", "apple").client
        with open(os.path.join(directory, "ca.pem.new"), "w") as stream:
            stream.write("one")
        os.replace(os.path.join(directory, "ca.pem.new"), os.path.join(directory, "ca.pem"))  # a new inode
        yield server.reload()
        self.assertIs(server.registry.get("com.example.sylk", "apple").client, client)
        self.assertFalse(client.stopping)

    @defer.inlineCallbacks
    def test_a_new_service_account_key_is_loaded(self):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        from tests.firebase_helpers import service_key

        def account(key, key_id):
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
            return json.dumps({"type": "service_account", "project_id": "sylk-test", "private_key_id": key_id,
                               "private_key": pem, "client_email": "push@sylk-test.iam.gserviceaccount.com",
                               "token_uri": "https://127.0.0.1:1/token"})
        server, _, directory = start_ops_server(self, "", find_client=None)
        path = os.path.join(directory, "service-account.json")
        with open(path, "w") as stream:
            stream.write(account(service_key(), "old-key"))
        write_applications(directory, SYLK_FIREBASE + "firebase_authorization_file = service-account.json\n")
        yield server.reload()
        old = server.registry.get("com.example.sylk", "firebase").client
        self.assertEqual(old.account.private_key_id, "old-key")
        with open(path, "w") as stream:  # rewritten in place, as a deployment tool does
            stream.write(account(rsa.generate_private_key(public_exponent=65537, key_size=2048), "new-key"))
        yield server.reload()
        new = server.registry.get("com.example.sylk", "firebase").client
        self.assertEqual(new.account.private_key_id, "new-key")
        self.assertTrue(old.stopping)


class BuiltOffTheReactorThreadTests(unittest.TestCase):
    """A reload reads key files and builds clients in a thread; only starting
    them (timers, connections) happens on the reactor thread."""

    @defer.inlineCallbacks
    def test_a_slow_client_construction_does_not_hold_the_server(self):
        from twisted.python import threadable

        events = []
        gate = threading.Event()

        class SlowToBuild(DelayedClient):
            def __init__(self, app, reactor):
                if app.option("slow"):
                    events.append(("built in the reactor thread", threadable.isInIOThread()))
                    gate.wait(5)  # a key file on a slow disk, a large CA bundle
                    events.append("built")
                super().__init__(app, reactor)

            def start(self):
                if self.app.option("slow"):
                    events.append(("started in the reactor thread", threadable.isInIOThread()))
                super().start()

        DelayedClient.instances = []
        capture_logs(self)
        server, url, directory = start_ops_server(self, SYLK_APPLE, find_client=lambda platform, extra_dir: SlowToBuild)
        write_applications(directory, SYLK_APPLE + "slow = 1\n")
        reloading = server.reload()
        yield until(lambda: events)
        code, _, _ = yield post(url + "/push", wakeup())  # served by the previous client meanwhile
        events.append(("push answered", code))
        gate.set()
        applied = yield reloading
        self.assertTrue(applied)
        self.assertEqual(events, [("built in the reactor thread", False), ("push answered", 200), "built",
                                  ("started in the reactor thread", True)])
