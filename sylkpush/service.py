"""The running server as a Twisted service: applications, clients and the API port."""

from __future__ import annotations

import gc
import logging
import os
import resource
import signal
import socket
from collections import Counter
from typing import Any, Dict, List, Optional

from twisted.application import service
from twisted.internet import defer, ssl
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure

from sylkpush.api_keys import ApiKeys, read_keys
from sylkpush.config import ConfigError, Settings, load_applications
from sylkpush.connections import RESERVED_DESCRIPTORS, ApiConnections
from sylkpush.dispatch import Dispatcher
from sylkpush.expiry import Credential, ExpiryWatch, app_credentials, certificate_not_after
from sylkpush.exposure import open_access_warning
from sylkpush.health import HealthResource
from sylkpush.http11 import Site
from sylkpush.metrics import Metrics, MetricsResource
from sylkpush.pns.base import UNANSWERED_AT_SHUTDOWN, PushClient
from sylkpush.pns.client_classes import client_class
from sylkpush.app_registry import (AppRegistry, ClientClassFinder, build_registry, log_problems, problem_states,
                                   rebuild_registry, start_clients)
from sylkpush.reload import POLL_INTERVAL, FileWatcher
from sylkpush.remote_log import RemoteLogger
from sylkpush.tokens import make_store
from sylkpush.v2 import resources as v2_resources
from sylkpush.v2.metrics import TokenMetrics
from sylkpush.web import make_site
from sylkpush.workers import LISTEN_BACKLOG, METRICS_DIR_VARIABLE, share_port

log = logging.getLogger(__name__)

#: seconds a shutdown waits for pushes in flight before answering them itself
#: (503 for those never sent, 504 for those sent and unanswered)
DRAIN_TIMEOUT = 10.0
#: seconds the clients get after that to close their connections
STOP_GRACE = 2.0


def within(deferred: Deferred, seconds: float, reactor: Any) -> "Deferred[bool]":
    """Fires True when ``deferred`` fires within ``seconds``, else False then.

    ``deferred`` itself is left alone (not cancelled, its result untouched).
    """
    outcome: Deferred = Deferred()

    def late() -> None:
        if not outcome.called:
            outcome.callback(False)

    timer = reactor.callLater(seconds, late)

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
        raise ConfigError(f"tls_certificate {path}: {exc.strerror}") from None
    except Exception as exc:  # pyOpenSSL raises several types for bad PEM
        raise ConfigError(f"tls_certificate {path} must hold a PEM certificate and its key: {exc}") from None


def _handover_failed(failure: Failure, pending: Any) -> None:
    pending.fail(f"internal error handing the push over: {failure.getErrorMessage()}")


#: net container allocations between two collections of the youngest
#: generation (CPython's default is 700)
YOUNG_COLLECTION_THRESHOLD = 10_000


