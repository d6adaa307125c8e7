"""Several worker processes on one listening socket (``workers`` in general.ini).

One Python reactor thread is the limit of one process; with ``workers = N``
(``auto``: one per CPU) the server opens the API's listening socket once and
forks N workers that all accept from it, each with its own reactor, push
service connections, queues and reload watcher.  The first process stays as
a supervisor: it passes SIGHUP, SIGTERM and SIGINT on to every worker, starts
again a worker that dies, and exits once all have stopped.  ``/metrics``
adds up the workers through prometheus-client's multiprocess mode (see
:mod:`sylkpush.metrics`).

The supervisor never runs a reactor or a thread while it forks: each worker
sets up its own logging, with its number on every line.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import shutil
import signal
import socket
import tempfile
import time
import traceback
from typing import Any, Callable, Dict, Optional

from twisted.internet import tcp

log = logging.getLogger(__name__)

#: the environment variable of prometheus-client's multiprocess mode
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
#: a worker that exits within this many seconds of its start is not started again
START_GRACE = 10.0
#: seconds between a worker's death and its replacement
RESTART_DELAY = 1.0
#: seconds between two checks that the supervisor is still there
PARENT_CHECK_INTERVAL = 1.0
#: pending connections the kernel holds for us: SIP proxies open many at once
#: when a burst of calls arrives (Twisted's default is 50)
LISTEN_BACKLOG = 1024


def listening_socket(host: str, port: int, backlog: int = LISTEN_BACKLOG) -> socket.socket:
    """A non-blocking TCP socket listening on ``host``:``port``, for the workers to share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class _TakeTurns(tcp.Port):
    """A listening port the workers share: each wake-up accepts one
    connection, so a burst of callers is spread over the workers (the least
    busy first) instead of going to the one that woke first."""

    def doRead(self) -> None:  # noqa: N802 (Twisted's name)
        self.numberAccepts = 1
        super().doRead()


def share_port(reactor: Any, sock: socket.socket, factory: Any, tls: Any = None) -> Any:
    """Serve ``factory`` (over TLS with the ``tls`` options) on the
    supervisor's listening socket ``sock``; the listening port."""
    if tls is not None:
        from twisted.protocols.tls import TLSMemoryBIOFactory
        factory = TLSMemoryBIOFactory(tls, False, factory)
    port = _TakeTurns._fromListeningDescriptor(reactor, sock.fileno(), sock.family, factory)
    port.startListening()
    return port


def watch_parent(reactor: Any, parent: int) -> Any:
    """Stop this worker's reactor (draining as on SIGTERM) when its supervisor is gone."""
    from twisted.internet.task import LoopingCall

    def check() -> None:
        if os.getppid() != parent:
            log.warning("the supervisor (pid %d) is gone: stopping", parent)
            checking.stop()
            reactor.stop()
    checking = LoopingCall(check)
    checking.clock = reactor
    checking.start(PARENT_CHECK_INTERVAL, now=False)
    return checking


