"""A base for tests against the real Cassandra node of `make test-cassandra`.

tests/cassandra/node starts the node and passes it as SYLKPUSH_CASSANDRA
(host:port), with SYLKPUSH_CASSANDRA_USERNAME and _PASSWORD when it runs
PasswordAuthenticator, and SYLKPUSH_CASSANDRA_CA when its CQL port also
takes TLS; without SYLKPUSH_CASSANDRA the tests are skipped.

Store and daemon tests share one keyspace, :data:`SHARED_KEYSPACE` (made
once per process, with the shipped schema, and kept: schema changes are
the slow part of a test), and keep apart by using domains of their own.
"""

import dataclasses
import os
import uuid
from typing import Any, Optional

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.python import threadable
from twisted.trial import unittest, util

from sylkpush.config import CassandraSettings
from sylkpush.tokens import cassandra_async
from sylkpush.tokens.cassandra_schema import DEFAULT_TABLE, schema_statements

try:
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.io.twistedreactor import TwistedConnection
    from cassandra.policies import DCAwareRoundRobinPolicy
except ImportError as exc:
    DRIVER_MISSING = f"the DataStax cassandra-driver is not importable ({exc})"
else:
    DRIVER_MISSING = ""

NODE = os.environ.get("SYLKPUSH_CASSANDRA", "")
USERNAME = os.environ.get("SYLKPUSH_CASSANDRA_USERNAME", "")
PASSWORD = os.environ.get("SYLKPUSH_CASSANDRA_PASSWORD", "")
CA = os.environ.get("SYLKPUSH_CASSANDRA_CA", "")
SHARED_KEYSPACE = "sylkpush_tests"
NODE_MISSING = "" if NODE else (
    "no Cassandra node: `make test-cassandra` starts one, or set SYLKPUSH_CASSANDRA=host:port")

# Driver 3.30 warns at every TwistedConnection that its Twisted event loop is
# deprecated, removal planned for 3.31 (see README); that is known here.
TWISTED_LOOP_DEPRECATED = util.suppress(category=DeprecationWarning, message=r".*Twisted event loop is deprecated")


def forget_driver_timers() -> None:
    """Drop the reactor call the driver's Twisted loop keeps for request timeouts.

    TwistedLoop schedules one callLater for its earliest request timer and
    leaves it pending after the request ends (or the cluster shuts down);
    trial counts it as a dirty reactor.  Cancelling it and servicing the
    timers at once drops finished ones and reschedules any that are live.
    """
    from sylkpush.tokens.cassandra_cluster import driver
    for connection_class in {TwistedConnection, driver()[3]}:  # the driver's and the store's
        loop = getattr(connection_class, "_loop", None)
        task = getattr(loop, "_timeout_task", None)
        if task is not None and task.active():
            task.cancel()
            loop._on_loop_timer()


def node_settings(keyspace: str = SHARED_KEYSPACE, **changes: Any) -> CassandraSettings:
    """[Cassandra] settings for the test node (``changes`` override them)."""
    host, _, port = NODE.rpartition(":")
    settings = CassandraSettings(contact_points=(host,), port=int(port or 9042), keyspace=keyspace,
                                 username=USERNAME, password=PASSWORD)
    return dataclasses.replace(settings, **changes)


def general_ini(settings: CassandraSettings, ca_file: str = "") -> str:
    """general.ini's [Cassandra] section for ``settings``."""
    lines = ["[Cassandra]", "cluster_contact_points = " + ", ".join(f"{host}:{settings.port}"
                                                                   for host in settings.contact_points),
             f"keyspace = {settings.keyspace}", f"table = {settings.table}"]
    if settings.username:
        lines += [f"username = {settings.username}", f"password = {settings.password}"]
    if ca_file:
        lines.append(f"ca_file = {ca_file}")
    return "\n".join(lines) + "\n"


def close_store(store: Any) -> Deferred:
    """Close a Cassandra store and drop the driver's leftover timer (see forget_driver_timers)."""
    return store.close().addCallback(lambda _: forget_driver_timers())


#: fired once the shared keyspace exists in this process
_shared_keyspace: Optional[Deferred] = None


class NodeTestCase(unittest.TestCase):
    """Each test makes its own cluster object and works in a keyspace of its own."""

    skip = DRIVER_MISSING or NODE_MISSING or None  # trial skips on any value but None
    suppress = [TWISTED_LOOP_DEPRECATED]

    def cluster(self, username: str = USERNAME, password: str = PASSWORD, connection_class: Any = None) -> Any:
        """A Cluster for the node, shut down after the test.

        It uses the driver's Twisted connection class unless told another.
        """
        host, _, port = NODE.rpartition(":")
        profile = ExecutionProfile(load_balancing_policy=DCAwareRoundRobinPolicy(), request_timeout=30)
        cluster = Cluster([host], port=int(port), connection_class=connection_class or TwistedConnection,
                          execution_profiles={EXEC_PROFILE_DEFAULT: profile},
                          auth_provider=PlainTextAuthProvider(username, password) if username else None)

        def shut_down() -> Deferred:
            return cassandra_async.shutdown(reactor, cluster).addCallback(lambda _: forget_driver_timers())
        self.addCleanup(shut_down)
        return cluster

    @inlineCallbacks
    def connect(self, connection_class: Any = None) -> Any:
        """A session, with a fresh keyspace holding the shipped schema (dropped afterwards)."""
        self.session = yield cassandra_async.connect(reactor, self.cluster(connection_class=connection_class))
        self.keyspace = "sylkpush_test_" + uuid.uuid4().hex[:12]
        for statement in schema_statements(self.keyspace, DEFAULT_TABLE):
            yield self.execute(statement)
        self.addCleanup(self.execute, f"DROP KEYSPACE IF EXISTS {self.keyspace}")
        return self.session

    @inlineCallbacks
    def until(self, predicate: Any, what: str, limit: float = 60.0) -> Any:
        """Wait (polling every 50 ms) until ``predicate()`` is true; fail after ``limit`` seconds."""
        for _ in range(int(limit / 0.05)):
            if predicate():
                return
            yield deferLater(reactor, 0.05, lambda: None)
        self.fail(f"not {what} after {limit} s")

    @inlineCallbacks
    def connect_shared(self) -> Any:
        """A session, with :data:`SHARED_KEYSPACE` and its tables there."""
        global _shared_keyspace
        self.session = yield cassandra_async.connect(reactor, self.cluster())
        self.keyspace = SHARED_KEYSPACE
        if _shared_keyspace is None:
            _shared_keyspace = self._create_shared()
        yield _shared_keyspace
        return self.session

    @inlineCallbacks
    def _create_shared(self) -> Any:
        global _shared_keyspace
        try:
            for statement in schema_statements(SHARED_KEYSPACE, DEFAULT_TABLE):
                yield self.execute(statement)
        except Exception:
            _shared_keyspace = None  # the next test tries again
            raise

    @inlineCallbacks
    def execute(self, query: Any, parameters: Any = None) -> Any:
        """cassandra_async.execute, checking that the answer arrives in the reactor thread."""
        rows = yield cassandra_async.execute(reactor, self.session, query, parameters)
        self.assertTrue(threadable.isInIOThread(), "a driver answer reached a Deferred outside the reactor thread")
        return rows
