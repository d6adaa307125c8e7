"""Certificates that expire: the APNs certificate of each application and the
API's own ``tls_certificate``.

An APNs certificate lives a year and its expiry is the classic outage of a
push server.  From :data:`WARN_BEFORE` before its notAfter date a WARNING is
logged once a day per certificate; ``/health`` shows the date and the days
left, and ``/metrics`` exports it as
``sylkpush_certificate_expiry_timestamp_seconds`` for alerting.

Files are read where the configuration is loaded, never by the daily check:
the APNs certificates by :func:`sylkpush.config.load_applications` (in a
thread on reload; at start, before the port opens), the API's certificate
when the server loads it to listen.  The check itself only compares numbers.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

from OpenSSL import crypto
from prometheus_client.core import GaugeMetricFamily
from twisted.internet.task import LoopingCall

if TYPE_CHECKING:
    from sylkpush.config import AppConfig
    from sylkpush.app_registry import AppRegistry

log = logging.getLogger(__name__)

DAY = 86400.0
#: how long before notAfter the warnings start
WARN_BEFORE = 30 * DAY
#: how often the certificates are checked (and each expiring one warned about)
CHECK_INTERVAL = DAY

_Key = Tuple[str, str, str, str, float]


def certificate_not_after(certificate: crypto.X509) -> float:
    """notAfter of ``certificate`` in seconds since the epoch."""
    raw = certificate.get_notAfter()  # ASN.1 GeneralizedTime, UTC
    if raw is None:
        raise ValueError("the certificate has no notAfter date")
    stamp = raw.decode("ascii")
    moment = datetime.datetime.strptime(stamp, "%Y%m%d%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def pem_file_not_after(path: str) -> Optional[float]:
    """notAfter of the first certificate in the PEM file ``path`` (which may
    hold its key too); None when it cannot be read, which the push client
    reports when it loads the file."""
    try:
        with open(path, "rb") as stream:
            return certificate_not_after(crypto.load_certificate(crypto.FILETYPE_PEM, stream.read()))
    except (OSError, ValueError, crypto.Error):
        return None


def utc_text(seconds: float) -> str:
    """``2026-01-31T12:00:00Z``."""
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Credential:
    """A certificate in use and when it expires."""

    #: the configuration key naming the file: ``apple_certificate`` or ``tls_certificate``
    kind: str
    path: str
    not_after: float
    #: the application using it; empty for the API's own certificate
    section: str = ""
    app_id: str = ""
    platform: str = ""

    @property
    def owner(self) -> str:
        if self.section:
            return f"application [{self.section}] ({self.platform.capitalize()} {self.app_id}): its {self.kind}"
        return f"the API's {self.kind}"

    @property
    def remedy(self) -> str:
        if self.section:
            return "replace the file and reload (SIGHUP)"
        return "replace the file and restart the server"

    def status(self, now: float) -> Dict[str, Any]:
        """What ``/health`` shows."""
        return {"file": self.path, "expires": utc_text(self.not_after),
                "days_left": int((self.not_after - now) // DAY)}


def app_credentials(registry: "AppRegistry") -> List[Credential]:
    """The APNs certificates of the applications of ``registry``."""
    return [application_credential(app.config) for app in registry
            if app.config.apple_certificate_not_after is not None]


def application_credential(config: "AppConfig") -> Credential:
    """The APNs certificate of an application that has one."""
    assert config.apple_certificate_not_after is not None
    return Credential("apple_certificate", config.apple_certificate, config.apple_certificate_not_after,
                      config.section, config.app_id, config.platform)


def _when(remaining: float) -> str:
    """``in 12 days``, ``within a day``, ``today``, ``3 days ago``."""
    days = int(abs(remaining) // DAY)
    plural = f"{days} day{'s' if days != 1 else ''}"
    if remaining < 0:
        return "today" if days == 0 else plural + " ago"
    return "within a day" if days == 0 else "in " + plural


class ExpiryWatch:
    """Warns about certificates close to expiry, daily; feeds /health and /metrics.

    ``credentials`` returns the certificates in use now (it is called at
    every check and scrape, so a reload is followed without being told).
    """

    def __init__(self, credentials: Callable[[], Iterable[Credential]], reactor: Any,
                 warn_before: float = WARN_BEFORE, interval: float = CHECK_INTERVAL) -> None:
        self.credentials = credentials
        self.reactor = reactor
        self.warn_before = warn_before
        self.interval = interval
        self._loop: Optional[LoopingCall] = None
        #: the certificates warned about (a renewed one is a new key)
        self._warned: Set[_Key] = set()

    def start(self) -> None:
        """Check now, then every ``interval``."""
        self._loop = LoopingCall(self._daily_check)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=True)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _daily_check(self) -> None:
        try:
            self.check()
        except Exception:  # a LoopingCall whose call raises stops for good
            log.exception("checking the certificates' expiry failed")

    def check(self, only_new: bool = False) -> None:
        """Warn about each certificate within ``warn_before`` of its expiry.

        ``only_new``: only those not warned about yet (after a reload; the
        daily check warns about all of them again).
        """
        now = self.reactor.seconds()
        current = list(self.credentials())
        self._warned &= {_key(c) for c in current}
        for credential in current:
            remaining = credential.not_after - now
            if remaining > self.warn_before or (only_new and _key(credential) in self._warned):
                continue
            self._warned.add(_key(credential))
            log.warning("%s %s %s on %s (%s): %s", credential.owner, credential.path,
                        "expired" if remaining < 0 else "expires", utc_text(credential.not_after),
                        _when(remaining), credential.remedy)

    def application_status(self, config: "AppConfig") -> Dict[str, Any]:
        """``{"certificate": {...}}`` for an application with an APNs certificate, else ``{}``."""
        if config.apple_certificate_not_after is None:
            return {}
        return {"certificate": application_credential(config).status(self.reactor.seconds())}

    def server_status(self) -> Dict[str, Any]:
        """The API's own certificate, for ``/health``."""
        now = self.reactor.seconds()
        return {c.kind: c.status(now) for c in self.credentials() if not c.section}

    def collect(self) -> Iterable[Any]:
        """prometheus_client collector."""
        gauge = GaugeMetricFamily("sylkpush_certificate_expiry_timestamp_seconds",
                                  "notAfter of a certificate in use, in seconds since the epoch",
                                  labels=["app", "platform", "certificate"])
        for credential in self.credentials():
            gauge.add_metric([credential.app_id, credential.platform, credential.kind], credential.not_after)
        return [gauge]


def _key(credential: Credential) -> _Key:
    return (credential.kind, credential.section, credential.app_id, credential.platform, credential.not_after)
