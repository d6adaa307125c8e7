"""The Cassandra token store: the store contract and the original's tables on a real node,
a cluster that is missing, unreachable, mute or back, and TLS to it.

The tests that need the node of `make test-cassandra` are skipped without
it; those with an unreachable cluster only need the driver.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from sylkpush.config import CassandraSettings
from sylkpush.testing.certs import CertificateAuthority
from sylkpush.testing.tcp_proxy import TCPProxy
from sylkpush.tokens import StorageUnavailable
from sylkpush.tokens.cassandra_cluster import NodeIdentity
from sylkpush.tokens.cassandra_schema import DEFAULT_TABLE, DEVICES_TABLE
from sylkpush.tokens.cassandra_store import CassandraTokenStore
from tests.cassandra_node import (CA, DRIVER_MISSING, TWISTED_LOOP_DEPRECATED, NodeTestCase, close_store,
                                  forget_driver_timers, node_settings)
from tests.doubles import capture_logs
from tests.helpers import post
from tests.test_token_store import StoreContract, device


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_store(testcase: unittest.TestCase, settings: CassandraSettings, ca_file: str = "", **options: Any
               ) -> CassandraTokenStore:
    store = CassandraTokenStore(settings, ca_file, reactor, **options)
    testcase.addCleanup(close_store, store)
    return store


class CassandraContractTests(StoreContract, NodeTestCase):
    """The contract every token store obeys (tests/test_token_store.py), on the node."""

    @defer.inlineCallbacks
    def setUp(self):
        yield self.connect_shared()
        StoreContract.setUp(self)

    def new_store(self):
        return make_store(self, node_settings())


class OriginalTablesTests(NodeTestCase):
    """The rows as the original server, SylkServer and OpenSIPS see them."""

    @defer.inlineCallbacks
    def setUp(self):
        yield self.connect_shared()
        self.domain = f"{uuid.uuid4().hex[:12]}.example.com"
        self.store = make_store(self, node_settings())
        yield self.store.open()

    def device(self, *args, **kwargs):
        kwargs.setdefault("domain", self.domain)
        return device(*args, **kwargs)

    @defer.inlineCallbacks
    def rows(self, username="alice"):
        rows = yield self.execute(f"SELECT * FROM {self.keyspace}.{DEFAULT_TABLE} WHERE username = %s AND "
                                  "domain = %s", (username, self.domain))
        return [(r.device_id, r.app_id, r.device_token, r.background_token, r.platform, r.silent, r.user_agent)
                for r in rows]

    @defer.inlineCallbacks
    def marked(self, username="alice"):
        rows = yield self.execute(f"SELECT opensipsval FROM {self.keyspace}.{DEVICES_TABLE} WHERE opensipskey = %s",
                                  (f"{username}@{self.domain}",))
        return [row.opensipsval for row in rows]

    @defer.inlineCallbacks
    def test_rows_and_mobile_devices(self):
        self.assertEqual((yield self.marked()), [])
        yield self.store.store(self.device("d1", token="voip", background="alert", silent=True))
        yield self.store.store(self.device("d2", platform="firebase", token="fcm", silent=False, user_agent=None))
        self.assertEqual((yield self.rows()), [
            ("d1", "com.example.sylk", "voip", "alert", "apple", "1", "Sylk 5"),
            ("d2", "com.example.sylk", "fcm", None, "firebase", "0", None)])
        self.assertEqual((yield self.marked()), ["1"])
        self.assertTrue((yield self.store.remove("alice", self.domain, "com.example.sylk", "d1")))
        self.assertEqual((yield self.marked()), ["1"])  # d2 is left
        [d2] = yield self.store.devices("alice", self.domain)
        self.assertTrue((yield self.store.remove_expired(d2)))
        self.assertEqual((yield self.marked()), [])  # the last device went
        self.assertEqual((yield self.rows()), [])
        yield self.store.store(self.device("d3"))
        self.assertEqual((yield self.marked()), ["1"])

    @defer.inlineCallbacks
    def test_rows_the_original_wrote_are_read(self):
        # the original stored platform names as clients sent them in old versions, silent as "1"/"0"
        for device_id, platform, silent in (("a", "ios", "1"), ("b", "android", "0"), ("c", "Apple", None)):
            yield self.execute(f"INSERT INTO {self.keyspace}.{DEFAULT_TABLE} (username, domain, device_id, app_id, "
                               "device_token, platform, silent) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                               ("bob", self.domain, device_id, "com.example.sylk", f"t-{device_id}", platform, silent))
        found = yield self.store.devices("bob", self.domain)
        self.assertEqual([(d.device_id, d.platform, d.silent, d.background_token, d.user_agent) for d in found],
                         [("a", "apple", True, None, None), ("b", "firebase", False, None, None),
                          ("c", "apple", False, None, None)])

    @defer.inlineCallbacks
    def test_a_row_without_a_token_can_be_removed(self):
        yield self.execute(f"INSERT INTO {self.keyspace}.{DEFAULT_TABLE} (username, domain, device_id, app_id, "
                           "platform) VALUES (%s, %s, %s, %s, %s)", ("carol", self.domain, "d1", "app", "apple"))
        self.assertTrue((yield self.store.remove("carol", self.domain, "app", "d1")))
        self.assertEqual((yield self.rows("carol")), [])

    @defer.inlineCallbacks
    def test_a_removal_never_undoes_a_later_registration(self):
        old = self.device("d1", token="old")
        yield self.store.store(old)
        execute = self.store._execute
        registered_again = []

        def racing(name, values):
            # another server registers the device again between the read and the delete
            if name == "delete" and not registered_again:
                registered_again.append(True)
                return self.store.store(self.device("d1", token="new")).addCallback(
                    lambda _: execute(name, values))
            return execute(name, values)
        self.store._execute = racing
        removed = yield self.store.remove_expired(old)
        self.assertTrue(removed)  # the row it read is gone...
        [kept] = yield self.store.devices("alice", self.domain)
        self.assertEqual(kept.device_token, "new")  # ...and the registration after it stays
        self.assertEqual((yield self.marked()), ["1"])

    @defer.inlineCallbacks
    def test_the_mark_stays_for_a_registration_during_the_last_removal(self):
        yield self.store.store(self.device("d1"))
        execute = self.store._execute
        registered = []

        def racing(name, values):
            # the account is found empty, then a device registers before the mark is removed
            if name == "unmark" and not registered:
                registered.append(True)
                return self.store.store(self.device("d2")).addCallback(lambda _: execute(name, values))
            return execute(name, values)
        self.store._execute = racing
        self.assertTrue((yield self.store.remove("alice", self.domain, "com.example.sylk", "d1")))
        self.assertEqual(registered, [True])
        self.assertEqual((yield self.marked()), ["1"])

    def test_status(self):
        status = self.store.status()
        self.assertEqual({k: status[k] for k in ("backend", "state", "up", "table", "tls", "nodes")},
                         {"backend": "cassandra", "state": "open", "up": True, "table": "sylkpush_tests.push_tokens",
                          "tls": False, "nodes": {os.environ["SYLKPUSH_CASSANDRA"]: "up"}})
        self.assertNotIn("password", repr(status))


class MissingSchemaTests(NodeTestCase):

    @defer.inlineCallbacks
    def keyspaces(self):
        rows = yield self.execute("SELECT keyspace_name FROM system_schema.keyspaces")
        return {row.keyspace_name for row in rows}

    @defer.inlineCallbacks
    def test_a_missing_keyspace_is_reported_with_its_cql_then_used_once_made(self):
        yield self.connect_shared()
        keyspace = "sylkpush_missing_" + uuid.uuid4().hex[:8]
        clock = task.Clock()
        store = make_store(self, node_settings(keyspace), clock=clock)
        failure = yield self.assertFailure(store.open(), StorageUnavailable)
        reason = str(failure)
        self.assertIn(f"keyspace {keyspace} does not exist; this server never creates it", reason)
        self.assertNotIn("\n", reason)
        self.assertIn(f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication", reason)
        self.assertEqual(store.status()["reason"], reason)
        self.assertNotIn(keyspace, (yield self.keyspaces()))
        yield self.assertFailure(store.store(device()), StorageUnavailable)
        # the CQL in the line makes what is missing; the next attempt finds it
        self.addCleanup(self.execute, f"DROP KEYSPACE IF EXISTS {keyspace}")
        cql = reason.split("`")[1]
        for statement in cql.split(";"):
            if statement.strip():
                yield self.execute(statement)
        [retry] = clock.getDelayedCalls()
        clock.advance(retry.getTime())
        yield store._attempt_done()
        self.assertEqual(store.status()["state"], "open")
        yield store.store(device())
        self.assertEqual(len((yield store.devices("alice", "example.com"))), 1)

    @defer.inlineCallbacks
    def test_a_missing_table_is_named(self):
        yield self.connect()  # a keyspace of its own, with both tables...
        yield self.execute(f"DROP TABLE {self.keyspace}.{DEVICES_TABLE}")
        store = make_store(self, node_settings(self.keyspace, table="site_tokens"))
        reason = str((yield self.assertFailure(store.open(), StorageUnavailable)))
        self.assertIn(f"table {self.keyspace}.site_tokens and table {self.keyspace}.{DEVICES_TABLE} do not exist",
                      reason)
        self.assertNotIn("CREATE KEYSPACE", reason)
        self.assertIn(f"CREATE TABLE IF NOT EXISTS {self.keyspace}.site_tokens (", reason)
        self.assertIn(f"CREATE TABLE IF NOT EXISTS {self.keyspace}.{DEVICES_TABLE} (", reason)


class LoginTests(NodeTestCase):

    skip = NodeTestCase.skip or (None if node_settings().username else "the node runs without PasswordAuthenticator")

    @defer.inlineCallbacks
    def test_bad_credentials_are_the_reason(self):
        store = make_store(self, node_settings(password="wrong"))
        reason = str((yield self.assertFailure(store.open(), StorageUnavailable)))
        self.assertIn("Bad credentials", reason)
        self.assertNotIn("wrong", reason)


class TLSTests(NodeTestCase):

    skip = NodeTestCase.skip or (None if CA else "the node takes no TLS (tests/cassandra/node --tls optional)")

    @defer.inlineCallbacks
    def test_the_cluster_s_ca_is_trusted(self):
        yield self.connect_shared()
        store = make_store(self, node_settings(), ca_file=CA)
        yield store.open()
        self.assertTrue(store.status()["tls"])
        yield store.store(device(domain="tls.example.com"))
        self.assertTrue((yield store.remove("alice", "tls.example.com", "com.example.sylk", "dev-1")))

    @defer.inlineCallbacks
    def test_another_ca_is_refused(self):
        other = CertificateAuthority("not the cluster's CA").write(self.directory())
        store = make_store(self, node_settings(), ca_file=other)
        reason = str((yield self.assertFailure(store.open(), StorageUnavailable)))
        self.assertIn("certificate verify failed", reason)

    @defer.inlineCallbacks
    def test_an_unreadable_ca_file_is_the_reason(self):
        store = make_store(self, node_settings(), ca_file="/nonexistent/ca.pem")
        reason = str((yield self.assertFailure(store.open(), StorageUnavailable)))
        self.assertIn("/nonexistent/ca.pem", reason)

    def directory(self) -> str:
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        return path


class NodeIdentityTests(unittest.TestCase):
    """The node's certificate must name the address connected to, or the name that led there."""

    skip = DRIVER_MISSING or None

    def check(self, names, address, by_address=None):
        from OpenSSL import crypto
        capture_logs(self)
        ca = CertificateAuthority()
        issued = ca.issue(names[0], server_names=names)
        certificate = crypto.load_certificate(crypto.FILETYPE_PEM, issued.cert_pem)

        class Connection:
            def get_app_data(self):
                return self

            transport = property(lambda self: self)

            def getPeer(self):  # noqa: N802
                return type("Address", (), {"host": address})()
        identity = NodeIdentity(by_address or {})
        return identity.verify(Connection(), certificate, 0, 0, 1), identity.refused

    def test_the_address_or_the_contact_point_name(self):
        self.assertEqual(self.check(["10.0.0.5"], "10.0.0.5"), (True, ""))
        self.assertEqual(self.check(["cass1.example.com"], "10.0.0.5", {"10.0.0.5": {"cass1.example.com"}}),
                         (True, ""))
        ok, refused = self.check(["cass2.example.com", "10.0.0.6"], "10.0.0.5", {"10.0.0.5": {"cass1.example.com"}})
        self.assertFalse(ok)
        self.assertEqual(refused, "the certificate of 10.0.0.5 does not name 10.0.0.5 or cass1.example.com")


