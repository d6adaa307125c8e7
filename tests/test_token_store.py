"""The embedded token store (SQLite in spool_dir) and the import of the original's pickle file."""

from __future__ import annotations

import collections
import os
import pickle
import sqlite3
import uuid

from twisted.internet import defer, reactor
from twisted.trial import unittest

from sylkpush.tokens import Device, StorageUnavailable, normalize_device_id, split_account, split_token
from sylkpush.tokens.pickle_import import PICKLE_NAME, PickleRefused, load
from sylkpush.tokens.sqlite import DATABASE_NAME, SQLiteTokenStore
from tests.doubles import capture_logs


def device(device_id="dev-1", app_id="com.example.sylk", token="t1", background=None, username="alice",
           domain="example.com", platform="apple", silent=True, user_agent="Sylk 5") -> Device:
    return Device(username, domain, device_id, app_id, token, background, platform, silent, user_agent)


def original_entry(app_id, device_id, token, platform="apple", background=None, silent=True, user_agent="Sylk"):
    """A registration as the original server pickled it (its request model's fields)."""
    return {"app_id": app_id, "platform": platform, "token": token, "device_id": device_id, "silent": silent,
            "user_agent": user_agent, "background_token": background}


def write_original_file(directory, accounts):
    """The original's webrtc_device_tokens: a defaultdict of account -> {app_id-device_id: entry}."""
    tokens = collections.defaultdict()
    for account, entries in accounts.items():
        tokens[account] = {f"{e['app_id']}-{e['device_id']}": e for e in entries}
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, PICKLE_NAME), "wb") as stream:
        pickle.dump(tokens, stream)


