"""The running server as a Twisted service: applications, clients and the API port."""

from __future__ import annotations

import logging
from typing import Any, Optional

from twisted.application import service
from twisted.internet import defer, ssl
from twisted.web.server import Site

from sylkpush.config import ConfigFileError, Settings, load_applications
from sylkpush.dispatch import Dispatcher
from sylkpush.registry import AppRegistry, ClientClassFinder, build_registry, default_client_class, log_problems
from sylkpush.web import make_site

log = logging.getLogger(__name__)


def load_tls_certificate(path: str) -> ssl.PrivateCertificate:
    """The API's certificate and key, both in one PEM file."""
    try:
        with open(path, "rb") as stream:
            return ssl.PrivateCertificate.loadPEM(stream.read())
    except OSError as exc:
        raise ConfigFileError(f"tls_certificate {path}: {exc.strerror}") from None
    except Exception as exc:  # pyOpenSSL raises several types for bad PEM
        raise ConfigFileError(f"tls_certificate {path} must hold a PEM certificate and its key: {exc}") from None


class PushServer(service.Service):
    """Owns the application registry, the dispatcher and the listening port."""

    def __init__(self, settings: Settings, reactor: Any = None,
                 find_client: ClientClassFinder = default_client_class) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.settings = settings
        self.reactor = reactor
        self.find_client = find_client
        self.registry = AppRegistry()
        self.dispatcher = Dispatcher(lambda: self.registry, reactor)
        self.site: Site = make_site(self.dispatcher, settings.allowed_hosts,
                                    lambda: self.settings.return_async)
        self.port: Optional[Any] = None
        self._certificate = (load_tls_certificate(settings.path(settings.tls_certificate))
                             if settings.tls_certificate else None)

    def load_registry(self) -> AppRegistry:
        """Read applications.ini and build its registry (not yet started)."""
        configs, problems = load_applications(self.settings)
        registry, more = build_registry(self.settings, configs, self.reactor, self.find_client)
        log_problems(problems + more)
        return registry

    def startService(self) -> None:
        super().startService()
        self.registry = self.load_registry()
        if not len(self.registry):
            log.warning("no application is configured: every push will be answered 404")
        for app in self.registry:
            log.info("application %s (%s) ready", app.label, app.config.app_type)
        self.registry.start()
        self.port = self.listen()

    def listen(self) -> Any:
        """Open the API port (TLS when tls_certificate is set)."""
        host, port = self.settings.host, self.settings.port
        if self._certificate is not None:
            listening = self.reactor.listenSSL(port, self.site, self._certificate.options(),
                                               interface=host)
        else:
            listening = self.reactor.listenTCP(port, self.site, interface=host)
        address = listening.getHost()
        scheme = "https" if self._certificate is not None else "http"
        log.info("listening on %s://%s:%s", scheme, address.host, address.port)
        return listening

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        if self.port is not None:
            yield self.port.stopListening()
            self.port = None
        yield self.registry.stop()
