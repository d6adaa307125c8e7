"""An in-memory APNs for AppleClient on a Clock: real HTTP/2 frames, no sockets.

:class:`MemoryNetwork` stands in for the client's endpoints: every connection
attempt gets a :class:`MemoryConnection`, whose server side is an ``h2``
connection.  Bytes travel both ways on the Clock (``latency`` seconds each
way), so a test drives handshakes, answers, silences and timeouts exactly,
with ``clock.advance``.  What each new connection does is scripted with a
:class:`Behaviour`.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import ConnectionTerminated, DataReceived, RequestReceived, StreamEnded, StreamReset
from h2.settings import SettingCodes, Settings
from twisted.internet.address import IPv4Address
from twisted.internet.defer import succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from sylkpush.config import AppConfig
from sylkpush.pns.apple import AppleClient
from sylkpush.testing.certs import CertificateAuthority


#: (status, reason) for a request, or None to leave it unanswered
Answer = Optional[Tuple[int, str]]


def always_200(connection: "MemoryConnection", headers: Dict[str, str]) -> Answer:
    return 200, ""


@dataclass
class Behaviour:
    """What one connection of the peer does."""

    #: False: the TCP connection is accepted and nothing is ever sent back
    #: (no TLS handshake, no SETTINGS)
    handshake: bool = True
    #: SETTINGS_MAX_CONCURRENT_STREAMS of the first SETTINGS; None: not sent
    max_streams: Optional[int] = 1000
    #: close the connection (FIN) right after the first SETTINGS
    drop_after_settings: bool = False
    #: read nothing and answer nothing after the first SETTINGS (no FIN, no RST)
    silent_after_settings: bool = False
    answer: Callable[["MemoryConnection", Dict[str, str]], Answer] = always_200


class MemoryTransport:
    """The client's transport: writes reach the peer on the clock."""

    disconnecting = False

    def __init__(self, connection: "MemoryConnection") -> None:
        self.connection = connection

    def write(self, data: bytes) -> None:
        self.connection.carry(self.connection.from_client, data)

    def writeSequence(self, chunks: List[bytes]) -> None:  # noqa: N802
        self.write(b"".join(chunks))

    def loseConnection(self) -> None:  # noqa: N802
        self.disconnecting = True
        self.connection.close(ConnectionDone("closed by the client"))

    abortConnection = loseConnection  # noqa: N815

    def getPeer(self) -> IPv4Address:  # noqa: N802
        return self.connection.address

    def getHost(self) -> IPv4Address:  # noqa: N802
        return IPv4Address("TCP", "127.0.0.1", 40000 + self.connection.number)

    def setTcpNoDelay(self, enabled: bool) -> None:  # noqa: N802
        pass


class MemoryConnection:
    """One client connection and its in-memory server side."""

    def __init__(self, network: "MemoryNetwork", protocol: Any, behaviour: Behaviour,
                 address: IPv4Address, number: int) -> None:
        self.network = network
        self.clock = network.clock
        self.protocol = protocol
        self.behaviour = behaviour
        self.address = address
        self.number = number
        self.open = True
        #: stops reading and answering: no FIN, no RST (a dead NAT, a crashed host)
        self.silent = False
        self.server = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self.requests: Dict[int, Dict[str, Any]] = {}
        self.received = 0
        self.answered = 0
        self.max_open = 0
        self.transport = MemoryTransport(self)

    def start(self) -> None:
        self.protocol.makeConnection(self.transport)
        if not self.behaviour.handshake:
            return
        values = {SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20}
        if self.behaviour.max_streams is not None:  # None: the peer says nothing about it
            values[SettingCodes.MAX_CONCURRENT_STREAMS] = self.behaviour.max_streams
        self.server.local_settings = Settings(client=False, initial_values=values)
        self.server.initiate_connection()
        self.flush()
        self.silent = self.behaviour.silent_after_settings
        if self.behaviour.drop_after_settings:
            self.clock.callLater(self.network.latency * 2, self.close, ConnectionDone("dropped"))

    # -- bytes on the clock ----------------------------------------------------

    def carry(self, receive: Callable[[bytes], None], data: bytes) -> None:
        if self.open:
            self.clock.callLater(self.network.latency, self._arrive, receive, data)

    def _arrive(self, receive: Callable[[bytes], None], data: bytes) -> None:
        if self.open:
            receive(data)

    def flush(self) -> None:
        data = self.server.data_to_send()
        if data and not self.silent:
            self.carry(self.protocol.dataReceived, data)

    def close(self, reason: Exception) -> None:
        """Either side closes: the client learns it on the clock."""
        if not self.open:
            return
        self.open = False
        self.network.open_connections.discard(self)
        self.clock.callLater(self.network.latency, self.protocol.connectionLost, Failure(reason))

    # -- the server side --------------------------------------------------------

    def from_client(self, data: bytes) -> None:
        if self.silent or not self.behaviour.handshake:
            return
        for event in self.server.receive_data(data):
            if isinstance(event, RequestReceived):
                self.requests[event.stream_id] = {"headers": dict(event.headers), "data": b""}
                self.max_open = max(self.max_open, len(self.requests))
                self.network.max_open = max(self.network.max_open, len(self.requests))
            elif isinstance(event, DataReceived):
                self.server.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                if event.stream_id in self.requests:
                    self.requests[event.stream_id]["data"] += event.data
            elif isinstance(event, StreamEnded):
                self._handle(event.stream_id)
            elif isinstance(event, StreamReset):
                self.requests.pop(event.stream_id, None)
            elif isinstance(event, ConnectionTerminated):
                self.close(ConnectionDone("GOAWAY from the client"))
                return
        self.flush()

    def _handle(self, stream_id: int) -> None:
        request = self.requests.get(stream_id)
        if request is None:
            return
        self.received += 1
        self.network.received += 1
        answer = self.behaviour.answer(self, request["headers"])
        if answer is None:
            return
        status, reason = answer
        if status == 0:  # REFUSED_STREAM
            del self.requests[stream_id]
            self.server.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        self.respond(stream_id, status, reason)

    def respond(self, stream_id: int, status: int, reason: str = "") -> None:
        request = self.requests.pop(stream_id)
        apns_id = request["headers"].get("apns-id") or str(uuid.uuid4())
        body = json.dumps({"reason": reason}).encode() if reason else b""
        self.server.send_headers(stream_id, [(":status", str(status)), ("apns-id", apns_id)],
                                 end_stream=not body)
        if body:
            self.server.send_data(stream_id, body, end_stream=True)
        self.answered += 1
        if status == 200:
            self.network.deliveries[apns_id] += 1
            self.network.delivered_paths.append(request["headers"].get(":path", ""))

    def goaway(self) -> None:
        """A routine GOAWAY (NO_ERROR) naming the last stream answered, then FIN."""
        last = max([0] + [s for s in range(1, self.server.highest_inbound_stream_id + 1, 2)
                          if s not in self.requests])
        self.server.close_connection(error_code=ErrorCodes.NO_ERROR, last_stream_id=last)
        self.flush()
        self.clock.callLater(self.network.latency * 2, self.close, ConnectionDone("after GOAWAY"))


