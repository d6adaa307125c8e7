"""How the daemon reaches a Cassandra cluster: contact points, login, TLS, policies.

general.ini's ``[Cassandra]`` section becomes a driver ``Cluster`` here.  The
driver is imported only when a cluster is made, so that this module (and the
configuration that parses contact points with it) works without it.

Choices, and why:

- Native protocol v4, as the original server asked for: every Cassandra
  since 2.2 speaks it, and the driver does not log two warnings while it
  negotiates down from its newest version at each connection.
- ``LOCAL_QUORUM`` reads and writes: a device registered through one server
  is seen by a push through another in the same datacenter, whatever the
  replication factor.
- Token-aware ``DCAwareRoundRobinPolicy`` with ``local_dc`` (or, without it,
  the datacenter of the contact points): requests stay in the local
  datacenter.
- Nodes that went down are tried again after 1 s, doubling up to
  :data:`RECONNECT_MAX`, so service resumes within seconds of the cluster
  coming back.
- With ``ca_file``, TLS that trusts only that file's CAs and checks that a
  node's certificate names the address connected to (or the contact point
  name that resolved to it); there is no way to switch verification off.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
from typing import TYPE_CHECKING, Any, Dict, List, Set, Tuple

if TYPE_CHECKING:
    from sylkpush.config import CassandraSettings

log = logging.getLogger(__name__)

DEFAULT_PORT = 9042
PROTOCOL_VERSION = 4
#: seconds a request waits for the cluster before it fails (the caller gets 503)
REQUEST_TIMEOUT = 5.0
#: seconds to open a connection to one node
CONNECT_TIMEOUT = 5.0
#: the longest wait between two attempts to reach a node that is down
RECONNECT_MAX = 5.0


class DriverMissing(Exception):
    """The DataStax driver (with its Twisted connection class) cannot be imported."""


def parse_contact_points(value: str) -> Tuple[Tuple[str, ...], int]:
    """``cluster_contact_points`` (``host[:port], ...``) as (hosts, port).

    IPv6 addresses with a port are written ``[addr]:port``.  Every contact
    point uses one port (the driver reaches all nodes on one); ValueError
    says which entry is wrong.
    """
    hosts: List[str] = []
    ports: Set[int] = set()
    for entry in (item.strip() for item in value.split(",")):
        if not entry:
            continue
        host, port = entry, ""
        if entry.startswith("["):
            host, bracket, port = entry[1:].partition("]")
            if not bracket or (port and not port.startswith(":")):
                raise ValueError(f"entry {entry!r} is not host, host:port or [IPv6 address]:port")
            port = port[1:]
        elif entry.count(":") == 1:
            host, _, port = entry.partition(":")
        if not host or any(c.isspace() for c in host):
            raise ValueError(f"entry {entry!r} is not host, host:port or [IPv6 address]:port")
        if port:
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"entry {entry!r}: the port must be a number from 1 to 65535")
            ports.add(int(port))
        hosts.append(host)
    if len(ports) > 1:
        raise ValueError(f"must all use one port (found {', '.join(map(str, sorted(ports)))})")
    return tuple(hosts), ports.pop() if ports else DEFAULT_PORT


@functools.lru_cache(maxsize=None)
def driver() -> Any:
    """The driver's modules and our Twisted connection class, or DriverMissing saying what to install."""
    try:
        import cassandra
        from cassandra import cluster, policies
        from cassandra.auth import PlainTextAuthProvider
    except ImportError as exc:
        raise DriverMissing(f"the DataStax cassandra-driver is not installed ({exc}); Debian: apt-get install "
                            "python3-cassandra, PyPI: pip install 'cassandra-driver<3.31'") from None
    try:
        from cassandra.io import twistedreactor
    except ImportError as exc:
        raise DriverMissing(f"cassandra-driver {cassandra.__version__} has no Twisted connection class ({exc}); "
                            "it was removed in 3.31: install 3.30 or older") from None
    return cluster, policies, PlainTextAuthProvider, _connection_class(twistedreactor)


def _connection_class(twistedreactor: Any) -> type:
    """The driver's TwistedConnection, told when a connection cannot be made,
    and with TLS that leaves the shared pyOpenSSL context alone.

    The driver's own ignores a failed connection attempt: the connection then
    waits for its whole connect timeout even when the node refused at once,
    and the attempt's failure is logged as unhandled.  Its TLS also sets a
    callback on the context at every connection, which pyOpenSSL 24 refuses
    once the context has made a connection.  This one opens connections as
    the driver does (3.25 to 3.30 alike), with a plain connection creator
    (the context's verify callback checks the node), and fails the
    connection as soon as the attempt fails (with no "Starting factory" log
    lines for each connection either).

    The driver also hands every request's bytes and timer to the reactor
    with ``callFromThread``, a wake-up of the reactor each, even when it is
    called in the reactor thread, as the daemon always calls it: there they
    are done at once.
    """
    from cassandra.connection import Timer
    from OpenSSL import SSL
    from twisted.internet import reactor as global_reactor
    from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint
    from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
    from twisted.internet.protocol import Factory
    from twisted.python import threadable
    from zope.interface import implementer
    reactor: Any = global_reactor  # the one the driver's Twisted loop uses

    @implementer(IOpenSSLClientConnectionCreator)
    class ConnectionCreator:
        def __init__(self, context: Any) -> None:
            self.context = context

        def clientConnectionForTLS(self, tls_protocol: Any) -> Any:  # noqa: N802
            connection = SSL.Connection(self.context, None)
            connection.set_app_data(tls_protocol)  # what NodeIdentity.verify finds the address with
            return connection

    class OneConnection(Factory):
        """connectProtocol's factory without its two log lines per connection."""

        noisy = False

        def __init__(self, protocol: Any) -> None:
            self.protocol_instance = protocol

        def buildProtocol(self, address: Any) -> Any:  # noqa: N802
            return self.protocol_instance

    class TwistedConnection(twistedreactor.TwistedConnection):
        def add_connection(self) -> None:
            host, port = self.endpoint.resolve()
            if self.ssl_context:
                endpoint: Any = SSL4ClientEndpoint(reactor, host, port, ConnectionCreator(self.ssl_context),
                                                   timeout=self.connect_timeout)
            else:
                endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=self.connect_timeout)
            endpoint.connect(OneConnection(twistedreactor.TwistedConnectionProtocol(self))).addErrback(self._not_made)

        def _not_made(self, failure: Any) -> None:
            # what Connection.defunct does, which ignores a connection that never opened
            with self.lock:
                self.is_defunct = True
            self.last_error = failure.value
            self.connected_event.set()

        def push(self, data: bytes) -> None:
            if threadable.isInIOThread():
                self.transport.write(data)
            else:
                reactor.callFromThread(self.transport.write, data)

        @classmethod
        def create_timer(cls, timeout: float, callback: Any) -> Any:
            timer = Timer(timeout, callback)
            cls._loop._timers.add_timer(timer)
            if threadable.isInIOThread():
                cls._loop._schedule_timeout(timer.end)
            else:
                reactor.callFromThread(cls._loop._schedule_timeout, timer.end)
            return timer

    return TwistedConnection