class Supervisor:
    """Forks ``count`` workers, each running ``work(index)`` (1-based) and
    exiting with what it returns; passes signals on; starts again a worker
    that dies after its start.  ``start_logging`` and ``stop_logging`` set
    up and tear down this process's logging around each fork, so that no
    logging thread runs while it forks; ``stopping`` is called when SIGTERM or
    SIGINT arrives."""

    def __init__(self, count: int, work: Callable[[int], int], start_logging: Callable[[], Any],
                 stop_logging: Callable[[], None], stopping: Callable[[], None] = lambda: None) -> None:
        self.count = count
        self.work = work
        self.start_logging = start_logging
        self.stop_logging = stop_logging
        #: called once when SIGTERM or SIGINT arrives
        self.on_stop = stopping
        #: pid -> (worker number, when it started)
        self.children: Dict[int, tuple] = {}
        self.stopping = False
        #: written to by SIGTERM/SIGINT: ends the pause before a worker is started
        #: again (a pipe, not a lock, which the signal handler could find held)
        self._stopped_read, self._stopped_write = os.pipe()
        self.exit_code = 0

    def run(self) -> int:
        """Start the workers and wait until all have exited; the exit code of the server."""
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        previous = {signum: signal.signal(signum, self._signal) for signum in handled}
        try:
            for index in range(1, self.count + 1):
                self._fork(index)
            log.info("%d workers started: %s", self.count, ", ".join(
                f"worker {number} (pid {pid})" for pid, (number, _) in sorted(self.children.items())))
            while self.children:
                self._reap()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            os.close(self._stopped_read)
            os.close(self._stopped_write)
        return self.exit_code

    def _fork(self, index: int) -> None:
        self.stop_logging()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                # terminal signals (Ctrl-C) go to the supervisor alone, which passes them on once
                os.setpgid(0, 0)
                os.close(self._stopped_read)  # the supervisor's
                os.close(self._stopped_write)
                for signum in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(signum, signal.SIG_DFL)
                # until the server handles it (a reload): a SIGHUP must not end a worker that starts
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                code = self.work(index)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        self.start_logging()
        self.children[pid] = (index, time.monotonic())

    def _signal(self, signum: int, frame: Any) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT) and not self.stopping:
            self.stopping = True
            os.write(self._stopped_write, b"x")
            self.on_stop()
        for pid in list(self.children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _reap(self) -> None:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            self.children.clear()
            return
        if pid not in self.children:
            return
        index, started = self.children.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        _forget_metrics_of(pid)
        if self.stopping:
            log.info("worker %d (pid %d) exited with %d", index, pid, code)
            if code != 0:
                self.exit_code = 1
            return
        if time.monotonic() - started < START_GRACE:
            log.error("worker %d (pid %d) exited with %d right after its start: stopping the others", index,
                      pid, code)
            self.exit_code = 1
            self._signal(signal.SIGTERM, None)
            return
        log.error("worker %d (pid %d) exited with %d; starting it again", index, pid, code)
        # this process runs no reactor; a stop cuts the pause short
        select.select([self._stopped_read], [], [], RESTART_DELAY)
        if not self.stopping:
            self._fork(index)


def _forget_metrics_of(pid: int) -> None:
    """Drop the live gauges of a worker that exited (its counters stay in the sums)."""
    directory = os.environ.get(METRICS_DIR_VARIABLE)
    if not directory:
        return
    from prometheus_client import multiprocess
    try:
        multiprocess.mark_process_dead(pid, directory)
    except OSError as exc:
        log.warning("cannot remove the metrics of pid %d: %s", pid, exc)


def run_workers(count: int, host: str, port: int, serve: Callable[[int, socket.socket], int],
                start_logging: Callable[[], Any], stop_logging: Callable[[], None],
                before_fork: Optional[Callable[[], None]] = None) -> int:
    """Open the listening socket, fork ``count`` workers running ``serve(index, socket)``
    and supervise them; the server's exit code."""
    try:
        sock = listening_socket(host, port)
    except OSError as exc:
        reason = "the port is in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        log.error("cannot listen on %s port %d: %s", host, port, reason)
        return 1
    metrics = tempfile.mkdtemp(prefix="sylk-pushserver-metrics-")
    os.environ[METRICS_DIR_VARIABLE] = metrics
    # prometheus-client reads the variable when it is imported, which it was
    # already (sylkpush.config needs it): the metrics the workers create must
    # keep their values in the directory
    from prometheus_client import values
    values.ValueClass = values.get_value_class()
    try:
        if before_fork is not None:
            before_fork()
        # at a stop the supervisor's copy of the socket is closed at once: once
        # every worker has closed its own, new callers are refused, not left waiting
        supervisor = Supervisor(count, lambda index: serve(index, sock), start_logging, stop_logging,
                                stopping=sock.close)
        return supervisor.run()
    finally:
        sock.close()
        shutil.rmtree(metrics, ignore_errors=True)
        del os.environ[METRICS_DIR_VARIABLE]
