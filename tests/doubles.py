"""Push-client doubles with the timing of a real one, for the operations tests."""

from __future__ import annotations

import logging
from typing import Any, Dict, List

from twisted.internet.defer import Deferred, DeferredList, succeed

from sylkpush.logs import FORMAT, RedactingFilter
from sylkpush.pns.base import OutgoingPush, PushClient, PushResult


class DelayedClient(PushClient):
    """Answers 200 after ``delay`` seconds (option ``delay`` of the app, else
    :attr:`default_delay`); ``stop()`` waits for the pushes in flight, as the
    real clients' does.  A push sent after ``stop()`` is answered 503 and
    counted in :attr:`late`, so a test can prove a reload never uses a
    retired client."""

    default_delay = 0.01
    instances: List["DelayedClient"] = []

    def __init__(self, app: Any, reactor: Any) -> None:
        super().__init__(app, reactor)
        self.delay = float(app.option("delay", "") or self.default_delay)
        self.sent: List[OutgoingPush] = []
        self.late: List[OutgoingPush] = []
        self.started = False
        self.stopping = False
        self.in_flight_at_stop = 0
        self._in_flight: Dict[int, Deferred] = {}
        DelayedClient.instances.append(self)

    def start(self) -> None:
        self.started = True

    def send(self, push: OutgoingPush) -> Deferred:
        if self.stopping:
            self.late.append(push)
            return succeed(PushResult(503, "client stopped", ""))
        self.sent.append(push)
        answer: Deferred = Deferred()
        key = id(answer)
        self._in_flight[key] = answer

        def fire() -> None:
            del self._in_flight[key]
            answer.callback(PushResult(200, "OK", f"https://push.test/{push.token}", {"client": id(self)}))
        self.reactor.callLater(self.delay, fire)
        return answer

    def stop(self) -> Deferred:
        self.stopping = True
        self.in_flight_at_stop = len(self._in_flight)
        pending = list(self._in_flight.values())
        if not pending:
            return succeed(None)
        waiting = [Deferred() for _ in pending]
        for answer, done in zip(pending, waiting):
            answer.addBoth(lambda result, d=done: (d.callback(None), result)[1])
        return DeferredList(waiting)

    def status(self) -> Dict[str, Any]:
        return {"state": "stopped" if self.stopping else "connected", "queued": 0,
                "in_flight": len(self._in_flight), "reconnects": 2, "token_refreshes": 1}


def delayed_client_class(platform: str, extra_dir: str) -> type:
    return DelayedClient


class CapturedLogs(logging.Handler):
    """Every record of the ``sylkpush`` loggers (and Twisted's), formatted as
    the daemon's handlers would, after the redacting filter."""

    def __init__(self, redact: bool = True) -> None:
        super().__init__(logging.DEBUG)
        self.records: List[logging.LogRecord] = []
        self.lines: List[str] = []
        if redact:
            self.addFilter(RedactingFilter())
        self.setFormatter(logging.Formatter(FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))

    def matching(self, text: str) -> List[str]:
        return [line for line in self.lines if text in line]


def capture_logs(testcase: Any, level: int = logging.DEBUG, names: tuple = ("sylkpush",),
                 redact: bool = True) -> CapturedLogs:
    """Capture the named loggers at ``level`` until the test's cleanup.

    ``redact`` False leaves out the daemon's redacting filter, to check what
    a module itself writes.
    """
    handler = CapturedLogs(redact)
    for name in names:
        logger = logging.getLogger(name)
        previous = logger.level
        logger.addHandler(handler)
        logger.setLevel(level)
        testcase.addCleanup(logger.setLevel, previous)
        testcase.addCleanup(logger.removeHandler, handler)
    return handler


def log_to_file(testcase: Any, **options: Any) -> str:
    """Set up the daemon's own logging (``setup_logging(**options)``) with a
    log file, until the test's cleanup; returns the file's path."""
    import io
    import os
    import sys

    from sylkpush import logs

    log_file = os.path.abspath(testcase.mktemp())
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    # Twisted's own log routing is left to trial while the test runs
    testcase.patch(logs, "_forward_twisted_logs", lambda: None)
    testcase.patch(sys, "stderr", io.StringIO())  # the console copy; the file is checked
    logs.setup_logging(foreground=True, log_file=log_file, **options)

    def restore() -> None:
        logs.stop_logging()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    testcase.addCleanup(restore)
    return log_file


def start_ops_server(testcase: Any, applications: str, general: str = "",
                     find_client: Any = delayed_client_class, **options: Any):
    """:func:`tests.helpers.start_server` with a delayed client double by
    default; returns the server, its base URL and its config directory."""
    from tests.helpers import start_server

    server, url = start_server(testcase, applications, general, find_client, **options)
    return server, url, server.settings.config_dir


def write_applications(directory: str, text: str) -> None:
    """Replace applications.ini the way editors do: a new file renamed over the old."""
    import os
    path = os.path.join(directory, "applications.ini")
    with open(path + ".new", "w") as stream:
        stream.write(text)
    os.replace(path + ".new", path)