def tune_garbage_collector() -> None:
    """Fit the cyclic garbage collector to a daemon under load, once it has started.

    What the daemon made at start (modules, configuration, the
    applications' clients) lives as long as the process: it is frozen out
    of the collections.  Without that, each full collection, which runs
    every few seconds under load, walks it all and stalls the reactor for
    40-50 ms (a few ms once frozen).  A reload gives it back
    (``gc.unfreeze``) so that retired clients can be freed, and it is frozen
    again once they have stopped.

    The objects of the pushes in flight, thousands of them, are freed by
    their reference counts, not by the collector; but the ups and downs of
    their number alone went past the default threshold some 55 times a
    second, and those young collections, with the older ones they lead to,
    took 3 to 4 % of the CPU time of each push.  With the threshold at
    :data:`YOUNG_COLLECTION_THRESHOLD` they run every second or two at full
    load, 2-8 ms each: about 1 µs per push.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])


def _stop_failed(failure: Failure, client: PushClient) -> None:
    log.error("stopping the client of %s failed: %s", client.app.section, failure.getErrorMessage())


def api_tls_options(certificate: ssl.PrivateCertificate) -> ssl.CertificateOptions:
    """The API's TLS settings.  HTTP/1.1 is named for ALPN because clients
    (curl, Python's http.client, Go) offer it, and recent Twisted releases abort
    a handshake whose offer the server has nothing to answer with."""
    return ssl.CertificateOptions(privateKey=certificate.privateKey.original, certificate=certificate.original,
                                  acceptableProtocols=[b"http/1.1"])


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
            moved.addErrback(_handover_failed, pending)
        if waiting:
            log.info("%d waiting pushes of [%s] handed to its new settings", len(waiting), client.app.section)


class PushServer(service.Service):
    """Owns the application registry, the dispatcher and the listening port."""

    def __init__(self, settings: Settings, reactor: Any = None,
                 find_client: ClientClassFinder = client_class,
                 drain_timeout: float = DRAIN_TIMEOUT, watch_interval: float = POLL_INTERVAL,
                 handle_sighup: bool = False, listening: Optional[socket.socket] = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.settings = settings
        self.reactor = reactor
        self.find_client = find_client
        self.drain_timeout = drain_timeout
        self.handle_sighup = handle_sighup
        #: the API socket a supervisor opened for its workers (None: open our own)
        self.listening = listening
        self.registry = AppRegistry()
        self._certificate = (load_tls_certificate(settings.path(settings.tls_certificate))
                             if settings.tls_certificate else None)
        own = ([Credential("tls_certificate", settings.path(settings.tls_certificate),
                           certificate_not_after(self._certificate.original))] if self._certificate else [])
        self.expiry = ExpiryWatch(lambda: app_credentials(self.registry) + own, reactor)
        self.dispatcher = Dispatcher(lambda: self.registry, reactor)
        self.api_keys = ApiKeys.from_file(settings.path(settings.keys_file)) if settings.keys_file else None
        self.site: Site = make_site(self.dispatcher, lambda: self.settings.return_async, self.api_keys)
        self.push_resource = self.site.resource.children[b"push"]
        self.connections = ApiConnections(self.site, reactor, settings.allowed_hosts, settings.max_connections,
                                          settings.request_timeout, refused=self.dispatcher.refused)
        self.metrics = Metrics(lambda: self.registry, self.dispatcher,
                               multiprocess_dir=os.environ.get(METRICS_DIR_VARIABLE, "") if listening else "")
        self.remote_log = RemoteLogger(reactor, debug=settings.debug)
        self.dispatcher.observers += [self.metrics.observe, self.remote_log.observe]
        self.dispatcher.refusal_observers.append(self.metrics.refused)
        self.tokens = make_store(settings, reactor)
        self.v2_resource = v2_resources.mount(self.site, self.tokens, self.dispatcher,
                                              lambda: self.settings.return_async,
                                              TokenMetrics(self.metrics.registry, self.metrics.summed,
                                                           self.tokens.status))
        #: sections of applications.ini with a problem, as /health shows them
        self.problems: Dict[str, Dict[str, str]] = {}
        self.site.resource.putChild(b"health", HealthResource(lambda: self.registry, self.tokens.status,
                                                                 self.expiry, lambda: self.problems))
        self.site.resource.putChild(b"metrics", MetricsResource(self.metrics))
        self.metrics.registry.register(self.expiry)
        self.watcher = FileWatcher(settings.path(settings.applications_file), self.reload, reactor,
                                   watch_interval)
        self.port: Optional[Any] = None
        self.reloads = 0
        self._reloading = False
        self._reload_again = False
        self._reload_waiters: List[Deferred] = []
        self._retiring: List[Deferred] = []
        #: what was frozen at start was given back by a reload, to be frozen again
        #: once the clients it retired are gone
        self._unfrozen = False
        #: clients a reload replaced, until they have stopped
        self._retiring_clients: List[PushClient] = []
        self._previous_sighup: Any = None

    def load_registry(self) -> AppRegistry:
        """Read applications.ini, build its registry and start its clients."""
        configs, problems = load_applications(self.settings)
        registry, more = build_registry(self.settings, configs, self.reactor, self.find_client)
        registry, failed = start_clients(registry)
        log_problems(problems + more + failed)
        self.problems = problem_states(problems + more + failed)
        return registry

    def startService(self) -> None:
        super().startService()
        for warning in self.settings.config_warnings:
            log.warning("%s", warning)
        self.registry = self.load_registry()
        if not len(self.registry):
            log.warning("no application is configured in %s: every push will be answered 404 until "
                        "it has a section for each mobile application",
                        self.settings.path(self.settings.applications_file))
        for app in self.registry:
            if app.client is not None:  # the others were reported as disabled
                log.info("application %s (%s) ready", app.label, app.config.app_type)
        self.tokens.open().addErrback(lambda failure: log.error(
            "the v2 API answers 503 until the token storage can be used: %s", failure.getErrorMessage()))
        if self.api_keys is not None:
            log.info("API keys required on /push and /v2: %s", ", ".join(self.api_keys.names))
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
        self.expiry.start()
        self.metrics.start(self.reactor)
        if self.handle_sighup:
            self._previous_sighup = signal.signal(signal.SIGHUP, self._sighup)

    def _sighup(self, signum: int, frame: Any) -> None:
        # a signal handler runs between two bytecodes of whatever the reactor was doing
        self.reactor.callFromThread(self._reload_on_signal)

    def _reload_on_signal(self) -> None:
        log.info("SIGHUP: reloading %s", self.watcher.path)
        self.reload()
        self.reload_keys()

    def reload_keys(self) -> "Deferred[bool]":
        """Read keys_file again (in a thread); fires True when its keys are in force."""
        if self.api_keys is None:
            return defer.succeed(False)
        keys: ApiKeys = self.api_keys

        def loaded(new: Any) -> bool:
            keys.replace(new)
            log.info("API keys reloaded from %s: %s", keys.path, ", ".join(keys.names))
            return True

        def failed(failure: Any) -> bool:
            log.error("reload: %s; the previous API keys stay in force", failure.getErrorMessage())
            return False
        return deferToThread(read_keys, keys.path).addCallbacks(loaded, failed)

    def _retired(self, result: Any, stopping: Deferred, client: PushClient) -> Any:
        """A retired client has stopped: no longer waited for at shutdown."""
        self._retiring.remove(stopping)
        self._retiring_clients.remove(client)
        self._freeze_again_when_retired()
        return result

    def _freeze_again_when_retired(self) -> None:
        """Once a reload's retired clients have all stopped, what lives on is
        frozen again: otherwise every full collection walks it all until the
        next start, a 40-50 ms stall every few seconds under load."""
        if self._unfrozen and not self._retiring and not self._reloading and self.running:
            self._unfrozen = False
            # on the next turn: the stopped client's last callbacks let go of it first
            self.reactor.callLater(0, tune_garbage_collector)

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
            self._freeze_again_when_retired()

    async def _reload_once(self) -> bool:
        try:
            configs, problems = await deferToThread(load_applications, self.settings)
        except ConfigError as exc:
            log.error("reload: %s; the previous applications stay active", exc)
            return False
        if not self.running:
            return False
        previous = self.registry  # only reloads change it, and they never overlap
        # key files, CA bundles, RSA keys, custom modules: read and parsed in a
        # thread; the finished clients are started on the reactor thread
        built = await deferToThread(build_registry, self.settings, configs, self.reactor, self.find_client,
                                    previous=previous)
        if not self.running:
            return False
        rebuild = rebuild_registry(built, problems, previous)
        log_problems(rebuild.problems, rebuild.kept)
        self.problems = problem_states(rebuild.problems, rebuild.kept)
        # one assignment: a request sees either the old or the new registry, whole
        self.registry = rebuild.registry
        # what was frozen at start (tune_garbage_collector) includes the clients
        # retired now: given back to the collector, so their cycles can be freed
        if gc.get_freeze_count():
            gc.unfreeze()
            self._unfrozen = True
        self.reloads += 1
        self.expiry.check(only_new=True)
        hand_over_waiting(rebuild.retired, rebuild.registry)
        for client in rebuild.retired:
            # stop() finishes the pushes already handed to the client, then closes
            stopping = defer.maybeDeferred(client.stop)
            stopping.addErrback(_stop_failed, client)
            self._retiring.append(stopping)
            self._retiring_clients.append(client)
            stopping.addBoth(self._retired, stopping, client)
        unchanged = len(rebuild.registry) - len(rebuild.added)
        added = {id(client) for client in rebuild.added}
        started = sorted(app.config.section for app in rebuild.registry if id(app.client) in added)
        log.info("applications reloaded: %d active (%d started, %d unchanged), %d retired, %d with problems%s",
                 len(rebuild.registry), len(rebuild.added), unchanged, len(rebuild.retired),
                 len(rebuild.problems), f"; started (new or changed settings or files): {', '.join(started)}"
                 if started else "")
        return True

    def _answer_unfinished(self) -> None:
        """The drain deadline passed: every push still waiting is answered now."""
        codes: Counter = Counter()
        for client in [app.client for app in self.registry if app.client is not None] + self._retiring_clients:
            answer = getattr(client, "answer_unfinished", None)  # a custom client may not have it
            if answer is None:
                continue
            try:
                codes.update(answer())
            except Exception:
                log.exception("answering the pushes of %s at shutdown failed", client.app.section)
        # clients that cannot tell whether a push went out leave their callers to us
        description = f"push notification failed: {UNANSWERED_AT_SHUTDOWN}"
        codes[504] += (self.push_resource.answer_waiting(504, description)
                       + self.v2_resource.answer_waiting(504, description))
        log.warning("drain deadline of %g s passed: %d pushes answered 503 (not sent), %d answered 504 "
                    "(sent, no answer from the push service)", self.drain_timeout, codes[503], codes[504])

    def listen(self) -> Any:
        """Open the API port (TLS when tls_certificate is set)."""
        host, port = self.settings.host, self.settings.port
        tls = api_tls_options(self._certificate) if self._certificate is not None else None
        if self.listening is not None:
            listening = share_port(self.reactor, self.listening, self.connections, tls)
        elif tls is not None:
            listening = self.reactor.listenSSL(port, self.connections, tls, backlog=LISTEN_BACKLOG, interface=host)
        else:
            listening = self.reactor.listenTCP(port, self.connections, backlog=LISTEN_BACKLOG,
                                               interface=host)
        address = listening.getHost()
        scheme = "https" if self._certificate is not None else "http"
        log.info("listening on %s://%s:%s", scheme, address.host, address.port)
        warning = open_access_warning(self.settings, host, address.port)
        if warning:
            log.warning("%s", warning)
        return listening

    @defer.inlineCallbacks
    def stopService(self):
        """Stop accepting, drain what is in flight, then stop the clients.

        New requests on connections still open are answered 503.  Pushes
        still unanswered after ``drain_timeout`` are answered then: 503 when
        none of their attempts reached the push service (safe to send
        again), 504 when one was sent and not answered (it may have been
        delivered: sending it again may ring the phone twice).
        """
        super().stopService()
        self.watcher.stop()
        self.expiry.stop()
        self.metrics.stop()
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None
        self.push_resource.closing = self.v2_resource.closing = True
        if self.port is not None:
            yield self.port.stopListening()
            self.port = None
        if self.listening is not None:
            # the socket the workers share: once all have closed it, callers are refused
            self.listening.close()
        if self.dispatcher.in_flight:
            log.info("waiting up to %g s for %d pushes in flight", self.drain_timeout, self.dispatcher.in_flight)
            drained = yield within(self.dispatcher.wait_idle(), self.drain_timeout, self.reactor)
            if not drained:
                self._answer_unfinished()
        # registrations still being written are finished and answered
        yield within(self.tokens.close(), STOP_GRACE, self.reactor)
        closed = yield within(self.connections.close_all(), STOP_GRACE, self.reactor)
        if not closed:
            log.warning("%d API connections still open after %g s", len(self.connections.protocols), STOP_GRACE)
        stopping = DeferredList([self.registry.stop()] + list(self._retiring), consumeErrors=True)
        stopped = yield within(stopping, STOP_GRACE, self.reactor)
        if not stopped:
            log.warning("push clients did not stop within %g s", STOP_GRACE)
        yield self.remote_log.stop()