class UnreachableClusterTests(unittest.TestCase):
    """Nothing listens at the contact point: no node is needed, only the driver."""

    skip = DRIVER_MISSING or None
    suppress = [TWISTED_LOOP_DEPRECATED]

    def setUp(self):
        self.logs = capture_logs(self, names=("sylkpush", "cassandra"))

    @defer.inlineCallbacks
    def test_requests_fail_at_once_and_connecting_is_tried_again(self):
        logs = self.logs
        clock = task.Clock()
        store = make_store(self, CassandraSettings(contact_points=("127.0.0.1",), port=closed_port()), clock=clock)
        waiting = store.devices("alice", "example.com")  # asked before open: waits for the first attempt
        opened = store.open()
        self.assertEqual(store.status()["state"], "connecting")
        reason = str((yield self.assertFailure(opened, StorageUnavailable)))
        self.assertIn("no Cassandra node could be used", reason)
        self.assertIn("refused", reason.lower())
        yield self.assertFailure(waiting, StorageUnavailable)
        status = store.status()
        self.assertEqual((status["state"], status["up"], status["reason"]), ("unavailable", False, reason))
        # while it is down, requests are answered at once
        failure = yield self.assertFailure(store.store(device()), StorageUnavailable)
        self.assertEqual(str(failure), reason)
        # tried again after 1 s, then 2 s, ...; the same reason is not logged again
        delays = []
        for _ in range(3):
            [retry] = clock.getDelayedCalls()
            delays.append(retry.getTime() - clock.seconds())
            clock.advance(delays[-1])
            yield store._attempt_done()
        self.assertEqual(delays, [1.0, 2.0, 4.0])
        self.assertEqual(logs.matching("still unavailable"), [])

    @defer.inlineCallbacks
    def test_the_driver_s_connection_tracebacks_become_our_one_line(self):
        logs = self.logs
        store = make_store(self, CassandraSettings(contact_points=("127.0.0.1",), port=closed_port()))
        yield self.assertFailure(store.open(), StorageUnavailable)
        self.assertEqual([line for line in logs.lines if "Traceback" in line], [])
        self.assertEqual(logs.matching("Control connection failed"), [])

    @defer.inlineCallbacks
    def test_closing_while_connecting(self):
        store = make_store(self, CassandraSettings(contact_points=("127.0.0.1",), port=closed_port()))
        opened = store.open()
        yield store.close()
        yield self.assertFailure(opened, StorageUnavailable)
        self.assertEqual(store.status()["state"], "closed")


    @defer.inlineCallbacks
    def test_a_server_answers_v1_and_says_why_v2_cannot(self):
        from tests.helpers import SYLK_APPLE, start_server, wakeup
        self.addCleanup(forget_driver_timers)
        server, url = start_server(self, SYLK_APPLE, f"[Cassandra]\ncluster_contact_points = 127.0.0.1:{closed_port()}\n")
        self.assertEqual(server.tokens.backend, "cassandra")
        code, body, _ = yield post(url + "/v2/tokens/alice@example.com", {
            "app-id": "com.example.sylk", "platform": "apple", "token": "a1", "device-id": "d1"})
        self.assertEqual(code, 503)
        self.assertTrue(body["description"].startswith("token storage unavailable: no Cassandra node could be used "
                                                       "(127.0.0.1:"), body)
        code, body, _ = yield post(url + "/push", wakeup())
        self.assertEqual(code, 200, body)
        code, body, _ = yield post(url + "/health", None, method="GET")
        storage = body["data"]["token-storage"]
        self.assertEqual((code, storage["state"], storage["up"]), (200, "unavailable", False))


