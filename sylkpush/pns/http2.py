"""A thin HTTP/2 client protocol on the ``h2`` package: bytes in, events out.

:class:`H2ClientProtocol` owns frames, stream ids, flow control, PING and the
mapping of each response to the request that opened its stream.  It decides
nothing about retries or reconnecting: it tells its listener (the connection
manager, e.g. :class:`sylkpush.pns.apple.AppleClient`) what happened.

Listener methods: ``connection_ready(protocol)`` (TLS done, ALPN h2, the
peer's first SETTINGS received), ``streams_available(protocol)`` (a stream
closed, the peer raised its stream limit, or a suspect connection proved
alive), ``connection_goaway(protocol, reason)`` (no new stream may be
opened: the peer said GOAWAY, or the stream ids are nearly used up),
``connection_silent(protocol)`` (about to be dropped for silence: the other
connections may be silent too, see :meth:`H2ClientProtocol.probe`) and
``connection_closed(protocol, reason)``.

A stream's handler gets exactly one call: ``response(status, headers, body)``
or ``failed(kind, reason)`` where ``kind`` is :data:`REFUSED` (RST_STREAM
REFUSED_STREAM: not processed, the peer is busy), :data:`UNPROCESSED` (above a
GOAWAY's last stream id, or its body never completely sent: safe to send
again at once), :data:`RESET` (another RST_STREAM: the peer may have acted on
it) or :data:`LOST` (written, and the connection went away or went silent
before the answer).

Liveness is checked by one timer per connection, never one per request:
every :attr:`H2ClientProtocol.check_interval` it looks at the oldest open
stream.  When that stream has waited ``answer_timeout`` seconds and nothing
at all came from the peer meanwhile, a PING goes out; without any frame back
within ``answer_timeout`` more, the connection is silent (a dead NAT entry, a
crashed host: no FIN, no RST) and is dropped, its streams reported LOST.
While such a PING is out the connection is suspect and takes no new request.
An idle connection is PINGed after ``ping_interval`` seconds and dropped when
the ACK does not come within ``ping_timeout``.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (ConnectionTerminated, DataReceived, PingAckReceived, RemoteSettingsChanged,
                       ResponseReceived, StreamEnded, StreamReset, WindowUpdated)
from h2.exceptions import H2Error
from h2.settings import SettingCodes
from hpack import Encoder
from hpack.table import HeaderTable
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from sylkpush.transports import ITLSStreamTransport

log = logging.getLogger(__name__)

REFUSED = "refused"
UNPROCESSED = "unprocessed"
RESET = "reset"
LOST = "lost"

#: streams open at once on one connection at most, whatever the peer allows
#: (h2 assumes 2**32 when the peer says nothing)
MAX_STREAMS = 1000
#: no stream is opened past this id: the connection is retired first (the
#: last one a client may use is 2**31 - 1)
LAST_STREAM_ID = 2 ** 31 - 1 - 2 * MAX_STREAMS


class _Stream:
    __slots__ = ("handler", "body", "sent", "status", "headers", "data", "opened")

    def __init__(self, handler: Any, body: bytes, opened: float) -> None:
        self.handler = handler
        self.opened = opened
        self.body = memoryview(body)
        self.sent = 0
        self.status = 0
        self.headers: Dict[str, str] = {}
        self.data: List[bytes] = []

    @property
    def unsent(self) -> int:
        return len(self.body) - self.sent


def _hpack_integer(value: int, prefix_bits: int, first: int) -> bytes:
    """An HPACK integer (RFC 7541 §5.1) with ``first``'s flag bits in its first byte."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    encoded = [first | limit]
    value -= limit
    while value >= 128:
        encoded.append((value & 0x7F) | 0x80)
        value >>= 7
    encoded.append(value)
    return bytes(encoded)


def _hpack_string(data: bytes) -> bytes:
    """An HPACK string literal, not Huffman coded (RFC 7541 §5.2)."""
    return _hpack_integer(len(data), 7, 0) + data


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


#: static table entries: (name, value) -> index, and name -> its first index
_STATIC = {entry: index for index, entry in reversed(list(enumerate(HeaderTable.STATIC_TABLE, 1)))}
_STATIC_NAMES = {name: index for (name, _), index in reversed(list(_STATIC.items()))}