class NodeIdentity:
    """The TLS verification of a node: its chain leads to ``ca_file``, and
    its certificate names the address connected to or a contact point that
    resolved to that address.  :attr:`refused` keeps the last refusal."""

    def __init__(self, names_by_address: Dict[str, Set[str]]) -> None:
        self.names_by_address = names_by_address
        self.refused = ""

    def verify(self, connection: Any, certificate: Any, error: int, depth: int, ok: int) -> bool:
        if not ok or depth > 0:
            return bool(ok)
        from service_identity import CertificateError, VerificationError
        from service_identity.cryptography import verify_certificate_hostname, verify_certificate_ip_address
        try:
            address = connection.get_app_data().transport.getPeer().host
        except AttributeError:  # not connected through Twisted: nothing to compare with
            self.refused = "the node's address is unknown"
            return False
        cert = certificate.to_cryptography()
        try:
            verify_certificate_ip_address(cert, address)
            return True
        except (CertificateError, VerificationError):
            pass
        for name in sorted(self.names_by_address.get(address, ())):
            try:
                verify_certificate_hostname(cert, name)
                return True
            except (CertificateError, VerificationError):
                pass
        names = " or ".join([address] + sorted(self.names_by_address.get(address, ())))
        self.refused = f"the certificate of {address} does not name {names}"
        log.warning("token storage: Cassandra node refused: %s", self.refused)
        return False


def names_by_address(hosts: Tuple[str, ...], port: int) -> Dict[str, Set[str]]:
    """Each address the contact points resolve to, with the names that led to it (blocking: DNS)."""
    found: Dict[str, Set[str]] = {}
    for host in hosts:
        try:
            ipaddress.ip_address(host)
            continue
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM)
        except OSError:
            continue  # the driver reports names that do not resolve
        for info in infos:
            found.setdefault(str(info[4][0]), set()).add(host)
    return found


def tls_context(ca_file: str, identity: NodeIdentity) -> Any:
    """A pyOpenSSL context (what the driver's Twisted connections take) trusting only ``ca_file``."""
    from OpenSSL import SSL
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    try:
        context.load_verify_locations(ca_file)
    except SSL.Error as exc:
        raise OSError(f"ca_file {ca_file} holds no usable CA certificate: {exc}") from None
    context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, identity.verify)
    return context


def make_cluster(settings: "CassandraSettings", ca_file: str) -> Tuple[Any, NodeIdentity]:
    """A driver Cluster for ``settings`` (not connected) and the TLS identity check.

    Blocking (it resolves the contact points): call it in a thread.
    ``ca_file`` is the resolved path of ``settings.ca_file`` ("" without TLS).
    Raises DriverMissing, OSError for an unusable CA file, or the driver's
    error for contact points that do not resolve.
    """
    cluster, policies, PlainTextAuthProvider, TwistedConnection = driver()
    from cassandra import ConsistencyLevel
    identity = NodeIdentity(names_by_address(settings.contact_points, settings.port) if ca_file else {})
    profile = cluster.ExecutionProfile(
        load_balancing_policy=policies.TokenAwarePolicy(
            policies.DCAwareRoundRobinPolicy(local_dc=settings.local_dc or "")),
        consistency_level=ConsistencyLevel.LOCAL_QUORUM,
        serial_consistency_level=ConsistencyLevel.LOCAL_SERIAL,
        request_timeout=REQUEST_TIMEOUT)
    options: Dict[str, Any] = {}
    if settings.username:
        options["auth_provider"] = PlainTextAuthProvider(settings.username, settings.password)
    if ca_file:
        options["ssl_context"] = tls_context(ca_file, identity)
    made = cluster.Cluster(
        list(settings.contact_points), port=settings.port, protocol_version=PROTOCOL_VERSION,
        connection_class=TwistedConnection, execution_profiles={cluster.EXEC_PROFILE_DEFAULT: profile},
        reconnection_policy=policies.ExponentialReconnectionPolicy(1.0, RECONNECT_MAX, max_attempts=None),
        connect_timeout=CONNECT_TIMEOUT, **options)
    return made, identity
