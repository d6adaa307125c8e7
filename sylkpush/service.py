"""The running server as a Twisted service: applications, clients and the API port."""

from __future__ import annotations

import logging
import resource
import signal
import socket
from typing import Any, List, Optional

from twisted.application import service
from twisted.internet import defer, ssl
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.threads import deferToThread
from twisted.web.server import Site

from sylkpush.config import ConfigFileError, Settings, load_applications
from sylkpush.connections import RESERVED_DESCRIPTORS, ApiConnections
from sylkpush.dispatch import Dispatcher
from sylkpush.health import HealthResource
from sylkpush.metrics import Metrics, MetricsResource
from sylkpush.registry import (AppRegistry, ClientClassFinder, build_registry, default_client_class, log_problems,
                               rebuild_registry, start_clients)
from sylkpush.reload import POLL_INTERVAL, FileWatcher
from sylkpush.remote_log import RemoteLogger
from sylkpush.web import make_site

log = logging.getLogger(__name__)

#: seconds a shutdown waits for pushes in flight before answering them 503
DRAIN_TIMEOUT = 10.0
#: pending connections the kernel holds for us: SIP proxies open many at once
#: when a burst of calls arrives (Twisted's default is 50)
LISTEN_BACKLOG = 1024
#: seconds the clients get after that to close their connections
STOP_GRACE = 2.0


def within(deferred: Deferred, seconds: float, reactor: Any) -> "Deferred[bool]":
    """Fires True when ``deferred`` fires within ``seconds``, else False then.

    ``deferred`` itself is left alone (not cancelled, its result untouched).
    """
    outcome: Deferred = Deferred()
    timer = reactor.callLater(seconds, lambda: outcome.called or outcome.callback(False))

    def fired(result: Any) -> Any:
        if timer.active():
            timer.cancel()
        if not outcome.called:
            outcome.callback(True)
        return result
    deferred.addBoth(fired)
    return outcome


def raise_open_files_limit() -> int:
    """Raise the soft limit on open descriptors to the hard one (systemd's
    default soft limit, 1024, is too low for thousands of callers); the soft
    limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open files limit from %d to %d: %s", soft, wanted, exc)
    return soft


def connection_limit(configured: int, descriptors: int) -> int:
    """API connections allowed at once: max_connections, unless the process
    may not open that many descriptors besides those it needs for the rest."""
    usable = max(descriptors - RESERVED_DESCRIPTORS, descriptors // 2)
    if configured > usable:
        log.warning("max_connections is %d but only %d descriptors may be open: accepting at most %d "
                    "API connections (raise LimitNOFILE)", configured, descriptors, usable)
        return usable
    return configured


def load_tls_certificate(path: str) -> ssl.PrivateCertificate:
    """The API's certificate and key, both in one PEM file."""
    try:
        with open(path, "rb") as stream:
            return ssl.PrivateCertificate.loadPEM(stream.read())
    except OSError as exc:
        raise ConfigFileError(f"tls_certificate {path}: {exc.strerror}") from None
    except Exception as exc:  # pyOpenSSL raises several types for bad PEM
        raise ConfigFileError(f"tls_certificate {path} must hold a PEM certificate and its key: {exc}") from None


def hand_over_waiting(retired: List[Any], registry: AppRegistry) -> None:
    """Pushes still queued at a client that a reload replaces go to its
    successor (same app id and platform) instead of being answered 503:
    a reload that fixes credentials during an outage must not fail them."""
    for client in retired:
        app = registry.get(*client.app.key)
        if app is None or app.client is None:
            continue
        waiting = client.take_waiting()
        for pending in waiting:
            moved = app.client.send(pending.push)
            moved.addCallback(pending.answer)
            moved.addErrback(lambda failure, p=pending: p.fail(
                f"internal error handing the push over: {failure.getErrorMessage()}"))
        if waiting:
            log.info("%d waiting pushes of [%s] handed to its new settings", len(waiting), client.app.section)