class LiteralEncoder(Encoder):
    """An HPACK encoder that never uses the dynamic table.

    Each header is the static table entry that matches it whole, or a literal
    that is never added to the table (RFC 7541 §6.2.2; ``authorization`` as
    never indexed, §6.2.3), without Huffman coding.  A header's encoding then
    depends on nothing else: it is computed once and kept, and a request's
    header block is made of kept pieces.  The blocks grow by some bytes; the
    table search and Huffman coding of h2's encoder (a tenth of the CPU of a
    push) are gone.  Changes of the peer's table size are still signalled.
    """

    #: header encodings kept at most (the per-push ones, like :path, come and go)
    KEPT = 4096
    SENSITIVE = frozenset((b"authorization",))

    def __init__(self) -> None:
        super().__init__()
        self._kept: Dict[Tuple[Any, Any], bytes] = {}

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        kept = self._kept
        block = []
        if self.header_table.resized:
            block.append(self._encode_table_size_change())
            self.header_table.resized = False
        for header in headers:
            key = (header[0], header[1])
            piece = kept.get(key)
            if piece is None:
                if len(kept) >= self.KEPT:
                    kept.clear()
                piece = kept[key] = self._literal(_as_bytes(header[0]), _as_bytes(header[1]))
            block.append(piece)
        return b"".join(block)

    def _literal(self, name: bytes, value: bytes) -> bytes:
        index = _STATIC.get((name, value))
        if index is not None:
            return _hpack_integer(index, 7, 0x80)
        first = 0x10 if name in self.SENSITIVE else 0x00
        index = _STATIC_NAMES.get(name)
        if index is not None:
            return _hpack_integer(index, 4, first) + _hpack_string(value)
        return bytes((first,)) + _hpack_string(name) + _hpack_string(value)


