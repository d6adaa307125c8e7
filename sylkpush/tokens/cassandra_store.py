"""The token store of a cluster of servers: Apache Cassandra, in the original's tables.

Devices are rows of ``push_tokens`` (or the configured table), ``silent``
stored as the text "1" or "0"; ``mobile_devices`` holds a row (``opensipsval``
"1") for every account with a device, which SIP proxies read: it is written
with every registration and deleted when the account's last device goes.

Every statement is prepared once and runs with ``execute_async`` through
:mod:`sylkpush.tokens.cassandra_async`: the reactor never waits on the
cluster.  A removal reads the row's write time and deletes ``USING
TIMESTAMP`` that time, so it never undoes a registration made after the row
it read (by this server or another one), without the cost of lightweight
transactions; ``mobile_devices`` is removed the same way.

The store never creates a keyspace or a table: one missing is reported in one
line with the CQL that creates it.  While the cluster cannot be reached,
requests fail at once (or after the request timeout, when nodes stop
answering) with :class:`StorageUnavailable` saying why, which the v2 API
answers 503; connecting is tried again in the background.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Coroutine, Dict, List, NoReturn, Optional, Set, Tuple, Type, TypeVar

from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, fail, gatherResults
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

from sylkpush.config import CassandraSettings
from sylkpush.notification import PLATFORM_ALIASES
from sylkpush.tokens import cassandra_async
from sylkpush.tokens.base import Device, StorageError, StorageUnavailable, TokenStore, passing_through
from sylkpush.tokens.cassandra_cluster import REQUEST_TIMEOUT, DriverMissing, NodeIdentity, make_cluster
from sylkpush.tokens.cassandra_schema import DEVICES_TABLE, schema_statements

log = logging.getLogger(__name__)

T = TypeVar("T")

COLUMNS = ("username, domain, device_id, app_id, device_token, background_token, platform, silent, "
           "user_agent")
KEY = "username = ? AND domain = ? AND device_id = ? AND app_id = ?"

#: the driver's loggers whose tracebacks become one line unless [Cassandra] debug is set
DRIVER_LOGGERS = ("cassandra", "cassandra.cluster", "cassandra.connection", "cassandra.pool",
                  "cassandra.policies", "cassandra.io.twistedreactor", "cassandra.metadata")
#: what the driver logs (with a traceback) at each failed connection attempt; the store says it in one line
REPORTED_BY_THE_STORE = ("Control connection failed to connect", "[control connection] Error connecting to")


def statements(table: str) -> Dict[str, str]:
    """The CQL of every request, for ``table`` (``keyspace.table``) and its keyspace's mobile_devices."""
    devices = table.rsplit(".", 1)[0] + "." + DEVICES_TABLE
    return {
        # one request for the two rows; unlogged: they are in different partitions, and a
        # registration that fails half way is answered with an error and sent again
        "register": (f"BEGIN UNLOGGED BATCH INSERT INTO {table} ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?); "
                     f"INSERT INTO {devices} (opensipskey, opensipsval) VALUES (?, '1'); APPLY BATCH"),
        "account": f"SELECT {COLUMNS} FROM {table} WHERE username = ? AND domain = ?",
        "device": f"SELECT {COLUMNS} FROM {table} WHERE username = ? AND domain = ? AND device_id = ?",
        "row": f"SELECT device_token, background_token, writetime(device_token) FROM {table} WHERE {KEY}",
        "delete": f"DELETE FROM {table} USING TIMESTAMP ? WHERE {KEY}",
        "any": f"SELECT device_id FROM {table} WHERE username = ? AND domain = ? LIMIT 1",
        "marked": f"SELECT writetime(opensipsval) FROM {devices} WHERE opensipskey = ?",
        "unmark": f"DELETE FROM {devices} USING TIMESTAMP ? WHERE opensipskey = ?",
    }


