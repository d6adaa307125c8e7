"""The embedded token store: one SQLite database in ``spool_dir``.

Every statement runs in one thread of the store's own, which owns the
connection; the reactor only queues work and receives results through
``callFromThread``.  The thread takes the work that has queued up meanwhile
and runs it in one transaction (each piece in its own savepoint, so one
failure does not undo the others), commits, and only then answers all of it:
one fsync covers a whole burst of registrations.  With WAL and
``synchronous = FULL`` a committed registration survives the process being
killed at any point, and the machine losing power.

Several workers (processes) may share the database: each write transaction
holds SQLite's write lock (``BEGIN IMMEDIATE``, waiting up to
``BUSY_TIMEOUT_MS`` for another process), and the device count lives in the
database (``meta``), so every process reads the count its last write left.
:func:`prepare_database` creates the database and imports the pickle file
once, before the workers start.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

from twisted.internet.defer import Deferred, fail

from sylkpush.tokens import pickle_import
from sylkpush.tokens.base import Device, StorageError, StorageUnavailable, TokenStore, passing_through

log = logging.getLogger(__name__)

DATABASE_NAME = "push_tokens.sqlite"
#: pieces of work committed together at most
MAX_BATCH = 512
#: seconds a statement waits for another process holding the database
BUSY_TIMEOUT_MS = 5000
#: seconds between two attempts to open a database that could not be opened
REOPEN_INTERVAL = 10.0

SCHEMA = (
    # the layout of the original's Cassandra table: key (username, domain, device_id, app_id)
    """CREATE TABLE IF NOT EXISTS push_tokens (
        username TEXT NOT NULL,
        domain TEXT NOT NULL,
        device_id TEXT NOT NULL,
        app_id TEXT NOT NULL,
        device_token TEXT NOT NULL,
        background_token TEXT,
        platform TEXT NOT NULL,
        silent INTEGER NOT NULL,
        user_agent TEXT,
        PRIMARY KEY (username, domain, device_id, app_id)
    ) WITHOUT ROWID""",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
)
COLUMNS = ("username, domain, device_id, app_id, device_token, background_token, platform, silent, "
           "user_agent")
KEY = "username = ? AND domain = ? AND device_id = ? AND app_id = ?"
UPSERT = (f"INSERT INTO push_tokens ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
          "ON CONFLICT (username, domain, device_id, app_id) DO UPDATE SET "
          "device_token = excluded.device_token, background_token = excluded.background_token, "
          "platform = excluded.platform, silent = excluded.silent, user_agent = excluded.user_agent")

#: a piece of work: runs in the store's thread, returns (result, change in the device count)
Work = Callable[[sqlite3.Connection], Tuple[Any, int]]
#: what a piece of work is given: the connection (None for the opening)
C = TypeVar("C", sqlite3.Connection, None)


def _row(device: Device) -> Tuple[Any, ...]:
    return (device.username, device.domain, device.device_id, device.app_id, device.device_token,
            device.background_token, device.platform, int(device.silent), device.user_agent)


def _device(row: Tuple[Any, ...]) -> Device:
    username, domain, device_id, app_id, token, background, platform, silent, user_agent = row
    return Device(username, domain, device_id, app_id, token, background, platform, bool(silent), user_agent)


def _exists(connection: sqlite3.Connection, key: Tuple[str, str, str, str]) -> bool:
    return connection.execute(f"SELECT 1 FROM push_tokens WHERE {KEY}", key).fetchone() is not None


class _Job:
    __slots__ = ("work", "deferred", "result", "delta", "error")

    def __init__(self, work: Work, deferred: Deferred) -> None:
        self.work = work
        self.deferred = deferred
        self.result: Any = None
        self.delta = 0
        self.error: Optional[Exception] = None


class SQLiteTokenStore(TokenStore):
    """Devices in ``directory``/push_tokens.sqlite.

    ``reactor`` is where results are delivered (``callFromThread``).  On the
    first start, an original server's pickle file in ``directory`` is
    imported (see :mod:`sylkpush.tokens.pickle_import`).
    """

    backend = "sqlite"

    def __init__(self, directory: str, reactor: Any, synchronous: str = "FULL") -> None:
        self.directory = directory
        self.path = os.path.join(directory, DATABASE_NAME)
        self.reactor = reactor
        self.synchronous = synchronous
        self.count: Optional[int] = None
        self.problem = "not opened yet"
        self._connection: Optional[sqlite3.Connection] = None
        #: work for the store's thread; None tells it to stop
        self._queue: "queue.SimpleQueue[Optional[_Job]]" = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        self._opened_at = 0.0
        self._stopped: Optional[Deferred] = None

    # -- the interface

    def open(self) -> "Deferred[None]":
        if self._thread is not None:
            raise RuntimeError("the token store is already open")
        self._thread = threading.Thread(target=self._run, name="sylkpush-tokens", daemon=True)
        self._thread.start()
        return self._submit(self._open)

    def store(self, device: Device) -> "Deferred[None]":
        def work(connection: sqlite3.Connection) -> Tuple[None, int]:
            new = not _exists(connection, device.key)
            connection.execute(UPSERT, _row(device))
            return None, int(new)
        return self._submit(work)

    def remove(self, username: str, domain: str, app_id: str, device_id: str) -> "Deferred[bool]":
        def work(connection: sqlite3.Connection) -> Tuple[bool, int]:
            cursor = connection.execute(f"DELETE FROM push_tokens WHERE {KEY}",
                                        (username, domain, device_id, app_id))
            return cursor.rowcount > 0, -cursor.rowcount
        return self._submit(work)

    def remove_expired(self, device: Device) -> "Deferred[bool]":
        def work(connection: sqlite3.Connection) -> Tuple[bool, int]:
            cursor = connection.execute(
                f"DELETE FROM push_tokens WHERE {KEY} AND device_token = ? AND background_token IS ?",
                device.key + (device.device_token, device.background_token))
            return cursor.rowcount > 0, -cursor.rowcount
        return self._submit(work)

    def devices(self, username: str, domain: str, device_id: Optional[str] = None) -> "Deferred[List[Device]]":
        def work(connection: sqlite3.Connection) -> Tuple[List[Device], int]:
            query = f"SELECT {COLUMNS} FROM push_tokens WHERE username = ? AND domain = ?"
            values: Tuple[str, ...] = (username, domain)
            if device_id is not None:
                query += " AND device_id = ?"
                values += (device_id,)
            rows = connection.execute(query + " ORDER BY device_id, app_id", values).fetchall()
            return [_device(row) for row in rows], 0
        return self._submit(work)

    def status(self) -> Dict[str, Any]:
        up = self._connection is not None and not self._closed
        status: Dict[str, Any] = {"backend": self.backend, "path": self.path, "up": up,
                                  "state": "open" if up else "closed" if self._closed else "unavailable"}
        if not up:
            status["reason"] = self.problem
        if self.count is not None:
            status["devices"] = self.count
        return status

    def close(self) -> "Deferred[None]":
        if self._stopped is None:
            self._closed = True
            self._stopped = Deferred()
            if self._thread is None:
                self._stopped.callback(None)
            else:
                self._queue.put(None)  # the thread stops when it reaches this
        stopped: "Deferred[None]" = Deferred()
        self._stopped.addBoth(passing_through, stopped)
        return stopped

    # -- the reactor side

    def _submit(self, work: Work) -> Deferred:
        if self._closed or self._thread is None:
            state = "closed" if self._closed else "not open"
            return fail(StorageUnavailable(f"the token store is {state}"))
        deferred: Deferred = Deferred()
        self._queue.put(_Job(work, deferred))
        return deferred

    def _deliver(self, jobs: List[_Job]) -> None:
        for job in jobs:
            if job.error is not None:
                job.deferred.errback(job.error)
            else:
                job.deferred.callback(job.result)

    # -- the store's thread

    def _run(self) -> None:
        while True:
            jobs, stopping = self._take_batch()
            if jobs:
                try:
                    self._run_batch(jobs)
                except Exception as exc:  # a bug: every caller hears of it, the thread goes on
                    log.exception("token store: unexpected error")
                    for job in jobs:
                        job.error = job.error or StorageError(f"token store error: {type(exc).__name__}")
                self.reactor.callFromThread(self._deliver, jobs)
            if stopping:
                self._close_connection()
                assert self._stopped is not None  # set before the stop was queued
                self.reactor.callFromThread(self._stopped.callback, None)
                return

    def _take_batch(self) -> Tuple[List[_Job], bool]:
        """The work queued now (waiting for some), MAX_BATCH pieces at most,
        and whether the stop came after it."""
        jobs: List[_Job] = []
        job = self._queue.get()
        while job is not None:
            jobs.append(job)
            if len(jobs) >= MAX_BATCH:
                return jobs, False
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return jobs, False
        return jobs, True

    def _run_batch(self, jobs: List[_Job]) -> None:
        if self._connection is None:
            # opening is the first job; after a failure, opening is tried again now and then
            first = jobs[0]
            if first.work == self._open:
                first.result, first.delta, first.error = self._run_one(self._open, None)
                jobs = jobs[1:]
            elif time.monotonic() - self._opened_at >= REOPEN_INTERVAL:
                self._run_one(self._open, None)
        connection = self._connection
        if connection is None:
            for job in jobs:
                job.error = StorageUnavailable(f"the token store is unavailable: {self.problem}")
            return
        try:
            connection.execute("BEGIN IMMEDIATE")
            for number, job in enumerate(jobs):
                connection.execute(f"SAVEPOINT s{number}")
                job.result, job.delta, job.error = self._run_one(job.work, connection)
                if job.error is None:
                    connection.execute(f"RELEASE s{number}")
                else:
                    connection.execute(f"ROLLBACK TO s{number}")
                    connection.execute(f"RELEASE s{number}")
            delta = sum(job.delta for job in jobs if job.error is None)
            if delta:
                connection.execute("UPDATE meta SET value = CAST(value AS INTEGER) + ? WHERE name = 'devices'",
                                   (delta,))
            count = connection.execute("SELECT CAST(value AS INTEGER) FROM meta WHERE name = 'devices'").fetchone()
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            log.error("token store %s: a transaction failed: %s", self.path, exc)
            if connection.in_transaction:
                try:
                    connection.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            for job in jobs:
                job.error = job.error or StorageError(f"token store error: {exc}")
            return
        # the count other processes' writes left, plus ours
        self.count = count[0] if count else (self.count or 0) + delta

    @staticmethod
    def _run_one(work: Callable[[C], Tuple[Any, int]],
                 connection: C) -> Tuple[Any, int, Optional[StorageError]]:
        """``work``'s result and change in the device count, or why it failed."""
        try:
            result, delta = work(connection)
        except StorageError as exc:
            return None, 0, exc
        except sqlite3.Error as exc:
            return None, 0, StorageError(f"token store error: {exc}")
        except Exception as exc:  # a bug: reported to the caller, the thread goes on
            log.exception("token store: unexpected error")
            return None, 0, StorageError(f"token store error: {type(exc).__name__}: {exc}")
        return result, delta, None

    def _open(self, _: Optional[sqlite3.Connection] = None) -> Tuple[None, int]:
        """Open or create the database and import the original's pickle file once."""
        self._opened_at = time.monotonic()
        try:
            os.makedirs(self.directory, mode=0o750, exist_ok=True)
            connection = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000.0)
        except (OSError, sqlite3.Error) as exc:
            self.problem = f"cannot open {self.path}: {exc}"
            log.error("token storage: %s", self.problem)
            raise StorageUnavailable(self.problem) from None
        try:
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise sqlite3.OperationalError(f"journal mode is {mode}, WAL is needed")
            connection.execute(f"PRAGMA synchronous = {self.synchronous}")
            connection.execute("BEGIN IMMEDIATE")
            for statement in SCHEMA:
                connection.execute(statement)
            self._import_pickle(connection)
            count = connection.execute("SELECT count(*) FROM push_tokens").fetchone()[0]
            connection.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('devices', ?)", (str(count),))
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            connection.close()
            self.problem = f"cannot use {self.path}: {exc}"
            log.error("token storage: %s", self.problem)
            raise StorageUnavailable(self.problem) from None
        self._connection, self.count, self.problem = connection, count, ""
        log.info("token storage: %s holds %d devices", self.path, count)
        return None, 0

    def _import_pickle(self, connection: sqlite3.Connection) -> int:
        """Import the original's file when it is there, was never imported and
        the database is empty; how many devices were imported."""
        path = os.path.join(self.directory, pickle_import.PICKLE_NAME)
        if not os.path.exists(path):
            return 0
        if connection.execute("SELECT value FROM meta WHERE name = 'pickle_imported'").fetchone():
            return 0
        if connection.execute("SELECT 1 FROM push_tokens LIMIT 1").fetchone():
            log.info("token storage: %s is not imported: the database already holds devices", path)
            return 0
        try:
            devices, skipped = pickle_import.read_devices(path)
        except (pickle_import.PickleRefused, OSError) as exc:
            log.error("token storage: %s refused: %s; starting without its devices", path, exc)
            return 0
        for line in skipped:
            log.warning("token storage: %s: left out %s", path, line)
        connection.executemany(UPSERT, [_row(device) for device in devices])
        connection.execute("INSERT INTO meta (name, value) VALUES ('pickle_imported', ?)",
                           (f"{len(devices)} devices",))
        log.info("token storage: imported %d devices from %s (%d left out)", len(devices), path, len(skipped))
        return len(devices)

    def _close_connection(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except sqlite3.Error as exc:
                log.error("token store %s: closing failed: %s", self.path, exc)
            self._connection = None


def prepare_database(directory: str) -> None:
    """Create the database in ``directory`` and import the original's pickle
    file (once), then close it: what the first open does, done before
    several workers open it (StorageUnavailable when it cannot be used)."""
    store = SQLiteTokenStore(directory, reactor=None)
    store._open(None)
    store._close_connection()
