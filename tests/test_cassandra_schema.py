"""The shipped Cassandra schema and the driver-to-Deferred bridge, on a real node.

`make test-cassandra` starts a one-node Apache Cassandra on loopback
(tests/cassandra/node) and runs this module with SYLKPUSH_CASSANDRA=host:port;
without that variable the node tests are skipped.  The driver connects with
its Twisted connection class, as the daemon will.
"""

import os
import threading
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial import unittest

from sylkpush.tokens import cassandra_async
from sylkpush.tokens.cassandra_schema import (DEFAULT_TABLE, DEVICES_TABLE, check_identifier, schema_cql,
                                       schema_statements)

from .cassandra_node import PASSWORD, USERNAME, NodeTestCase

try:
    from cassandra import InvalidRequest
    from cassandra.cluster import NoHostAvailable
    from cassandra.io.twistedreactor import TwistedConnection
    from cassandra.query import SimpleStatement
except ImportError:
    pass  # NodeTestCase skips, saying why

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# system_schema.columns for the original's tables: column -> (kind, position, type).
PUSH_TOKENS_COLUMNS = {
    "username": ("partition_key", 0, "text"),
    "domain": ("partition_key", 1, "text"),
    "device_id": ("clustering", 0, "text"),
    "app_id": ("clustering", 1, "text"),
    "device_token": ("regular", -1, "text"),
    "background_token": ("regular", -1, "text"),
    "platform": ("regular", -1, "text"),
    "silent": ("regular", -1, "text"),
    "user_agent": ("regular", -1, "text"),
}
MOBILE_DEVICES_COLUMNS = {
    "opensipskey": ("partition_key", 0, "text"),
    "opensipsval": ("regular", -1, "text"),
}


class ShippedSchemaTests(unittest.TestCase):
    """resources/cassandra-schema.cql is what the code renders for the defaults."""

    def test_shipped_file_is_the_default_rendering(self) -> None:
        with open(os.path.join(ROOT, "resources", "cassandra-schema.cql"), encoding="utf-8") as stream:
            shipped = stream.read()
        self.assertEqual(shipped, schema_cql(), "regenerate it: python3 -m sylkpush.tokens.cassandra_schema "
                                                "> resources/cassandra-schema.cql")

    def test_statements_name_the_configured_keyspace_and_table(self) -> None:
        statements = schema_statements("tokens_ks", "tokens")
        self.assertEqual(len(statements), 3)
        self.assertTrue(statements[0].startswith("CREATE KEYSPACE IF NOT EXISTS tokens_ks\n"))
        self.assertTrue(statements[1].startswith("CREATE TABLE IF NOT EXISTS tokens_ks.tokens ("))
        self.assertTrue(statements[2].startswith(f"CREATE TABLE IF NOT EXISTS tokens_ks.{DEVICES_TABLE} ("))
        self.assertFalse([s for s in statements if "--" in s or ";" in s])

    def test_names_cql_cannot_take_unquoted_are_refused(self) -> None:
        for name in ("", "1st", "push-tokens", "x; DROP KEYSPACE y", 'a"b', "ks.table"):
            with self.assertRaises(ValueError) as caught:
                schema_cql(keyspace=name)
            self.assertIn("keyspace", str(caught.exception))
        self.assertEqual(check_identifier("Push_Tokens2", "table"), "Push_Tokens2")