class CountingH2Connection(H2Connection):
    """An H2Connection told how many streams are open instead of counting them.

    h2 walks every stream it knows each time a stream is opened, to count the
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

    def _cull_now(self) -> bool:
        """True once in CULL_EVERY calls: then h2 counts (and forgets closed streams)."""
        self._opened += 1
        if self._opened >= self.CULL_EVERY:
            self._opened = 0
            return True
        return False

    @property
    def open_outbound_streams(self) -> int:
        if self.config.client_side and not self._cull_now():
            return self._count()
        return super().open_outbound_streams

    @property
    def open_inbound_streams(self) -> int:
        if not self.config.client_side and not self._cull_now():
            return self._count()
        return super().open_inbound_streams

    def _receive_goaway_frame(self, frame: Any) -> Tuple[list, list]:
        # h2 closes the whole connection state on GOAWAY and then refuses the
        # frames of streams the peer still answers; RFC 9113 §6.8 says the
        # streams up to last_stream_id may complete, and an answer thrown away
        # is a push that reaches the device twice once it is sent again.
        # The protocol opens no new stream after GOAWAY (it is "closing").
        event = ConnectionTerminated()
        try:
            event.error_code = ErrorCodes(frame.error_code)
        except ValueError:
            event.error_code = frame.error_code
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]


@implementer(IHandshakeListener)
class H2ClientProtocol(Protocol):
    """One HTTP/2 client connection.

    ``ping_interval``: after that many idle seconds a PING is sent; without its
    ACK within ``ping_timeout`` the connection is dropped.  ``answer_timeout``:
    see the module's description.  After GOAWAY, streams the peer still owes
    an answer get ``ping_timeout`` seconds.
    """

    transport: ITLSStreamTransport

    #: seconds between two liveness checks
    check_interval = 0.25

    def __init__(self, listener: Any, reactor: Any, ping_interval: float = 60.0,
                 ping_timeout: float = 20.0, answer_timeout: float = 1.5,
                 max_streams: int = MAX_STREAMS) -> None:
        self.listener = listener
        self.reactor = reactor
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.answer_timeout = answer_timeout
        self.max_streams = max_streams
        # our headers are built lowercase and clean; h2's re-checking of every
        # outgoing header costs more than sending it.  Of an answer only
        # :status and a few headers are read, each parsed defensively: h2's
        # checks of every incoming header are not needed either.
        config = H2Configuration(client_side=True, header_encoding="utf-8",
                                 validate_outbound_headers=False, normalize_outbound_headers=False,
                                 validate_inbound_headers=False)
        #: the HTTP/2 state; it says its first words in connectionMade
        self.conn = CountingH2Connection(config, lambda: len(self._streams))
        self.conn.encoder = LiteralEncoder()
        self.ready = False
        self.closing = False
        self.lost = False
        #: requests answered on this connection
        self.answered = 0
        self._streams: Dict[int, _Stream] = {}
        self._blocked: Set[int] = set()
        self._last_received = 0.0
        self._ping_sent: Optional[float] = None
        #: a PING must prove the connection alive before it takes more requests
        self._suspect = False
        self._closing_since = 0.0
        self._check_timer: Any = None
        self._close_reason = "connection closed"
        self._max_streams = 0

    # -- Twisted callbacks ---------------------------------------------------

    def connectionMade(self) -> None:  # noqa: N802
        self.conn.initiate_connection()
        self.conn.update_settings({SettingCodes.ENABLE_PUSH: 0})
        self._last_received = self.reactor.seconds()
        self._check_timer = self.reactor.callLater(self.check_interval, self._check)
        self.flush()

    def handshakeCompleted(self) -> None:  # noqa: N802
        protocol = getattr(self.transport, "negotiatedProtocol", None)
        if protocol != b"h2":
            self.abort(f"the server did not negotiate HTTP/2 with ALPN (got {protocol!r})")

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self.closing and not self._streams:
            return
        self._last_received = self.reactor.seconds()
        try:
            events = self.conn.receive_data(data)
        except H2Error as exc:
            self.abort(f"HTTP/2 protocol error: {exc}")
            return
        for event in events:
            handler = self._EVENTS.get(type(event))
            if handler is not None:
                handler(self, event)
        self.flush()
        if self._suspect:  # the peer spoke: alive
            self._suspect = False
            if not self.closing:
                self.listener.streams_available(self)

    def connectionLost(self, reason: Optional[Failure] = None) -> None:  # noqa: N802
        self.lost = True
        self._cancel_timers()
        if not self.closing:
            self._close_reason = f"connection lost: {reason.getErrorMessage() if reason else 'closed'}"
        self.closing = True
        self._fail_streams(self._close_reason)
        self.listener.connection_closed(self, self._close_reason)

    # -- what the connection manager calls ---------------------------------

    def available_streams(self) -> int:
        """How many more requests the peer lets us have open right now."""
        if not self.ready or self.closing or self._suspect:
            return 0
        if self.conn.highest_outbound_stream_id >= LAST_STREAM_ID:
            self._retire("stream ids nearly used up")
            return 0
        return self._max_streams - len(self._streams)

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def request(self, headers: Sequence[Tuple[str, str]], body: bytes, handler: Any) -> int:
        """Open a stream with ``headers`` and ``body``; the handler gets its outcome.

        The caller checks :meth:`available_streams` first and calls
        :meth:`flush` after a batch of requests.
        """
        try:
            stream_id = self.conn.get_next_available_stream_id()
            self.conn.send_headers(stream_id, headers, end_stream=not body)
        except H2Error as exc:
            # available_streams() said yes: only a bug gets here, and the
            # request was never sent; the connection takes no more
            self._retire(f"cannot open a stream: {exc}")
            handler.failed(UNPROCESSED, f"cannot open a stream: {exc}")
            return 0
        stream = _Stream(handler, body, self.reactor.seconds())
        self._streams[stream_id] = stream
        if body:
            self._send_body(stream_id, stream)
        return stream_id

    def cancel(self, stream_id: int) -> None:
        """Reset ``stream_id`` (CANCEL) and forget it: its handler hears nothing more."""
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        self._blocked.discard(stream_id)
        try:
            self.conn.reset_stream(stream_id, ErrorCodes.CANCEL)
        except H2Error:
            pass
        self._stream_closed()

    def probe(self) -> None:
        """Make sure the peer is alive before more requests go here: unless
        it spoke within ``answer_timeout``, PING it and take no new request
        until something comes back (dropped as silent otherwise)."""
        if not self.ready or self.closing:
            return
        now = self.reactor.seconds()
        if now - self._last_received < self.answer_timeout:
            return
        self._suspect = True
        if self._ping_sent is None:
            self._ping(now)

    def flush(self) -> None:
        """Write what h2 has queued, in one go."""
        if self.transport is None:  # not connected yet
            return
        data = self.conn.data_to_send()
        if data:
            self.transport.write(data)

    def close(self, reason: str = "closed by the client") -> None:
        """Say GOAWAY (unless closing already) and close; streams still open are reported LOST."""
        if not self.connected or self.lost:
            return
        if not self.closing:
            self.closing = True
            self._closing_since = self.reactor.seconds()
            self._close_reason = reason
            try:
                self.conn.close_connection()
                self.flush()
            except H2Error:
                pass
        self.transport.loseConnection()

    def abort(self, reason: str) -> None:
        """Drop the connection at once (protocol errors, dead peer); its open
        streams are reported now, so they can be sent again elsewhere."""
        log.warning("closing HTTP/2 connection to %s: %s", self._peer(), reason)
        self.closing = True
        self._close_reason = reason
        self._fail_streams(reason)
        self.transport.abortConnection()

    # -- h2 events ------------------------------------------------------------

    def _on_settings(self, event: RemoteSettingsChanged) -> None:
        self._max_streams = min(self.conn.remote_settings.max_concurrent_streams, self.max_streams)
        if not self.ready:
            self.ready = True
            self.listener.connection_ready(self)
        else:
            self.listener.streams_available(self)
        # a bigger initial window may unblock bodies that were waiting
        if SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
            self._resume_blocked()

    def _on_response(self, event: ResponseReceived) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is None:
            return
        # h2 declares headers as bytes; header_encoding makes them str
        headers: Dict[str, str] = dict(event.headers)  # type: ignore[arg-type]
        try:
            stream.status = int(headers.pop(":status", "0"))
        except ValueError:
            stream.status = 0
        stream.headers = headers

    def _on_data(self, event: DataReceived) -> None:
        self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        stream = self._streams.get(event.stream_id)
        if stream is not None:
            stream.data.append(event.data)

    def _on_stream_ended(self, event: StreamEnded) -> None:
        stream = self._streams.pop(event.stream_id, None)
        if stream is None:
            return
        self._blocked.discard(event.stream_id)
        if stream.unsent:
            # the peer answered before reading all of the body: close our side too
            self.conn.reset_stream(event.stream_id, ErrorCodes.CANCEL)
        self.answered += 1
        stream.handler.response(stream.status, stream.headers, b"".join(stream.data))
        self._stream_closed()

    def _on_reset(self, event: StreamReset) -> None:
        stream = self._streams.pop(event.stream_id, None)
        if stream is None:
            return
        self._blocked.discard(event.stream_id)
        code = event.error_code
        name = code.name if isinstance(code, ErrorCodes) else str(code)
        kind = REFUSED if code == ErrorCodes.REFUSED_STREAM else RESET
        stream.handler.failed(kind, f"stream reset by the server ({name})")
        self._stream_closed()

    def _on_window(self, event: WindowUpdated) -> None:
        if event.stream_id == 0:
            self._resume_blocked()
        elif event.stream_id in self._blocked:
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                self._send_body(event.stream_id, stream)

    def _on_goaway(self, event: ConnectionTerminated) -> None:
        # Streams above last_stream_id were never processed: safe to send
        # again elsewhere.  Those up to it are still answered on this
        # connection; it closes after the last of them, or after ping_timeout
        # (then they are LOST: the peer may have acted on them).
        code = event.error_code
        name = code.name if isinstance(code, ErrorCodes) else str(code)
        extra = ""
        if event.additional_data:
            extra = " " + event.additional_data.decode("utf-8", "replace")[:200]
        reason = f"server sent GOAWAY ({name}{extra})"
        last = event.last_stream_id if event.last_stream_id is not None else 0
        log.info("HTTP/2 connection to %s: %s, last stream %s", self._peer(), reason, last)
        first_goaway = not self.closing
        if first_goaway:
            self._closing_since = self.reactor.seconds()
        self.closing = True
        self._close_reason = reason
        refused = {stream_id: stream for stream_id, stream in self._streams.items() if stream_id > last}
        for stream_id in refused:
            del self._streams[stream_id]
            self._blocked.discard(stream_id)
        for stream_id in sorted(refused, reverse=True):
            refused[stream_id].handler.failed(UNPROCESSED, reason)
        if first_goaway:
            self.listener.connection_goaway(self, reason)
        if not self._streams:
            self.transport.loseConnection()

    def _retire(self, reason: str) -> None:
        """Open no more streams here; close once those open are answered."""
        if self.closing:
            return
        log.info("HTTP/2 connection to %s retired: %s", self._peer(), reason)
        self.closing = True
        self._closing_since = self.reactor.seconds()
        self._close_reason = f"retired: {reason}"
        self.listener.connection_goaway(self, self._close_reason)
        if not self._streams and self.transport is not None:
            self.transport.loseConnection()

    def _stream_closed(self) -> None:
        """After a stream ended: the manager may start another, or a
        connection draining after GOAWAY may now close."""
        if self.closing:
            if not self._streams and self.transport is not None:
                self.transport.loseConnection()
        else:
            self.listener.streams_available(self)

    def _on_ping_ack(self, event: PingAckReceived) -> None:
        self._ping_sent = None

    #: h2 event class -> its handler (each takes its own kind of event)
    _EVENTS: Dict[type, Callable[[H2ClientProtocol, Any], None]] = {
        RemoteSettingsChanged: _on_settings,
        ResponseReceived: _on_response,
        DataReceived: _on_data,
        StreamEnded: _on_stream_ended,
        StreamReset: _on_reset,
        WindowUpdated: _on_window,
        ConnectionTerminated: _on_goaway,
        PingAckReceived: _on_ping_ack,
    }

    # -- helpers --------------------------------------------------------------

    def _send_body(self, stream_id: int, stream: _Stream) -> None:
        """Send as much of the body as the peer's windows allow."""
        conn = self.conn
        while stream.unsent:
            window = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
            if window <= 0:
                self._blocked.add(stream_id)
                return
            size = min(window, stream.unsent)
            chunk = stream.body[stream.sent:stream.sent + size].tobytes()
            stream.sent += size
            conn.send_data(stream_id, chunk, end_stream=not stream.unsent)
        self._blocked.discard(stream_id)

    def _resume_blocked(self) -> None:
        for stream_id in sorted(self._blocked):
            stream = self._streams.get(stream_id)
            if stream is None:
                self._blocked.discard(stream_id)
                continue
            self._send_body(stream_id, stream)
            if stream_id in self._blocked:
                break  # the connection window is used up again

    def _fail_streams(self, reason: str) -> None:
        """Every open stream LOST (UNPROCESSED when its body was not all sent)."""
        # newest first, so a manager that puts them back at the front of its
        # queue keeps their original order
        streams, self._streams = self._streams, {}
        self._blocked.clear()
        for stream_id in sorted(streams, reverse=True):
            stream = streams[stream_id]
            stream.handler.failed(UNPROCESSED if stream.unsent else LOST, reason)

    def _check(self) -> None:
        """The liveness check (see the module's description)."""
        now = self.reactor.seconds()
        self._check_timer = self.reactor.callLater(self.check_interval, self._check)
        if self.closing:
            if not self._streams:
                return
            if now - self._closing_since >= self.ping_timeout:
                self.abort(f"{self._close_reason}: {len(self._streams)} streams unanswered "
                           f"{self.ping_timeout:g} s later")
                return
        if self._ping_sent is not None:
            limit = self.answer_timeout if self._streams else self.ping_timeout
            if now - self._ping_sent >= limit:
                waiting = f"{len(self._streams)} requests unanswered, " if self._streams else ""
                self.listener.connection_silent(self)
                self.abort(f"connection to {self._peer()} went silent: {waiting}no answer to PING "
                           f"within {limit:g} s")
            return
        quiet = now - self._last_received
        if self._streams:
            oldest = next(iter(self._streams.values())).opened
            if now - oldest >= self.answer_timeout and quiet >= self.answer_timeout:
                self._suspect = True
                self._ping(now)
        elif quiet >= self.ping_interval:
            self._ping(now)

    def _ping(self, now: float) -> None:
        try:
            self.conn.ping(os.urandom(8))
        except H2Error:
            return
        self._ping_sent = now
        self.flush()

    def _cancel_timers(self) -> None:
        if self._check_timer is not None and self._check_timer.active():
            self._check_timer.cancel()
        self._check_timer = None

    def _peer(self) -> str:
        try:
            peer = self.transport.getPeer()
            return f"{peer.host}:{peer.port}"
        except Exception:  # noqa: BLE001 - only for log lines
            return "?"