def _row(device: Device) -> Tuple[Any, ...]:
    return (device.username, device.domain, device.device_id, device.app_id, device.device_token,
            device.background_token, device.platform, "1" if device.silent else "0", device.user_agent)


def _device(row: Any) -> Device:
    """A row as the original server, SylkServer or this one wrote it."""
    platform = (row.platform or "").strip().lower()
    silent = (row.silent or "").strip().lower() in ("1", "true", "yes")
    return Device(row.username, row.domain, row.device_id, row.app_id, row.device_token, row.background_token,
                  PLATFORM_ALIASES.get(platform, platform), silent, row.user_agent)


def describe(error: BaseException) -> str:
    """A driver error in one line, without the driver's nested reprs where it can."""
    errors = getattr(error, "errors", None)
    if isinstance(errors, dict) and errors:
        nodes = "; ".join(f"{node}: {describe(cause) if isinstance(cause, BaseException) else cause}"
                          for node, cause in errors.items())
        return f"no Cassandra node could be used ({nodes})"
    if isinstance(errors, dict):
        return "no Cassandra node is up"
    text = str(error).strip() or type(error).__name__
    return text if len(text) < 300 else text[:300] + "..."


def quiet_driver_logs(debug: bool) -> None:
    """The driver at DEBUG with ``debug``; otherwise its warnings and errors, one line each."""
    logging.getLogger("cassandra").setLevel(logging.DEBUG if debug else logging.WARNING)
    for name in DRIVER_LOGGERS:
        logger = logging.getLogger(name)
        if debug:
            logger.removeFilter(_one_line)
        elif _one_line not in logger.filters:
            logger.addFilter(_one_line)