class SchemaOnNodeTests(NodeTestCase):

    @inlineCallbacks
    def columns(self, table: str) -> Any:
        rows = yield self.execute(
            "SELECT column_name, kind, position, type FROM system_schema.columns"
            " WHERE keyspace_name = %s AND table_name = %s", (self.keyspace, table))
        return {row.column_name: (row.kind, row.position, row.type) for row in rows}

    @inlineCallbacks
    def test_tables_have_the_original_keys_and_columns(self) -> Any:
        yield self.connect()
        self.assertEqual((yield self.columns(DEFAULT_TABLE)), PUSH_TOKENS_COLUMNS)
        self.assertEqual((yield self.columns(DEVICES_TABLE)), MOBILE_DEVICES_COLUMNS)
        clustering = yield self.execute(
            "SELECT column_name, clustering_order FROM system_schema.columns WHERE keyspace_name = %s"
            " AND table_name = %s", (self.keyspace, DEFAULT_TABLE))
        self.assertEqual({row.column_name: row.clustering_order for row in clustering
                          if row.clustering_order != "none"}, {"device_id": "asc", "app_id": "asc"})
        keyspace = yield self.execute(
            "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", (self.keyspace,))
        self.assertEqual(dict(keyspace[0].replication),
                         {"class": "org.apache.cassandra.locator.SimpleStrategy", "replication_factor": "1"})

    @inlineCallbacks
    def test_loading_the_schema_again_changes_nothing(self) -> Any:
        yield self.connect()
        for statement in schema_statements(self.keyspace, DEFAULT_TABLE):
            yield self.execute(statement)
        self.assertEqual((yield self.columns(DEFAULT_TABLE)), PUSH_TOKENS_COLUMNS)

    @inlineCallbacks
    def test_configured_table_name(self) -> Any:
        yield self.connect()
        for statement in schema_statements(self.keyspace, "site_tokens"):
            yield self.execute(statement)
        self.assertEqual((yield self.columns("site_tokens")), PUSH_TOKENS_COLUMNS)