class _Endpoint:
    def __init__(self, network: "MemoryNetwork", address: IPv4Address) -> None:
        self.network = network
        self.address = address

    def connect(self, factory: Any):
        return succeed(self.network.connect(factory, self.address))


class MemoryNetwork:
    """Every connection attempt of a client, and what the peer does with it.

    ``behaviours``: the Behaviour of the 1st, 2nd, ... connection; later ones
    get ``default``.
    """

    def __init__(self, clock: Clock, latency: float = 0.001, default: Optional[Behaviour] = None,
                 behaviours: Tuple[Behaviour, ...] = ()) -> None:
        self.clock = clock
        self.latency = latency
        self.default = default or Behaviour()
        self.behaviours = list(behaviours)
        self.connections: List[MemoryConnection] = []
        self.open_connections: set = set()
        self.connect_times: List[float] = []
        self.deliveries: Counter = Counter()
        self.delivered_paths: List[str] = []
        self.received = 0
        self.max_open = 0
        #: what the push service's name resolves to (None: 127.0.0.1 and the app's port)
        self.addresses: Optional[List[IPv4Address]] = None
        self.resolved = 0

    def endpoint(self, address: Optional[IPv4Address] = None) -> _Endpoint:
        return _Endpoint(self, address or IPv4Address("TCP", "127.0.0.1", 443))

    def connect(self, factory: Any, address: IPv4Address) -> Any:
        number = len(self.connections)
        behaviour = self.behaviours[number] if number < len(self.behaviours) else self.default
        protocol = factory.buildProtocol(address)
        connection = MemoryConnection(self, protocol, behaviour, address, number)
        self.connections.append(connection)
        self.open_connections.add(connection)
        self.connect_times.append(self.clock.seconds())
        connection.start()
        return protocol

    @property
    def ready_connections(self) -> List[MemoryConnection]:
        return [c for c in self.connections if c.open and c.protocol.ready]


class MemoryAppleClient(AppleClient):
    """An AppleClient whose connections go to a :class:`MemoryNetwork`."""

    network: MemoryNetwork

    def _endpoint(self, *address: Any) -> _Endpoint:
        return self.network.endpoint(*address)

    def _resolve(self):
        self.network.resolved += 1
        return succeed(self.network.addresses or [IPv4Address("TCP", "127.0.0.1", self.port)])


_CERTS: Dict[str, Tuple[str, str]] = {}


def memory_app(directory: str, **changes: Any) -> AppConfig:
    """An Apple AppConfig with a client certificate (never presented: no TLS here)."""
    if directory not in _CERTS:
        ca = CertificateAuthority("Memory CA")
        _CERTS[directory] = ca.client("Apple Push Services: memory", uid="com.example.memory").write(
            directory, "client")
    cert, key = _CERTS[directory]
    values = dict(section="memory", app_id="com.example.memory", app_type="sylk", platform="apple",
                  apple_certificate=cert, apple_key=key, apple_host="127.0.0.1", apple_port=443,
                  apple_apns_id=True)
    values.update(changes)
    return AppConfig(**values)


def memory_client(testcase: Any, clock: Clock, network: MemoryNetwork, **kwargs: Any) -> MemoryAppleClient:
    """A started client on ``network``, stopped at the test's cleanup."""
    import os
    directory = testcase.mktemp()
    os.makedirs(directory)
    client = MemoryAppleClient(memory_app(directory), clock, **kwargs)
    client.network = network
    client.start()

    def stop() -> None:
        stopping = client.stop()
        for _ in range(200):
            if stopping.called:
                break
            clock.advance(0.1)
    testcase.addCleanup(stop)
    return client