class DriverMissingTests(unittest.TestCase):

    @defer.inlineCallbacks
    def test_the_reason_says_what_to_install_and_nothing_is_tried_again(self):
        from sylkpush.tokens import cassandra_cluster

        def missing():
            raise cassandra_cluster.DriverMissing("the DataStax cassandra-driver is not installed (...); Debian: "
                                                  "apt-get install python3-cassandra")
        self.patch(cassandra_cluster, "driver", missing)
        clock = task.Clock()
        store = CassandraTokenStore(CassandraSettings(contact_points=("127.0.0.1",)), "", reactor, clock=clock)
        self.addCleanup(store.close)
        reason = str((yield self.assertFailure(store.open(), StorageUnavailable)))
        self.assertIn("apt-get install python3-cassandra", reason)
        self.assertEqual(clock.getDelayedCalls(), [])
        failure = yield self.assertFailure(store.devices("alice", "example.com"), StorageUnavailable)
        self.assertEqual(str(failure), reason)


class OutageTests(NodeTestCase):
    """The node goes away (a proxy in between is cut or muted) and comes back."""

    @defer.inlineCallbacks
    def setUp(self):
        self.logs = capture_logs(self)
        yield self.connect_shared()
        host, _, port = os.environ["SYLKPUSH_CASSANDRA"].rpartition(":")
        self.proxy = TCPProxy(reactor, host, int(port))
        self.proxy.listen()
        self.addCleanup(self.proxy.stop)
        self.domain = f"{uuid.uuid4().hex[:12]}.example.com"
        self.store = make_store(self, node_settings(port=self.proxy.port), request_timeout=1.0)
        yield self.store.open()
        yield self.store.store(device(domain=self.domain))

    @defer.inlineCallbacks
    def test_a_stopped_node_then_back(self):
        logs = self.logs
        yield self.proxy.cut()
        failure = yield self.assertFailure(self.store.devices("alice", self.domain), StorageUnavailable)
        self.assertIn("Cassandra", str(failure))
        yield self.until(lambda: not self.store.status()["up"], "down")
        status = self.store.status()
        self.assertEqual((status["state"], status["nodes"]), ("unavailable", {f"127.0.0.1:{self.proxy.port}": "down"}))
        self.assertIn("no Cassandra node is up", status["reason"])
        failure = yield self.assertFailure(self.store.store(device("dev-2", domain=self.domain)), StorageUnavailable)
        self.assertIn("no Cassandra node", str(failure))
        yield self.until(lambda: logs.matching("no Cassandra node is up"), "said")
        [line] = logs.matching("no Cassandra node is up")
        self.assertIn(f"(127.0.0.1:{self.proxy.port} down): v2 requests are answered 503 until one is back", line)
        self.proxy.restore()
        yield self.until(lambda: self.store.status()["up"], "up again")
        found = yield self.store.devices("alice", self.domain)
        self.assertEqual([d.device_id for d in found], ["dev-1"])
        yield self.until(lambda: logs.matching("Cassandra reachable again"), "said")
        [line] = logs.matching("Cassandra reachable again")
        self.assertIn(f"(127.0.0.1:{self.proxy.port} up): v2 requests are served", line)

    @defer.inlineCallbacks
    def test_a_node_that_stops_answering_costs_the_request_timeout_only(self):
        self.proxy.mute()
        failure = yield self.assertFailure(self.store.devices("alice", self.domain), StorageUnavailable)
        self.assertTrue(str(failure).startswith("Cassandra did not answer within 1 s"), str(failure))
        yield self.proxy.cut()  # the driver drops what it had sent on muted connections
        self.proxy.restore()
        yield self.until(lambda: self.store.status()["up"], "up again")
        found = yield self.until_found()
        self.assertEqual([d.device_id for d in found], ["dev-1"])

    @defer.inlineCallbacks
    def until_found(self):
        for _ in range(300):
            try:
                found = yield self.store.devices("alice", self.domain)
                return found
            except StorageUnavailable:
                yield task.deferLater(reactor, 0.1, lambda: None)
        self.fail("the store did not answer again")
