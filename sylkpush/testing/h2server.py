"""The server side of HTTP/2 for the fakes: frames in, requests out, answers back.

:class:`H2ServerProtocol` turns the frames of one connection into calls of
its hooks (a request's headers, its body, its end, a reset) and writes
answers; the fakes subclass it and decide what each request gets.
:class:`AlpnSwitch` serves HTTP/2 and HTTP/1.1 on one TLS port: whatever the
client chose with ALPN.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ConnectionTerminated, DataReceived, RequestReceived, StreamEnded, StreamReset
from h2.exceptions import H2Error
from h2.settings import SettingCodes, Settings
from twisted.internet.protocol import Protocol

from sylkpush.transports import ITLSStreamTransport, no_delay

log = logging.getLogger(__name__)

#: flow-control window the fakes give their peers, so bursts are not throttled
WINDOW = 16 * 1024 * 1024


class CountingH2Connection(H2Connection):
    """A server-side H2Connection told how many streams are open instead of counting them.

    h2 walks every stream it knows each time one is opened, to count the
    open ones and forget the closed ones; with a thousand streams in flight
    that walk costs more than everything else together.  The protocol above
    knows the count (``count()``); h2's own walk still runs now and then so
    closed streams are forgotten.
    """

    CULL_EVERY = 512

    def __init__(self, config: H2Configuration, count: Callable[[], int]) -> None:
        super().__init__(config=config)
        self._count = count
        self._opened = 0

    @property
    def open_inbound_streams(self) -> int:
        self._opened += 1
        if self._opened < self.CULL_EVERY:
            return self._count()
        self._opened = 0
        return super().open_inbound_streams


class H2ServerProtocol(Protocol):
    """One HTTP/2 connection of a fake server.

    ``reactor`` times the coalesced writes; ``max_concurrent_streams`` goes
    in the first SETTINGS.  Subclasses implement :meth:`request_received`,
    :meth:`body_received`, :meth:`request_complete` and :meth:`stream_reset`,
    and answer with :meth:`respond`.
    """

    transport: ITLSStreamTransport

    def __init__(self, reactor: Any, max_concurrent_streams: int) -> None:
        self.reactor = reactor
        self.max_concurrent_streams = max_concurrent_streams
        config = H2Configuration(client_side=False, header_encoding="utf-8",
                                 validate_outbound_headers=False, normalize_outbound_headers=False)
        #: the HTTP/2 state; it says its first words in connectionMade
        self.conn = CountingH2Connection(config, self.open_streams)
        self.closing = False
        self._flush_call: Any = None

    # -- hooks ----------------------------------------------------------------

    def open_streams(self) -> int:
        """Streams the fake holds open (h2 is told instead of counting them)."""
        raise NotImplementedError

    def request_received(self, stream_id: int, headers: List[Tuple[str, str]]) -> None:
        raise NotImplementedError

    def body_received(self, stream_id: int, data: bytes) -> None:
        raise NotImplementedError

    def request_complete(self, stream_id: int) -> None:
        raise NotImplementedError

    def stream_reset(self, stream_id: int) -> None:
        raise NotImplementedError

    def protocol_error(self, error: H2Error) -> None:
        """The client broke HTTP/2: the connection is dropped after this."""
        log.warning("fake HTTP/2 server: error from the client: %s", error)

    def reading(self) -> bool:
        """False while frames must be ignored."""
        return not self.closing

    # -- Twisted ----------------------------------------------------------------

    def connectionMade(self) -> None:  # noqa: N802
        # the stream limit must be in the first SETTINGS, or a client may open
        # more streams before it learns the limit
        self.conn.local_settings = Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: self.max_concurrent_streams,
            SettingCodes.INITIAL_WINDOW_SIZE: WINDOW,
            SettingCodes.MAX_HEADER_LIST_SIZE: 64 * 1024,
        })
        no_delay(self.transport)  # as a real server: answers leave at once
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(WINDOW)
        self.flush()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if not self.reading():
            return
        try:
            events = self.conn.receive_data(data)
        except H2Error as exc:
            self.protocol_error(exc)
            self.closing = True
            self.transport.abortConnection()
            return
        for event in events:
            if isinstance(event, RequestReceived):
                # h2 declares headers as bytes; header_encoding makes them str
                self.request_received(event.stream_id, list(event.headers))  # type: ignore[arg-type]
            elif isinstance(event, DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                self.body_received(event.stream_id, event.data)
            elif isinstance(event, StreamEnded):
                self.request_complete(event.stream_id)
            elif isinstance(event, StreamReset):
                self.stream_reset(event.stream_id)
            elif isinstance(event, ConnectionTerminated):
                self.closing = True
                self.transport.loseConnection()
            if self.closing:
                return
        self.flush()

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        self.closing = True
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None

    # -- answering ---------------------------------------------------------------

    def respond(self, stream_id: int, status: int, headers: Sequence[Tuple[str, str]], body: bytes) -> bool:
        """Write an answer (written out soon, with the others due now); False
        when the stream or the connection is gone."""
        if self.closing:
            return False
        all_headers = [(":status", str(status)), *headers]
        if body:
            all_headers.append(("content-length", str(len(body))))
        try:
            self.conn.send_headers(stream_id, all_headers, end_stream=not body)
            if body:
                self.conn.send_data(stream_id, body, end_stream=True)
        except H2Error:
            return False
        self.flush_soon()
        return True

    def flush_soon(self) -> None:
        # answers due at the same moment leave in one TLS write
        if self._flush_call is None:
            self._flush_call = self.reactor.callLater(0, self.flush)

    def flush(self) -> None:
        self._flush_call = None
        if self.transport is None:  # not connected yet
            return
        data = self.conn.data_to_send()
        if data:
            self.transport.write(data)


class AlpnSwitch(Protocol):
    """Hands a TLS connection to the HTTP/2 or the HTTP/1.1 protocol, as
    the client chose with ALPN, once its first bytes arrive."""

    def __init__(self, http2: Protocol, http1: Protocol) -> None:
        self.choices: Dict[Optional[bytes], Protocol] = {b"h2": http2}
        self.http1 = http1
        self.chosen: Optional[Protocol] = None

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self.chosen is None:
            negotiated = getattr(self.transport, "negotiatedProtocol", None)
            self.chosen = self.choices.get(negotiated, self.http1)
            self.chosen.makeConnection(self.transport)
        self.chosen.dataReceived(data)

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        if self.chosen is not None:
            self.chosen.connectionLost(reason)