class Evil:
    """Unpickling this would create a file (the restricted unpickler must refuse it)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


class HelperTests(unittest.TestCase):

    def test_device_id_loses_only_the_urn_wrapping(self):
        self.assertEqual(normalize_device_id("<urn:uuid:d0a1-22dd>"), "d0a1-22dd")
        self.assertEqual(normalize_device_id("drun-1"), "drun-1")  # the original's strip() ate "drun"
        self.assertEqual(normalize_device_id("plain"), "plain")

    def test_apple_tokens_carry_a_background_token(self):
        self.assertEqual(split_token("apple", "voip-alert"), ("voip", "alert"))
        self.assertEqual(split_token("apple", "a-b-c"), ("a", "b-c"))
        self.assertEqual(split_token("apple", "voip"), ("voip", None))
        self.assertEqual(split_token("firebase", "fcm-token:with-dash"), ("fcm-token:with-dash", None))

    def test_accounts(self):
        self.assertEqual(split_account("alice@example.com"), ("alice", "example.com"))
        self.assertEqual(split_account("a@b@c"), ("a", "b@c"))
        for bad in ("alice", "@example.com", "alice@", ""):
            self.assertRaises(ValueError, split_account, bad)


class StoreContract:
    """What every token store does; a TestCase mixes it in with ``new_store()``
    (a store not opened yet, closed at cleanup).  Each test works in a domain
    of its own, so that stores shared between tests (a Cassandra keyspace)
    do not mix their devices."""

    def setUp(self):
        self.domain = f"{uuid.uuid4().hex[:12]}.example.com"
        self.store = self.new_store()

    def device(self, *args, **kwargs) -> Device:
        kwargs.setdefault("domain", self.domain)
        return device(*args, **kwargs)

    def listed(self, username="alice", device_id=None):
        return self.store.devices(username, self.domain, device_id)

    @defer.inlineCallbacks
    def test_store_replace_list_remove(self):
        self.store.open()  # not waited for: work waits for it
        yield self.store.store(self.device("dev-2", token="x"))
        yield self.store.store(self.device("dev-1", token="old"))
        yield self.store.store(self.device("dev-1", token="new", background="bg", silent=False, user_agent=None))
        yield self.store.store(self.device("dev-1", app_id="org.other"))
        yield self.store.store(self.device("dev-1", username="bob"))
        found = yield self.listed()
        self.assertEqual([(d.device_id, d.app_id, d.device_token) for d in found],
                         [("dev-1", "com.example.sylk", "new"), ("dev-1", "org.other", "t1"),
                          ("dev-2", "com.example.sylk", "x")])
        self.assertEqual(found[0], self.device("dev-1", token="new", background="bg", silent=False,
                                               user_agent=None))
        self.assertEqual(found[1], self.device("dev-1", app_id="org.other"))
        one = yield self.listed(device_id="dev-1")
        self.assertEqual([(d.device_id, d.app_id) for d in one], [("dev-1", "com.example.sylk"),
                                                                  ("dev-1", "org.other")])
        removed = yield self.store.remove("alice", self.domain, "org.other", "dev-1")
        again = yield self.store.remove("alice", self.domain, "org.other", "dev-1")
        self.assertEqual((removed, again), (True, False))
        self.assertEqual(len((yield self.listed())), 2)
        [bob] = yield self.listed("bob")
        self.assertEqual(bob, self.device("dev-1", username="bob"))
        nobody = yield self.listed("carol")
        self.assertEqual(nobody, [])
        none = yield self.listed(device_id="dev-9")
        self.assertEqual(none, [])

    @defer.inlineCallbacks
    def test_remove_expired_spares_a_device_registered_again(self):
        yield self.store.open()
        stale = self.device(token="old", background="bg")
        yield self.store.store(stale)
        yield self.store.store(self.device(token="fresh"))
        removed = yield self.store.remove_expired(stale)
        self.assertFalse(removed)
        [kept] = yield self.listed()
        self.assertEqual(kept.device_token, "fresh")
        # the background token counts too
        removed = yield self.store.remove_expired(self.device(token="fresh", background="other"))
        self.assertFalse(removed)
        removed = yield self.store.remove_expired(kept)
        self.assertTrue(removed)
        self.assertEqual((yield self.listed()), [])
        removed = yield self.store.remove_expired(kept)
        self.assertFalse(removed)

    @defer.inlineCallbacks
    def test_devices_survive_a_new_store(self):
        yield self.store.open()
        yield defer.gatherResults([self.store.store(self.device(f"dev-{n:03}")) for n in range(300)])
        yield self.store.close()
        self.store = self.new_store()
        yield self.store.open()
        found = yield self.listed()
        self.assertEqual([d.device_id for d in found], [f"dev-{n:03}" for n in range(300)])

    @defer.inlineCallbacks
    def test_a_device_is_listed_once_its_store_fires(self):
        yield self.store.open()
        missing = []

        @defer.inlineCallbacks
        def stored(_, device_id):
            found = yield self.listed(device_id=device_id)
            if not found:
                missing.append(device_id)
        yield defer.gatherResults([self.store.store(self.device(f"dev-{n}")).addCallback(stored, f"dev-{n}")
                                   for n in range(100)])
        self.assertEqual(missing, [])

    @defer.inlineCallbacks
    def test_closed_store_refuses_work(self):
        yield self.store.open()
        pending = self.store.store(self.device())
        yield self.store.close()
        yield pending  # asked before close: done
        yield self.assertFailure(self.listed(), StorageUnavailable)
        self.assertEqual(self.store.status()["state"], "closed")
        self.assertFalse(self.store.status()["up"])

    @defer.inlineCallbacks
    def test_status_when_open(self):
        yield self.store.open()
        status = self.store.status()
        self.assertEqual((status["backend"], status["state"], status["up"]), (self.store.backend, "open", True))
        self.assertNotIn("reason", status)


class SQLiteStoreTests(StoreContract, unittest.TestCase):

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        StoreContract.setUp(self)

    def new_store(self):
        store = SQLiteTokenStore(self.directory, reactor)
        self.addCleanup(store.close)
        return store

    @defer.inlineCallbacks
    def test_created_on_first_open_in_wal_mode(self):
        yield self.store.open()
        path = os.path.join(self.directory, DATABASE_NAME)
        self.assertTrue(os.path.exists(path))
        with sqlite3.connect(path) as connection:
            self.assertEqual(connection.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        self.assertEqual(self.store.status(), {"backend": "sqlite", "path": path, "up": True, "state": "open",
                                               "devices": 0})

    @defer.inlineCallbacks
    def test_devices_are_counted(self):
        yield self.store.open()
        yield defer.gatherResults([self.store.store(self.device(f"dev-{n}")) for n in range(3)])
        yield self.store.store(self.device("dev-1", token="again"))
        self.assertEqual(self.store.status()["devices"], 3)
        yield self.store.remove("alice", self.domain, "com.example.sylk", "dev-1")
        yield self.store.remove("alice", self.domain, "com.example.sylk", "dev-1")
        self.assertEqual(self.store.status()["devices"], 2)
        yield self.store.remove_expired(self.device("dev-2"))
        self.assertEqual(self.store.status()["devices"], 1)
        yield self.store.close()
        self.store = self.new_store()
        yield self.store.open()
        self.assertEqual(self.store.status()["devices"], 1)

    @defer.inlineCallbacks
    def test_a_device_is_committed_when_its_store_fires(self):
        yield self.store.open()
        path = os.path.join(self.directory, DATABASE_NAME)
        unseen = []

        def committed(_, device_id):
            # another connection sees only committed data
            with sqlite3.connect(path) as connection:
                if not connection.execute("SELECT 1 FROM push_tokens WHERE device_id = ?", (device_id,)).fetchone():
                    unseen.append(device_id)
        yield defer.gatherResults([self.store.store(device(f"dev-{n}")).addCallback(committed, f"dev-{n}")
                                   for n in range(200)])
        self.assertEqual(unseen, [])

    @defer.inlineCallbacks
    def test_stores_of_several_processes_share_the_count(self):
        # two stores on one database: what several workers have
        yield self.store.open()
        other = self.new_store()
        yield other.open()
        yield defer.gatherResults([self.store.store(device(f"a{n}")) for n in range(3)])
        yield other.store(device("b1"))
        self.assertEqual(other.status()["devices"], 4)
        yield self.store.remove("alice", "example.com", "com.example.sylk", "b1")
        self.assertEqual(other.status()["devices"], 4)  # what its last write left
        self.assertEqual(self.store.status()["devices"], 3)

    @defer.inlineCallbacks
    def test_bursts_are_committed_together(self):
        batches = []

        class Counting(SQLiteTokenStore):
            def _run_batch(self, jobs):
                batches.append(len(jobs))
                return super()._run_batch(jobs)

        store = Counting(self.directory, reactor)
        self.addCleanup(store.close)
        yield store.open()
        del batches[:]
        yield defer.gatherResults([store.store(device(f"dev-{n}")) for n in range(1000)])
        found = yield store.devices("alice", "example.com")
        self.assertEqual(len(found), 1000)
        self.assertEqual(sum(batches), 1001)
        self.assertLess(len(batches), 100)  # one transaction (and one fsync) per burst, not per store

    @defer.inlineCallbacks
    def test_a_failing_statement_fails_only_its_caller(self):
        yield self.store.open()
        bad = device(token=None)  # violates NOT NULL
        results = yield defer.DeferredList([self.store.store(device("dev-1")), self.store.store(bad),
                                            self.store.store(device("dev-2"))], consumeErrors=True)
        self.assertEqual([ok for ok, _ in results], [True, False, True])
        self.assertIn("NOT NULL", results[1][1].getErrorMessage())
        found = yield self.store.devices("alice", "example.com")
        self.assertEqual([d.device_id for d in found], ["dev-1", "dev-2"])

    @defer.inlineCallbacks
    def test_unusable_directory(self):
        logs = capture_logs(self)
        with open(self.directory, "w") as stream:  # a file where the directory should be
            stream.write("x")
        yield self.assertFailure(self.store.open(), StorageUnavailable)
        failure = yield self.assertFailure(self.store.store(device()), StorageUnavailable)
        self.assertIn("cannot open", str(failure))
        status = self.store.status()
        self.assertEqual((status["up"], status["state"]), (False, "unavailable"))
        self.assertIn(self.directory, status["reason"])
        self.assertTrue(logs.matching("token storage: cannot open"))


class PickleImportTests(unittest.TestCase):

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        self.logs = capture_logs(self)

    def open_store(self):
        store = SQLiteTokenStore(self.directory, reactor)
        self.addCleanup(store.close)
        return store.open().addCallback(lambda _: store)

    @defer.inlineCallbacks
    def test_imported_once(self):
        write_original_file(self.directory, {
            "alice@example.com": [original_entry("com.example.sylk", "d1", "voip", background="alert"),
                                  original_entry("com.example.sylk", "d2", "fcm1", platform="firebase",
                                                 silent=False, user_agent=None)],
            "bob@example.com": [original_entry("org.linphone.phone", "d3", "t3", platform="android")],
        })
        store = yield self.open_store()
        found = yield store.devices("alice", "example.com")
        self.assertEqual(found, [
            device("d1", token="voip", background="alert", user_agent="Sylk"),
            device("d2", token="fcm1", platform="firebase", silent=False, user_agent=None)])
        [bob] = yield store.devices("bob", "example.com")
        self.assertEqual((bob.platform, bob.app_id), ("firebase", "org.linphone.phone"))
        self.assertTrue(self.logs.matching("imported 3 devices from"))
        # every device removed, then a restart: the old file does not bring them back
        for d in found + [bob]:
            yield store.remove(d.username, d.domain, d.app_id, d.device_id)
        yield store.close()
        store = yield self.open_store()
        self.assertEqual(store.status()["devices"], 0)
        self.assertEqual(len(self.logs.matching("imported 3 devices")), 1)

    @defer.inlineCallbacks
    def test_not_imported_into_a_database_in_use(self):
        store = yield self.open_store()
        yield store.store(device("mine"))
        yield store.close()
        write_original_file(self.directory, {"alice@example.com": [original_entry("a", "d1", "t")]})
        store = yield self.open_store()
        found = yield store.devices("alice", "example.com")
        self.assertEqual([d.device_id for d in found], ["mine"])
        self.assertTrue(self.logs.matching("is not imported: the database already holds devices"))

    @defer.inlineCallbacks
    def test_incomplete_entries_are_left_out_with_a_line(self):
        write_original_file(self.directory, {
            "alice@example.com": [original_entry("a", "d1", "t"), original_entry("a", "d2", "")],
            "no-domain": [original_entry("a", "d3", "t")],
        })
        store = yield self.open_store()
        self.assertEqual(store.status()["devices"], 1)
        self.assertTrue(self.logs.matching("left out alice@example.com a-d2: token is missing"))
        self.assertTrue(self.logs.matching("left out no-domain a-d3: 'no-domain' is not user@domain"))
        self.assertTrue(self.logs.matching("imported 1 devices from"))

    @defer.inlineCallbacks
    def test_anything_but_plain_data_is_refused(self):
        victim = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        with open(os.path.join(self.directory, PICKLE_NAME), "wb") as stream:
            pickle.dump({"alice@example.com": {"a-d1": Evil(victim)}}, stream)
        store = yield self.open_store()
        self.assertFalse(os.path.exists(victim))
        self.assertEqual(store.status()["devices"], 0)
        [line] = self.logs.matching("refused")
        self.assertIn("open is not allowed: only dictionaries, strings, booleans and None are read", line)
        self.assertIn("starting without its devices", line)

    def test_refusals(self):
        import io
        cases = [
            ({"a@b": {"k": {"token": ["list"]}}}, "accounts/a@b/k/token: a list is not allowed"),
            ({"a@b": {"k": {"silent": 1}}}, "accounts/a@b/k/silent: a int is not allowed"),
            ({1: {}}, "accounts: a int key is not allowed"),
            (["not", "a", "dict"], "the top level is a list"),
            (collections.defaultdict(list), "builtins.list is not allowed"),
            (collections.OrderedDict(), "collections.OrderedDict is not allowed"),
        ]
        for value, message in cases:
            with self.assertRaises(PickleRefused) as caught:
                load(io.BytesIO(pickle.dumps(value)))
            self.assertIn(message, str(caught.exception))
        with self.assertRaises(PickleRefused) as caught:
            load(io.BytesIO(b"not a pickle"))
        self.assertIn("not a readable pickle", str(caught.exception))
        self.assertEqual(load(io.BytesIO(pickle.dumps(collections.defaultdict(None, {"a": {}})))), {"a": {}})