class RoundTripTests(NodeTestCase):

    @inlineCallbacks
    def test_store_read_and_remove_a_device(self) -> Any:
        session = yield self.connect()
        table = f"{self.keyspace}.{DEFAULT_TABLE}"
        insert = yield cassandra_async.prepare(
            reactor, session,
            f"INSERT INTO {table} (username, domain, device_id, app_id, device_token, background_token,"
            " platform, silent, user_agent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
        mark = yield cassandra_async.prepare(
            reactor, session,
            f"INSERT INTO {self.keyspace}.{DEVICES_TABLE} (opensipskey, opensipsval) VALUES (?, ?)")
        select = yield cassandra_async.prepare(
            reactor, session, f"SELECT * FROM {table} WHERE username = ? AND domain = ?")
        delete = yield cassandra_async.prepare(
            reactor, session,
            f"DELETE FROM {table} WHERE username = ? AND domain = ? AND device_id = ? AND app_id = ? IF EXISTS")

        written = yield self.execute(insert, ("alice", "example.com", "dev-1", "com.example.sylk", "apns-a",
                                              "voip-b", "apple", "0", "Sylk/1.0"))
        self.assertEqual(written, [])
        yield self.execute(insert, ("alice", "example.com", "dev-2", "com.example.sylk", "fcm-c", None,
                                    "firebase", "1", None))
        yield self.execute(mark, ("alice@example.com", "1"))

        rows = yield self.execute(select, ("alice", "example.com"))
        self.assertEqual([(r.device_id, r.app_id, r.device_token, r.background_token, r.platform, r.silent,
                           r.user_agent) for r in rows],
                         [("dev-1", "com.example.sylk", "apns-a", "voip-b", "apple", "0", "Sylk/1.0"),
                          ("dev-2", "com.example.sylk", "fcm-c", None, "firebase", "1", None)])
        marked = yield self.execute(f"SELECT opensipsval FROM {self.keyspace}.{DEVICES_TABLE}"
                                    " WHERE opensipskey = %s", ("alice@example.com",))
        self.assertEqual([row.opensipsval for row in marked], ["1"])
        self.assertEqual((yield self.execute(select, ("bob", "example.com"))), [])

        removed = yield self.execute(delete, ("alice", "example.com", "dev-1", "com.example.sylk"))
        self.assertTrue(removed[0].applied)
        again = yield self.execute(delete, ("alice", "example.com", "dev-1", "com.example.sylk"))
        self.assertFalse(again[0].applied)
        rows = yield self.execute(select, ("alice", "example.com"))
        self.assertEqual([row.device_id for row in rows], ["dev-2"])

    @inlineCallbacks
    def test_every_page_of_a_large_answer_is_returned(self) -> Any:
        yield self.connect()
        table = f"{self.keyspace}.{DEFAULT_TABLE}"
        for n in range(25):
            yield self.execute(f"INSERT INTO {table} (username, domain, device_id, app_id, device_token)"
                               " VALUES (%s, %s, %s, %s, %s)", ("carol", "example.com", f"dev-{n:02}", "app", f"t{n}"))
        rows = yield self.execute(SimpleStatement(
            f"SELECT device_id FROM {table} WHERE username = %s AND domain = %s", fetch_size=10),
            ("carol", "example.com"))
        self.assertEqual([row.device_id for row in rows], [f"dev-{n:02}" for n in range(25)])

    @inlineCallbacks
    def test_a_refused_statement_fails_the_deferred(self) -> Any:
        yield self.connect()
        with self.assertRaises(InvalidRequest) as caught:
            yield self.execute(f"SELECT * FROM {self.keyspace}.no_such_table")
        self.assertIn("no_such_table", str(caught.exception))

    def test_the_driver_never_runs_a_reactor_of_its_own(self) -> Deferred:
        # A test body runs before trial starts its reactor, as the daemon's
        # services start before twistd's: a TwistedConnection made now would
        # run reactor.run() in a driver thread.  Give a thread-pool worker
        # the chance to connect before the reactor runs.
        self.assertFalse(reactor.running)
        reactor.getThreadPool().start()  # as trial does once its reactor first runs
        cluster = self.cluster()
        running_at_connect = []
        connect_called = threading.Event()
        original_connect = cluster.connect

        def connect(*args: Any) -> Any:
            running_at_connect.append(reactor.running)
            connect_called.set()
            return original_connect(*args)
        cluster.connect = connect
        connected = cassandra_async.connect(reactor, cluster)
        connect_called.wait(0.5)

        @inlineCallbacks
        def check(session: Any) -> Any:
            self.session = session
            self.assertEqual(running_at_connect, [True])
            self.assertIsNone(TwistedConnection._loop._thread)
            rows = yield self.execute("SELECT release_version FROM system.local")
            self.assertEqual(rows[0].release_version[:2], "5.")
        return connected.addCallback(check)

    @inlineCallbacks
    def test_the_driver_s_own_event_loop_works_too(self) -> Any:
        # Should a driver release drop TwistedConnection, the helpers only rely
        # on callFromThread: check them with the libev loop (its own thread).
        try:
            from cassandra.io.libevreactor import LibevConnection
        except ImportError as exc:
            raise unittest.SkipTest(f"the driver has no libev loop here ({exc})")
        yield self.connect(connection_class=LibevConnection)
        table = f"{self.keyspace}.{DEVICES_TABLE}"
        yield self.execute(f"INSERT INTO {table} (opensipskey, opensipsval) VALUES (%s, %s)", ("bob@example.com", "1"))
        rows = yield self.execute(f"SELECT opensipsval FROM {table} WHERE opensipskey = %s", ("bob@example.com",))
        self.assertEqual([row.opensipsval for row in rows], ["1"])


class AuthenticationTests(NodeTestCase):

    skip = NodeTestCase.skip or (None if USERNAME else "the node runs without PasswordAuthenticator")

    @inlineCallbacks
    def test_a_wrong_password_fails_the_connection(self) -> Any:
        with self.assertRaises(NoHostAvailable) as caught:
            yield cassandra_async.connect(reactor, self.cluster(USERNAME, PASSWORD + "-wrong"))
        self.assertIn("Bad credentials", str(caught.exception))

    @inlineCallbacks
    def test_the_right_password_connects(self) -> Any:
        yield self.connect()
        rows = yield self.execute("SELECT role FROM system_auth.roles")
        self.assertIn(USERNAME, [row.role for row in rows])
