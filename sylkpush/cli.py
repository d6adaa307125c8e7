"""Command line of ``sylk-pushserver`` and of the twistd plugin."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from typing import Any, List, Optional

from twisted.python import usage

from sylkpush import __version__
from sylkpush.config import ConfigError, Settings, find_config_dir, load_settings
from sylkpush.logs import setup_logging, stop_logging

log = logging.getLogger("sylkpush")


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sylk-pushserver",
        description="Sylk Pushserver: relays wake-up requests to Apple and Firebase push services.")
    parser.add_argument("--config_dir", metavar="DIR",
                        help="configuration directory (default: /etc/sylk-pushserver, else ./config)")
    parser.add_argument("--ip", metavar="ADDRESS", help="listen address (overrides general.ini; default 0.0.0.0)")
    parser.add_argument("--port", type=int, metavar="PORT", help="listen port (overrides general.ini)")
    parser.add_argument("--no-fork", dest="no_fork", action="store_true",
                        help="stay in the foreground and log to the console")
    parser.add_argument("--debug", action="store_true", default=None,
                        help="log headers and bodies of every request")
    parser.add_argument("--drain_timeout", type=float, default=None, metavar="SECONDS",
                        help="on SIGTERM/SIGINT, how long pushes in flight may take before they "
                             "are answered 503 (default: 10)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def read_settings(config_dir: Optional[str], ip: Optional[str], port: Optional[int],
                  debug: Optional[bool]) -> Settings:
    """The settings, or ConfigError with a message for the operator."""
    directory = find_config_dir(config_dir)
    return load_settings(directory, host=ip, port=port, debug=debug)


def daemonize() -> None:
    """Detach from the terminal (double fork); stderr stays for fallback logging."""
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)


def main(argv: Optional[List[str]] = None) -> int:
    args = argument_parser().parse_args(argv)
    try:
        settings = read_settings(args.config_dir, args.ip, args.port, args.debug)
    except ConfigError as exc:
        print(f"sylk-pushserver: {exc}", file=sys.stderr)
        return 1
    if not args.no_fork:
        daemonize()
    # under systemd (stdout connected to the journal) log to the journal itself
    console = args.no_fork and not os.environ.get("JOURNAL_STREAM")

    def start_logging(worker: int = 0) -> None:
        setup_logging(foreground=console, debug=settings.debug,
                      log_file=settings.log_file if settings.log_to_file else "",
                      debug_hpack=settings.debug_hpack, worker=worker)

    start_logging()
    log.info("Sylk Pushserver %s starting with configuration in %s", __version__, settings.config_dir)
    if settings.workers == 1:
        code = serve(settings, args.drain_timeout)
    else:
        from sylkpush.tokens import prepare_store
        from sylkpush.workers import run_workers

        def worker(index: int, listening: socket.socket) -> int:
            start_logging(index)
            return serve(settings, args.drain_timeout, listening, os.getppid())

        code = run_workers(settings.workers, settings.host, settings.port, worker, start_logging, stop_logging,
                           before_fork=lambda: prepare_store(settings))
    log.info("Sylk Pushserver stopped")
    stop_logging()
    return code


def note_repeated_stops(reactor: Any) -> None:
    """Once the server is stopping, a further SIGTERM or SIGINT (systemd and
    operators repeat them when a drain takes a while) is noted, where
    Twisted's own handler would stop the stopped reactor and log a traceback."""
    def again(signum: int, frame: object) -> None:
        reactor.callFromThread(log.info, "%s: already stopping, finishing the pushes in flight",
                               signal.Signals(signum).name)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, again)


def serve(settings: Settings, drain_timeout: Optional[float], listening: Optional[socket.socket] = None,
          supervisor: int = 0) -> int:
    """Run the server in this process until it is stopped; its exit code.

    ``drain_timeout`` None: the default.  ``listening``: the API socket when a
    supervisor opened it for its workers (``supervisor``: its pid, whose death
    stops this worker)."""
    # imported here: the workers' metrics directory must be chosen before
    # prometheus-client is imported (sylkpush.service imports it)
    from twisted.internet import reactor
    from sylkpush.service import DRAIN_TIMEOUT, PushServer, tune_garbage_collector
    if drain_timeout is None:
        drain_timeout = DRAIN_TIMEOUT
    try:
        # SIGTERM/SIGINT stop the reactor, whose shutdown waits for stopService's drain
        server = PushServer(settings, reactor, drain_timeout=drain_timeout, handle_sighup=True,
                            listening=listening)
    except ConfigError as exc:
        log.error("%s", exc)
        if not listening:
            print(f"sylk-pushserver: {exc}", file=sys.stderr)
        return 1
    exit_code = []

    def start() -> None:
        try:
            server.startService()
        except Exception as exc:  # e.g. the port is taken: say so and stop
            log.error("cannot start: %s", exc)
            exit_code.append(1)
            reactor.stop()
            return
        tune_garbage_collector()
        if supervisor:
            from sylkpush.workers import watch_parent
            watch_parent(reactor, supervisor)

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", lambda: note_repeated_stops(reactor))
    reactor.addSystemEventTrigger("before", "shutdown", server.stopService)
    reactor.run()
    return exit_code[0] if exit_code else 0


class PluginOptions(usage.Options):
    """Options of ``twistd sylk-pushserver``."""

    optParameters = [
        ["config_dir", None, None, "configuration directory"],
        ["ip", None, None, "listen address (overrides general.ini)"],
        ["port", None, None, "listen port (overrides general.ini)", int],
        ["drain_timeout", None, None, "seconds to finish pending pushes at shutdown (default 10)", float],
    ]
    optFlags = [["debug", None, "log headers and bodies of every request"]]