class PushServer(service.Service):
    """Owns the application registry, the dispatcher and the listening port."""

    def __init__(self, settings: Settings, reactor: Any = None,
                 find_client: ClientClassFinder = default_client_class,
                 drain_timeout: float = DRAIN_TIMEOUT, watch_interval: float = POLL_INTERVAL,
                 handle_sighup: bool = False) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.settings = settings
        self.reactor = reactor
        self.find_client = find_client
        self.drain_timeout = drain_timeout
        self.handle_sighup = handle_sighup
        self.registry = AppRegistry()
        self.dispatcher = Dispatcher(lambda: self.registry, reactor)
        self.site: Site = make_site(self.dispatcher, lambda: self.settings.return_async)
        self.push_resource = self.site.resource.children[b"push"]
        self.connections = ApiConnections(self.site, reactor, settings.allowed_hosts, settings.max_connections,
                                          settings.request_timeout, refused=self.dispatcher.refused)
        self.metrics = Metrics(lambda: self.registry, self.dispatcher)
        self.remote_log = RemoteLogger(reactor, debug=settings.debug)
        self.dispatcher.observers += [self.metrics.observe, self.remote_log.observe]
        self.dispatcher.refusal_observers.append(self.metrics.refused)
        self.site.resource.putChild(b"health", HealthResource(lambda: self.registry))
        self.site.resource.putChild(b"metrics", MetricsResource(self.metrics))
        self.watcher = FileWatcher(settings.path(settings.applications_file), self.reload, reactor,
                                   watch_interval)
        self.port: Optional[Any] = None
        self.reloads = 0
        self._reloading = False
        self._reload_again = False
        self._reload_waiters: List[Deferred] = []
        self._retiring: List[Deferred] = []
        self._previous_sighup: Any = None
        self._certificate = (load_tls_certificate(settings.path(settings.tls_certificate))
                             if settings.tls_certificate else None)

    def load_registry(self) -> AppRegistry:
        """Read applications.ini, build its registry and start its clients."""
        configs, problems = load_applications(self.settings)
        registry, more = build_registry(self.settings, configs, self.reactor, self.find_client)
        registry, failed = start_clients(registry)
        log_problems(problems + more + failed)
        return registry

    def startService(self) -> None:
        super().startService()
        self.registry = self.load_registry()
        if not len(self.registry):
            log.warning("no application is configured: every push will be answered 404")
        for app in self.registry:
            if app.client is not None:  # the others were reported as disabled
                log.info("application %s (%s) ready", app.label, app.config.app_type)
        self.connections.limit = connection_limit(self.settings.max_connections, raise_open_files_limit())
        self.port = self.listen()
        self.remote_log.server_ip = self.port.getHost().host
        if self.remote_log.server_ip in ("0.0.0.0", "::"):
            # listening everywhere: remote logs name the host's own address (a lookup: in a thread)
            lookup = deferToThread(socket.gethostbyname, socket.gethostname())
            lookup.addCallbacks(lambda ip: setattr(self.remote_log, "server_ip", ip),
                                lambda failure: log.warning("cannot find this host's address for remote logs: %s",
                                                            failure.getErrorMessage()))
        self.watcher.start()
        if self.handle_sighup:
            self._previous_sighup = signal.signal(signal.SIGHUP, self._sighup)

    def _sighup(self, signum: int, frame: Any) -> None:
        # a signal handler runs between two bytecodes of whatever the reactor was doing
        self.reactor.callFromThread(self._reload_on_signal)

    def _reload_on_signal(self) -> None:
        log.info("SIGHUP: reloading %s", self.watcher.path)
        self.reload()

    def reload(self) -> "Deferred[bool]":
        """Re-read applications.ini and swap in the new applications.

        Fires True when the new file was applied, False when it could not be
        read (the previous applications then stay, all of them).  Reloads
        never overlap: one asked for during another runs right after it.
        """
        waiter: Deferred = Deferred()
        self._reload_waiters.append(waiter)
        if self._reloading:
            self._reload_again = True
        else:
            self._reloading = True
            ensureDeferred(self._reload_loop())
        return waiter

    async def _reload_loop(self) -> None:
        try:
            while True:
                waiters, self._reload_waiters = self._reload_waiters, []
                self._reload_again = False
                try:
                    applied = await self._reload_once()
                except Exception:
                    log.exception("reloading %s failed; the previous applications stay active", self.watcher.path)
                    applied = False
                for waiter in waiters:
                    waiter.callback(applied)
                if not self._reload_again:
                    break
        finally:
            self._reloading = False

    async def _reload_once(self) -> bool:
        try:
            configs, problems = await deferToThread(load_applications, self.settings)
        except ConfigFileError as exc:
            log.error("reload: %s; the previous applications stay active", exc)
            return False
        if not self.running:
            return False
        previous = self.registry
        rebuild = rebuild_registry(self.settings, configs, problems, previous, self.reactor, self.find_client)
        log_problems(rebuild.problems)
        for section in rebuild.kept:
            log.warning("application [%s]: its previous working settings stay active", section)
        # one assignment: a request sees either the old or the new registry, whole
        self.registry = rebuild.registry
        self.reloads += 1
        hand_over_waiting(rebuild.retired, rebuild.registry)
        for client in rebuild.retired:
            # stop() finishes the pushes already handed to the client, then closes
            stopping = defer.maybeDeferred(client.stop)
            stopping.addErrback(lambda failure, c=client: log.error(
                "stopping the client of %s failed: %s", c.app.section, failure.getErrorMessage()))
            self._retiring.append(stopping)
            stopping.addBoth(lambda _, d=stopping: self._retiring.remove(d))
        unchanged = len(rebuild.registry) - len(rebuild.added)
        log.info("applications reloaded: %d active (%d started, %d unchanged), %d retired, %d with problems",
                 len(rebuild.registry), len(rebuild.added), unchanged, len(rebuild.retired),
                 len(rebuild.problems))
        return True

    def listen(self) -> Any:
        """Open the API port (TLS when tls_certificate is set)."""
        host, port = self.settings.host, self.settings.port
        if self._certificate is not None:
            listening = self.reactor.listenSSL(port, self.connections, self._certificate.options(),
                                               backlog=LISTEN_BACKLOG, interface=host)
        else:
            listening = self.reactor.listenTCP(port, self.connections, backlog=LISTEN_BACKLOG,
                                               interface=host)
        address = listening.getHost()
        scheme = "https" if self._certificate is not None else "http"
        log.info("listening on %s://%s:%s", scheme, address.host, address.port)
        return listening

    @defer.inlineCallbacks
    def stopService(self):
        """Stop accepting, drain what is in flight, then stop the clients.

        New requests on connections still open are answered 503; callers
        still waiting after ``drain_timeout`` are answered 503.
        """
        super().stopService()
        self.watcher.stop()
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None
        self.push_resource.closing = True
        if self.port is not None:
            yield self.port.stopListening()
            self.port = None
        if self.dispatcher.in_flight:
            log.info("waiting up to %g s for %d pushes in flight", self.drain_timeout, self.dispatcher.in_flight)
            drained = yield within(self.dispatcher.wait_idle(), self.drain_timeout, self.reactor)
            if not drained:
                count = self.push_resource.answer_waiting(
                    503, f"the server is shutting down and the push did not finish within {self.drain_timeout:g} s")
                log.warning("drain deadline passed: %d waiting callers answered 503", count)
        closed = yield within(self.connections.close_all(), STOP_GRACE, self.reactor)
        if not closed:
            log.warning("%d API connections still open after %g s", len(self.connections.protocols), STOP_GRACE)
        stopping = DeferredList([self.registry.stop()] + list(self._retiring), consumeErrors=True)
        stopped = yield within(stopping, STOP_GRACE, self.reactor)
        if not stopped:
            log.warning("push clients did not stop within %g s", STOP_GRACE)
        yield self.remote_log.stop()