def _one_line(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    if message.startswith(REPORTED_BY_THE_STORE):
        return False
    if record.exc_info and record.exc_info[1] is not None:
        record.msg, record.args = f"{message} ({describe(record.exc_info[1])})", None
        record.exc_info = record.exc_text = None
    return True


class CassandraTokenStore(TokenStore):
    """Devices in the cluster of ``settings``.

    ``ca_file`` is ``settings.ca_file`` resolved against the configuration
    directory.  ``reactor`` must be the global reactor: the driver's Twisted
    connections use it.  ``clock`` (IReactorTime, default ``reactor``)
    times the attempts to connect again, every ``retry_min`` seconds at
    first, doubling up to ``retry_max``.
    """

    backend = "cassandra"
    retry_min = 1.0
    retry_max = 10.0

    def __init__(self, settings: CassandraSettings, ca_file: str, reactor: Any, clock: Any = None,
                 request_timeout: float = REQUEST_TIMEOUT) -> None:
        self.settings = settings
        self.ca_file = ca_file
        self.reactor = reactor
        self.clock = clock or reactor
        self.request_timeout = request_timeout
        self.table = f"{settings.keyspace}.{settings.table}"
        self.state = "not opened"
        self.problem = "not opened yet"
        self._cluster: Any = None
        self._session: Any = None
        self._identity: Optional[NodeIdentity] = None
        self._prepared: Dict[str, Any] = {}
        self._attempt: Optional[Deferred] = None
        self._retry: Any = None
        self._delay = self.retry_min
        self._waiting: List[Deferred] = []
        self._in_flight: Set[Deferred] = set()
        self._closing: Optional[Deferred] = None
        self._shutting_down: List[Deferred] = []
        self._nodes_up = False

    # -- the interface

    def open(self) -> "Deferred[None]":
        if self.state != "not opened":
            raise RuntimeError("the token store is already open")
        quiet_driver_logs(self.settings.debug)
        self.state = "connecting"
        self.problem = "connecting to the Cassandra cluster"
        opened: Deferred = Deferred()
        self._waiting.append(opened)
        self._connect()
        return opened

    def store(self, device: Device) -> "Deferred[None]":
        async def work() -> None:
            await self._execute("register", _row(device) + (device.account,))
        return self._run(work)

    def remove(self, username: str, domain: str, app_id: str, device_id: str) -> "Deferred[bool]":
        return self._run(lambda: self._remove((username, domain, device_id, app_id), None))

    def remove_expired(self, device: Device) -> "Deferred[bool]":
        return self._run(lambda: self._remove(device.key, (device.device_token, device.background_token)))

    def devices(self, username: str, domain: str, device_id: Optional[str] = None) -> "Deferred[List[Device]]":
        async def work() -> List[Device]:
            if device_id is None:
                rows = await self._execute("account", (username, domain))
            else:
                rows = await self._execute("device", (username, domain, device_id))
            return [_device(row) for row in rows]
        return self._run(work)

    def status(self) -> Dict[str, Any]:
        status: Dict[str, Any] = {
            "backend": self.backend, "contact_points": [f"{host}:{self.settings.port}"
                                                        for host in self.settings.contact_points],
            "table": self.table, "tls": bool(self.ca_file), "state": self.state, "up": False}
        if self.state == "open":
            nodes = self._nodes()
            status["nodes"] = nodes
            if "up" in nodes.values():
                status["up"] = True
            else:
                status["state"] = "unavailable"
                status["reason"] = "no Cassandra node is up; the driver keeps trying to reach them"
        else:
            status["reason"] = self.problem
        return status

    def close(self) -> "Deferred[None]":
        if self._closing is None:
            self._closing = ensureDeferred(self._close())
        closed: "Deferred[None]" = Deferred()
        self._closing.addBoth(passing_through, closed)
        return closed

    # -- requests

    def _run(self, work: Callable[[], Coroutine[Any, Any, T]]) -> "Deferred[T]":
        """Run ``work`` now when the cluster is usable, after the first attempt
        to connect while it is under way, or fail saying why not."""
        if self._closing is not None:
            return fail(StorageUnavailable("the token store is closed"))
        if self.state == "open":
            done: Deferred = ensureDeferred(work())
        elif self._waiting:
            waited: Deferred = Deferred()
            self._waiting.append(waited)
            done = waited.addCallback(lambda _: self._run(work))
        else:
            return fail(StorageUnavailable(self.problem))
        self._in_flight.add(done)
        return done.addBoth(self._finished, done)

    def _finished(self, result: Any, done: Deferred) -> Any:
        self._in_flight.discard(done)
        return result

    def _execute(self, name: str, values: Tuple[Any, ...]) -> "Deferred[List[Any]]":
        return cassandra_async.execute(self.reactor, self._session, self._prepared[name], values,
                                       timeout=self.request_timeout).addErrback(self._request_failed, name)

    def _request_failed(self, failure: Failure, name: str) -> NoReturn:
        timed_out, unavailable, refused = _driver_errors()
        error = failure.value
        if isinstance(error, timed_out):
            node = getattr(error, "last_host", None)
            raise StorageUnavailable(f"Cassandra did not answer within {self.request_timeout:g} s"
                                     + (f" (node {node})" if node else "")) from None
        if isinstance(error, unavailable):
            raise StorageUnavailable(f"Cassandra: {describe(error)}") from None
        if isinstance(error, refused):
            log.error("token storage: Cassandra refused %s: %s", name, describe(error))
            raise StorageError(f"Cassandra: {describe(error)}") from None
        failure.raiseException()

    async def _remove(self, key: Tuple[str, str, str, str], tokens: Optional[Tuple[str, Optional[str]]]) -> bool:
        """Delete the row at ``key`` (only with these ``tokens`` when given) as of
        its write time; then forget the account in mobile_devices if it has no device left."""
        account = f"{key[0]}@{key[1]}"
        # the mark's write time is read before the account is found empty: a
        # registration after that rewrites the mark later, and keeps it
        row, mark = await gatherResults([self._execute("row", key), self._execute("marked", (account,))],
                                        consumeErrors=True).addErrback(_first_error)
        if not row or (tokens is not None and (row[0].device_token, row[0].background_token) != tokens):
            return False
        written = row[0][2]
        if written is None:  # a row without device_token, not written by a server: delete it as of now
            written = int(time.time() * 1e6)
        await self._execute("delete", (written,) + key)
        left = await self._execute("any", key[:2])
        if not left and mark and mark[0][0] is not None:
            await self._execute("unmark", (mark[0][0], account))
        return True

    # -- connecting

    def _connect(self) -> None:
        self._retry = None
        self._attempt = ensureDeferred(self._try_to_connect())
        self._attempt.addErrback(self._attempt_failed)

    async def _try_to_connect(self) -> None:
        try:
            self._cluster, self._identity = await deferToThreadPool(
                self.reactor, self.reactor.getThreadPool(), make_cluster, self.settings, self.ca_file)
        except DriverMissing as exc:
            self._give_up(str(exc))
            return
        if self._closing is not None:
            return
        self._session = await cassandra_async.connect(self.reactor, self._cluster)
        if self._closing is not None:
            return
        missing = self._missing_schema()
        if missing:
            raise _SchemaMissing(missing)
        names = list(statements(self.table))
        prepared = await gatherResults([cassandra_async.prepare(self.reactor, self._session, query)
                                        for query in statements(self.table).values()],
                                       consumeErrors=True).addErrback(_first_error)
        self._prepared = dict(zip(names, prepared))
        if self._closing is not None:
            return
        self._cluster.register_listener(_NodeWatch(lambda: self.reactor.callFromThread(self._nodes_changed)))
        self.state, self.problem, self._delay, self._nodes_up = "open", "", self.retry_min, True
        log.info("token storage: Cassandra %s ready at %s%s", self.table, ", ".join(f"{host}:{self.settings.port}" for host in self.settings.contact_points),
                 " over TLS" if self.ca_file else "")
        self._wake(None)

    def _nodes(self) -> Dict[str, str]:
        """Each node the driver knows: up, down, or not used (another datacenter)."""
        return {str(host.endpoint): ("up" if host.is_up else "down" if host.is_up is False else "not used")
                for host in self._cluster.metadata.all_hosts()}

    def _nodes_changed(self) -> None:
        """Say when the last node went down, and when one is back (the driver reconnects)."""
        if self.state != "open" or self._cluster is None:
            return
        nodes = self._nodes()
        up = "up" in nodes.values()
        if up == self._nodes_up:
            return
        self._nodes_up = up
        listed = ", ".join(f"{node} {state}" for node, state in sorted(nodes.items()))
        if up:
            log.info("token storage: Cassandra reachable again (%s): v2 requests are served", listed)
        else:
            log.error("token storage: no Cassandra node is up (%s): v2 requests are answered 503 until one is "
                      "back", listed)

    def _attempt_done(self) -> Deferred:
        """Fires once the attempt to connect under way (if any) has ended."""
        done: "Deferred[None]" = Deferred()
        if self._attempt is None:
            done.callback(None)
        else:
            # not the attempt's own Deferred: close() may be called from its callbacks
            self._attempt.addBoth(passing_through, done)
        return done

    def _missing_schema(self) -> str:
        """One line with the CQL that creates what is missing; "" when all is there."""
        keyspace = self._cluster.metadata.keyspaces.get(self.settings.keyspace)
        create = schema_statements(self.settings.keyspace, self.settings.table)
        if keyspace is None:
            what, needed = f"keyspace {self.settings.keyspace} does not exist", create
        else:
            tables = [name for name in (self.settings.table, DEVICES_TABLE) if name not in keyspace.tables]
            if not tables:
                return ""
            what = " and ".join(f"table {self.settings.keyspace}.{name}" for name in tables)
            what += " does not exist" if len(tables) == 1 else " do not exist"
            needed = [statement for statement in create[1:]
                      if any(f".{name} (" in statement for name in tables)]
        cql = " ".join(" ".join(statement.split()) + ";" for statement in needed)
        return (f"{what}; this server never creates it: create it with cqlsh, e.g. `{cql}` "
                f"(python3 -m sylkpush.tokens.cassandra_schema prints this CQL with comments)")

    def _attempt_failed(self, failure: Failure) -> None:
        error = failure.value
        if isinstance(error, (_SchemaMissing, OSError)):  # OSError: the CA file
            problem = str(error)
        elif isinstance(error, Exception) and type(error).__module__.startswith("cassandra"):
            problem = describe(error)
            if "certificate verify failed" in problem and self._identity is not None and self._identity.refused:
                problem += f" ({self._identity.refused})"
        else:
            log.error("token storage: connecting to Cassandra failed unexpectedly: %s", failure.getTraceback())
            problem = f"{type(error).__name__}: {error}"
        self._shut_down()
        if self._closing is not None:
            return
        if self.state == "unavailable" and problem != self.problem:
            # the first failure is open()'s, which its caller reports
            log.error("token storage: Cassandra %s still unavailable, now: %s", self.table, problem)
        else:
            log.debug("token storage: Cassandra %s unavailable: %s; trying again in %g s", self.table, problem,
                      self._delay)
        self.state, self.problem = "unavailable", problem
        self._retry = self.clock.callLater(self._delay, self._connect)
        self._delay = min(self._delay * 2, self.retry_max)
        self._wake(StorageUnavailable(problem))

    def _give_up(self, problem: str) -> None:
        """Nothing to try again: open() fails with ``problem``, and every request."""
        self.state, self.problem = "unavailable", problem
        self._wake(StorageUnavailable(problem))

    def _shut_down(self) -> None:
        """Let the cluster object go (in the thread pool); close() waits for it."""
        cluster, self._cluster, self._session = self._cluster, None, None
        if cluster is None:
            return
        done = cassandra_async.shutdown(self.reactor, cluster)
        done.addErrback(lambda failure: log.error("token storage: closing the Cassandra connections failed: %s",
                                                  failure.getErrorMessage()))
        self._shutting_down.append(done)
        done.addBoth(self._shut_down_done, done)

    def _shut_down_done(self, result: object, done: "Deferred[None]") -> object:
        self._shutting_down.remove(done)
        return result

    def _wake(self, error: Optional[Exception]) -> None:
        """Answer open() and the requests that waited for the first attempt."""
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if error is None:
                waiter.callback(None)
            else:
                waiter.errback(error)

    async def _close(self) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        await self._attempt_done()  # bounded by the driver's connect timeout
        self._wake(StorageUnavailable("the token store is closed"))
        # what was asked before close is finished (each request is bounded by its timeout)
        await DeferredList(list(self._in_flight), consumeErrors=True)
        self.state, self.problem = "closed", "the token store is closed"
        self._shut_down()
        await DeferredList(list(self._shutting_down))


_Errors = Tuple[Type[BaseException], ...]


def _driver_errors() -> Tuple[Type[BaseException], _Errors, _Errors]:
    """The driver's timeout, its other errors that mean "try again later" (503), and the rest (500)."""
    from cassandra import DriverException, OperationTimedOut, RequestExecutionException
    from cassandra.cluster import NoHostAvailable
    from cassandra.connection import ConnectionBusy, ConnectionException
    return (OperationTimedOut, (NoHostAvailable, RequestExecutionException, ConnectionException, ConnectionBusy),
            (DriverException,))


class _NodeWatch:
    """A driver host-state listener: ``changed`` is called (in a driver thread) at every change."""

    def __init__(self, changed: Callable[[], None]) -> None:
        self.changed = changed

    def on_up(self, host: Any) -> None:
        self.changed()

    on_down = on_add = on_remove = on_up


class _SchemaMissing(Exception):
    """The keyspace or a table is not there; the message has the CQL that makes it."""


def _first_error(failure: Failure) -> NoReturn:
    """gatherResults' FirstError as the error it wraps."""
    from twisted.internet.defer import FirstError
    if failure.check(FirstError):
        failure.value.subFailure.raiseException()
    failure.raiseException()
