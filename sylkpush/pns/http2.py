"""A lean HTTP/2 client protocol: bytes in, outcomes of requests out.

:class:`H2ClientProtocol` owns frames (written and read here with the
layouts of :mod:`sylkpush.pns.h2frames`; header blocks decoded by
:mod:`sylkpush.pns.hpack_decoder`), stream ids, flow control, PING and the
mapping of each response to the request that opened its stream.  It decides nothing about retries or
reconnecting: it tells its listener (the connection manager, e.g.
:class:`sylkpush.pns.apple.AppleClient`) what happened.

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

A peer that breaks HTTP/2 (a frame larger than we allow, a malformed frame, a
header block that cannot be decoded, a window pushed past its limit) gets
GOAWAY with the error, and the connection's open streams are reported at
once, LOST.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from h2.errors import ErrorCodes
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from sylkpush.pns.h2frames import (
    ACK, CONTINUATION, DATA, DEFAULT_MAX_FRAME, DEFAULT_WINDOW, ENABLE_PUSH, END_HEADERS, END_STREAM, FRAME_HEAD,
    GOAWAY, HEADER_TABLE_SIZE, INITIAL_WINDOW_SIZE, LARGEST_MAX_FRAME, LARGEST_WINDOW,
    MAX_CONCURRENT_STREAMS, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE, PADDED, PING, PREFACE, PRIORITY_FLAG,
    PUSH_PROMISE, RST_STREAM, SETTING, SETTINGS, SETTINGS_ACK, TWO_WORDS, WINDOW_UPDATE, WORD, H2ProtocolError,
    LiteralEncoder, error_name, frame_head, goaway_frame, header_frames, ping_frame, rst_stream_frame,
    settings_frame, window_update_frame)
from sylkpush.pns.hpack_decoder import HeaderBlockDecoder, HeaderBlockError
from sylkpush.transports import ITLSStreamTransport, no_delay, send_at_once, write_through

log = logging.getLogger(__name__)

REFUSED = "refused"
UNPROCESSED = "unprocessed"
RESET = "reset"
LOST = "lost"

#: streams open at once on one connection at most, whatever the peer allows
#: (the peer may say nothing: then it allows any number)
MAX_STREAMS = 1000
#: no stream is opened past this id: the connection is retired first (the
#: last one a client may use is 2**31 - 1)
LAST_STREAM_ID = 2 ** 31 - 1 - 2 * MAX_STREAMS
#: the largest header list (and so header block) taken from the peer
MAX_HEADER_LIST = 65536
#: what the client says in its SETTINGS: no server push (so the server opens
#: no stream: its stream limit is moot); the rest are RFC 9113's defaults,
#: said so the peer need not assume them
CLIENT_SETTINGS = {ENABLE_PUSH: 0, MAX_CONCURRENT_STREAMS: 100, INITIAL_WINDOW_SIZE: DEFAULT_WINDOW,
                   MAX_FRAME_SIZE: DEFAULT_MAX_FRAME, MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST}
#: received bytes are given back (WINDOW_UPDATE) once half a window is used
GIVE_BACK = DEFAULT_WINDOW // 2

_unpack_head = FRAME_HEAD.unpack_from
_PROTOCOL_ERROR = int(ErrorCodes.PROTOCOL_ERROR)
_FLOW_CONTROL_ERROR = int(ErrorCodes.FLOW_CONTROL_ERROR)
_FRAME_SIZE_ERROR = int(ErrorCodes.FRAME_SIZE_ERROR)
_COMPRESSION_ERROR = int(ErrorCodes.COMPRESSION_ERROR)
_ENHANCE_YOUR_CALM = int(ErrorCodes.ENHANCE_YOUR_CALM)
_REFUSED_STREAM = int(ErrorCodes.REFUSED_STREAM)
_CANCEL = int(ErrorCodes.CANCEL)


class _Stream:
    __slots__ = ("handler", "body", "sent", "window", "received", "status", "headers", "data", "opened")

    def __init__(self, handler: Any, body: bytes, opened: float, window: int) -> None:
        self.handler = handler
        self.opened = opened
        self.body = body
        self.sent = 0
        #: what the peer lets us send on this stream now
        self.window = window
        #: bytes received and not given back yet
        self.received = 0
        self.status = 0
        #: the response's headers; None until they come
        self.headers: Optional[Dict[str, str]] = None
        self.data: List[Any] = []

    @property
    def unsent(self) -> int:
        return len(self.body) - self.sent


def _size_error(message: str) -> H2ProtocolError:
    return H2ProtocolError(_FRAME_SIZE_ERROR, message)


def _broken(message: str) -> H2ProtocolError:
    return H2ProtocolError(_PROTOCOL_ERROR, message)


def _unpadded(flags: int, payload: Any, kind: str) -> Any:
    """A DATA or HEADERS frame's payload without its padding."""
    if not flags & PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise _broken(f"{kind} frame padded beyond its length")
    return payload[1:len(payload) - payload[0]]


@implementer(IHandshakeListener)
class H2ClientProtocol(Protocol):
    """One HTTP/2 client connection.

    ``ping_interval``: after that many idle seconds a PING is sent; without its
    ACK within ``ping_timeout`` the connection is dropped.  ``answer_timeout``:
    see the module's description.  After GOAWAY, streams the peer still owes
    an answer get ``ping_timeout`` seconds; a connection closing cleanly
    that is still there ``ping_timeout`` seconds later is dropped.
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
        self.ready = False
        self.closing = False
        self.lost = False
        #: requests answered on this connection
        self.answered = 0
        #: the id of the last stream opened (0: none yet)
        self.highest_outbound_stream_id = 0
        self._streams: Dict[int, _Stream] = {}
        self._blocked: Set[int] = set()
        self._encoder = LiteralEncoder()
        #: every header block of the peer goes through it, in order: the
        #: peer's dynamic table is rebuilt from them
        self._decoder = HeaderBlockDecoder(max_header_list=MAX_HEADER_LIST)
        self._input = bytearray()
        self._output: List[bytes] = []
        #: a header block waiting for its CONTINUATION: stream id, block so
        #: far, END_STREAM
        self._continued: Optional[Tuple[int, bytearray, int]] = None
        #: what the peer lets us send on the connection now
        self._send_window = DEFAULT_WINDOW
        #: the peer's initial stream window and largest frame
        self._stream_window = DEFAULT_WINDOW
        self._max_frame = DEFAULT_MAX_FRAME
        #: bytes received on the connection and not given back yet
        self._received = 0
        self._last_received = 0.0
        self._ping_sent: Optional[float] = None
        self._ping_payload = b""
        #: a PING must prove the connection alive before it takes more requests
        self._suspect = False
        self._closing_since = 0.0
        self._check_timer: Any = None
        #: the write of this reactor pass's frames (flush)
        self._write_call: Any = None
        self._close_reason = "connection closed"
        #: SETTINGS_MAX_CONCURRENT_STREAMS of the peer (None: not said)
        self._peer_max_streams: Optional[int] = None
        self._max_streams = 0

    # -- Twisted callbacks ---------------------------------------------------

    def connectionMade(self) -> None:  # noqa: N802
        no_delay(self.transport)
        send_at_once(self.transport)
        self._output.append(PREFACE + settings_frame(CLIENT_SETTINGS))
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
        received = self._input
        received += data
        size = len(received)
        start = 0
        frames = self._FRAMES
        try:
            while size - start >= 9:
                word, flags, stream_id = _unpack_head(received, start)
                length = word >> 8
                if length > DEFAULT_MAX_FRAME:
                    raise _size_error(f"a frame of {length} bytes (at most {DEFAULT_MAX_FRAME} allowed)")
                end = start + 9 + length
                if end > size:
                    break
                kind = word & 0xFF
                payload = received[start + 9:end]
                start = end
                if self._continued is not None and kind != CONTINUATION:
                    raise _broken("a header block interrupted before its end")
                if kind < len(frames):  # others are ignored (RFC 9113 §4.1)
                    frames[kind](self, flags, stream_id & 0x7FFFFFFF, payload)
                if self.closing and not self._streams:
                    break
        except H2ProtocolError as exc:
            self._connection_error(exc.code, str(exc))
            return
        del received[:start]
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
        if self.highest_outbound_stream_id >= LAST_STREAM_ID:
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
        streams = self._streams
        if self.closing or len(streams) >= self._max_streams:
            # available_streams() said yes: only a bug gets here
            handler.failed(UNPROCESSED, "cannot open a stream: "
                           + ("the connection is closing" if self.closing else "no stream free"))
            return 0
        stream_id = self.highest_outbound_stream_id + 2 if self.highest_outbound_stream_id else 1
        self.highest_outbound_stream_id = stream_id
        stream = _Stream(handler, body, self.reactor.seconds(), self._stream_window)
        streams[stream_id] = stream
        self._output += header_frames(stream_id, self._encoder.encode(headers), not body, self._max_frame)
        if body:
            self._send_body(stream_id, stream)
        return stream_id

    def cancel(self, stream_id: int) -> None:
        """Reset ``stream_id`` (CANCEL) and forget it: its handler hears nothing more."""
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        self._blocked.discard(stream_id)
        self._output.append(rst_stream_frame(stream_id, _CANCEL))
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
        """Write the frames made so far once this reactor pass is over: the
        requests of a pass leave in one TLS record, sent at once."""
        if self._output and self._write_call is None and self.transport is not None:  # None: not connected yet
            self._write_call = self.reactor.callLater(0, self.write_out)

    def write_out(self) -> None:
        """Write the frames made so far, now."""
        if self._write_call is not None:
            if self._write_call.active():
                self._write_call.cancel()
            self._write_call = None
        output = self._output
        if output and self.transport is not None:
            self._output = []
            write_through(self.transport, b"".join(output))

    def _lose_connection(self) -> None:
        """Close once what is written (and the frames made so far) are out."""
        self.write_out()
        self.transport.loseConnection()

    def _close_if_drained(self) -> None:
        """A closing connection whose last stream is done: close it."""
        if not self._streams and self.transport is not None:
            self._lose_connection()

    def close(self, reason: str = "closed by the client") -> None:
        """Say GOAWAY (unless closing already) and close; streams still open are reported LOST."""
        if not self.connected or self.lost:
            return
        if not self.closing:
            self._start_closing(reason)
            self._output.append(goaway_frame(int(ErrorCodes.NO_ERROR)))
        self._lose_connection()

    def abort(self, reason: str) -> None:
        """Drop the connection at once (protocol errors, dead peer); its open
        streams are reported now, so they can be sent again elsewhere."""
        log.warning("closing HTTP/2 connection to %s: %s", self._peer(), reason)
        self._start_closing(reason)
        self._fail_streams(reason)
        self.transport.abortConnection()

    # -- frames received ------------------------------------------------------

    def _check_stream(self, stream_id: int) -> None:
        """A frame for a stream we do not hold: fine if we closed or
        forgot it, a protocol error if we never opened it."""
        if stream_id > self.highest_outbound_stream_id or not stream_id & 1:
            raise _broken(f"a frame on stream {stream_id}, which the client never opened")

    def _on_data(self, flags: int, stream_id: int, payload: bytearray) -> None:
        # The whole frame counts against the windows, padding included.  What
        # came is given back once half a window has come: the peer never
        # runs out of window (as with h2), so it cannot overrun it either.
        length = len(payload)
        received = self._received + length
        if received >= GIVE_BACK:
            self._output.append(window_update_frame(0, received))
            received = 0
        self._received = received
        data = _unpadded(flags, payload, "DATA")
        stream = self._streams.get(stream_id)
        if stream is None:
            self._check_stream(stream_id)
            return
        if data:
            stream.data.append(data)
        received = stream.received + length
        if flags & END_STREAM:
            self._on_stream_ended(stream_id)
        elif received >= GIVE_BACK:
            self._output.append(window_update_frame(stream_id, received))
            stream.received = 0
        else:
            stream.received = received

    def _on_headers(self, flags: int, stream_id: int, payload: bytearray) -> None:
        block = _unpadded(flags, payload, "HEADERS")
        if flags & PRIORITY_FLAG:  # stream dependency and weight: not used
            if len(block) < 5:
                raise _size_error("HEADERS frame too short for its priority")
            block = block[5:]
        if flags & END_HEADERS:
            self._on_header_block(stream_id, block, flags & END_STREAM)
        else:
            self._continued = (stream_id, block, flags & END_STREAM)

    def _on_continuation(self, flags: int, stream_id: int, payload: bytearray) -> None:
        continued = self._continued
        if continued is None or continued[0] != stream_id:
            raise _broken("CONTINUATION without a header block to continue")
        block = continued[1]
        block += payload
        if len(block) > MAX_HEADER_LIST:
            raise H2ProtocolError(_ENHANCE_YOUR_CALM, f"a header block of more than {MAX_HEADER_LIST} bytes")
        if flags & END_HEADERS:
            self._continued = None
            self._on_header_block(stream_id, block, continued[2])

    def _on_header_block(self, stream_id: int, block: bytearray, end_stream: int) -> None:
        # decoded even when nobody waits for it: the peer's later blocks may
        # refer to what this one adds to its table
        try:
            headers = self._decoder.decode(block)
        except HeaderBlockError as exc:
            raise H2ProtocolError(_COMPRESSION_ERROR, f"a header block that cannot be decoded: {exc}")
        stream = self._streams.get(stream_id)
        if stream is None:
            self._check_stream(stream_id)
            return
        if stream.headers is None:  # the response's (not trailers)
            fields = dict(headers)
            try:
                status = int(fields.pop(":status", "0"))
            except ValueError:
                status = 0
            if 100 <= status < 200:  # informational: the response is yet to come
                return
            stream.status = status
            stream.headers = fields
        if end_stream:
            self._on_stream_ended(stream_id)

    def _on_stream_ended(self, stream_id: int) -> None:
        stream = self._streams.pop(stream_id)
        if len(stream.body) > stream.sent:
            # the peer answered before reading all of the body: close our side too
            self._blocked.discard(stream_id)
            self._output.append(rst_stream_frame(stream_id, _CANCEL))
        self.answered += 1
        data = stream.data
        stream.handler.response(stream.status, stream.headers or {},
                                b"".join(data) if data else b"")
        self._stream_closed()

    def _on_reset(self, flags: int, stream_id: int, payload: bytearray) -> None:
        if len(payload) != 4:
            raise _size_error("RST_STREAM frame not of 4 bytes")
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            self._check_stream(stream_id)
            return
        self._blocked.discard(stream_id)
        (code,) = WORD.unpack(payload)
        kind = REFUSED if code == _REFUSED_STREAM else RESET
        stream.handler.failed(kind, f"stream reset by the server ({error_name(code)})")
        self._stream_closed()

    def _on_settings(self, flags: int, stream_id: int, payload: bytearray) -> None:
        if stream_id:
            raise _broken("SETTINGS frame on a stream")
        if flags & ACK:
            if payload:
                raise _size_error("SETTINGS acknowledgement with a payload")
            return
        if len(payload) % 6:
            raise _size_error("SETTINGS frame not made of 6-byte settings")
        window_change = 0
        for offset in range(0, len(payload), 6):
            key, value = SETTING.unpack_from(payload, offset)
            if key == MAX_CONCURRENT_STREAMS:
                self._peer_max_streams = value
            elif key == INITIAL_WINDOW_SIZE:
                if value > LARGEST_WINDOW:
                    raise H2ProtocolError(_FLOW_CONTROL_ERROR, f"SETTINGS_INITIAL_WINDOW_SIZE of {value}")
                window_change += value - self._stream_window
                self._stream_window = value
            elif key == MAX_FRAME_SIZE:
                if not DEFAULT_MAX_FRAME <= value <= LARGEST_MAX_FRAME:
                    raise _broken(f"SETTINGS_MAX_FRAME_SIZE of {value}")
                self._max_frame = value
            elif key == HEADER_TABLE_SIZE:
                self._encoder.header_table_size = value
            elif key == ENABLE_PUSH and value:
                raise _broken(f"SETTINGS_ENABLE_PUSH of {value} from a server")
        self._output.append(SETTINGS_ACK)
        if window_change:
            for stream in self._streams.values():
                stream.window += window_change
                if stream.window > LARGEST_WINDOW:
                    raise H2ProtocolError(_FLOW_CONTROL_ERROR, "a stream window beyond 2**31-1")
        peer_max = self._peer_max_streams
        self._max_streams = self.max_streams if peer_max is None else min(peer_max, self.max_streams)
        if not self.ready:
            self.ready = True
            self.listener.connection_ready(self)
        else:
            self.listener.streams_available(self)
        # a bigger initial window may unblock bodies that were waiting
        if window_change > 0:
            self._resume_blocked()

    def _on_push_promise(self, flags: int, stream_id: int, payload: bytearray) -> None:
        raise _broken("PUSH_PROMISE, though the client disabled server push")

    def _on_ping(self, flags: int, stream_id: int, payload: bytearray) -> None:
        if stream_id:
            raise _broken("PING frame on a stream")
        if len(payload) != 8:
            raise _size_error("PING frame not of 8 bytes")
        if not flags & ACK:
            self._output.append(ping_frame(bytes(payload), ack=True))
        elif self._ping_sent is not None and payload == self._ping_payload:
            self._ping_sent = None

    def _on_goaway(self, flags: int, stream_id: int, payload: bytearray) -> None:
        # Streams above last_stream_id were never processed: safe to send
        # again elsewhere.  Those up to it are still answered on this
        # connection; it closes after the last of them, or after ping_timeout
        # (then they are LOST: the peer may have acted on them).
        if stream_id:
            raise _broken("GOAWAY frame on a stream")
        if len(payload) < 8:
            raise _size_error("GOAWAY frame shorter than 8 bytes")
        last, code = TWO_WORDS.unpack_from(payload)
        last &= 0x7FFFFFFF
        extra = ""
        if len(payload) > 8:
            extra = " " + payload[8:208].decode("utf-8", "replace")
        reason = f"server sent GOAWAY ({error_name(code)}{extra})"
        log.info("HTTP/2 connection to %s: %s, last stream %s", self._peer(), reason, last)
        first_goaway = not self.closing
        if first_goaway:
            self._start_closing(reason)
        self._close_reason = reason
        refused = {stream_id: stream for stream_id, stream in self._streams.items() if stream_id > last}
        for stream_id in refused:
            del self._streams[stream_id]
            self._blocked.discard(stream_id)
        for stream_id in sorted(refused, reverse=True):
            refused[stream_id].handler.failed(UNPROCESSED, reason)
        if first_goaway:
            self.listener.connection_goaway(self, reason)
        self._close_if_drained()

    def _on_window_update(self, flags: int, stream_id: int, payload: bytearray) -> None:
        if len(payload) != 4:
            raise _size_error("WINDOW_UPDATE frame not of 4 bytes")
        increment = WORD.unpack(payload)[0] & 0x7FFFFFFF
        if not increment:
            raise _broken("WINDOW_UPDATE of 0")
        if not stream_id:
            self._send_window += increment
            if self._send_window > LARGEST_WINDOW:
                raise H2ProtocolError(_FLOW_CONTROL_ERROR, "the connection window beyond 2**31-1")
            if self._blocked:
                self._resume_blocked()
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            self._check_stream(stream_id)
            return
        stream.window += increment
        if stream.window > LARGEST_WINDOW:
            raise H2ProtocolError(_FLOW_CONTROL_ERROR, f"the window of stream {stream_id} beyond 2**31-1")
        if stream_id in self._blocked:
            self._send_body(stream_id, stream)

    def _ignore(self, flags: int, stream_id: int, payload: bytearray) -> None:
        pass

    #: frame type -> its handler; PRIORITY is ignored (RFC 9113 §5.3.2)
    _FRAMES: Tuple[Callable[[H2ClientProtocol, int, int, bytearray], None], ...] = (
        _on_data, _on_headers, _ignore, _on_reset, _on_settings, _on_push_promise, _on_ping, _on_goaway,
        _on_window_update, _on_continuation)

    # -- closing --------------------------------------------------------------

    def _start_closing(self, reason: str) -> None:
        self.closing = True
        self._closing_since = self.reactor.seconds()
        self._close_reason = reason

    def _connection_error(self, code: int, message: str) -> None:
        """The peer broke HTTP/2: GOAWAY with ``code``, open streams
        reported now, the connection closed once the GOAWAY is out."""
        reason = f"HTTP/2 protocol error: {message}"
        log.warning("closing HTTP/2 connection to %s: %s", self._peer(), reason)
        self._start_closing(reason)
        self._continued = None
        self._input.clear()
        self._output.append(goaway_frame(code, 0, message.encode("utf-8", "replace")[:200]))
        self._fail_streams(reason)
        self._lose_connection()

    def _retire(self, reason: str) -> None:
        """Open no more streams here; close once those open are answered."""
        if self.closing:
            return
        log.info("HTTP/2 connection to %s retired: %s", self._peer(), reason)
        self._start_closing(f"retired: {reason}")
        self.listener.connection_goaway(self, self._close_reason)
        self._close_if_drained()

    def _stream_closed(self) -> None:
        """After a stream ended: the manager may start another, or a
        connection draining after GOAWAY may now close."""
        if self.closing:
            self._close_if_drained()
        else:
            self.listener.streams_available(self)

    # -- helpers --------------------------------------------------------------

    def _send_body(self, stream_id: int, stream: _Stream) -> None:
        """Send as much of the body as the peer's windows allow."""
        body = stream.body
        output = self._output
        while True:
            unsent = len(body) - stream.sent
            if not unsent:
                break
            size = min(self._send_window, stream.window, self._max_frame, unsent)
            if size <= 0:
                self._blocked.add(stream_id)
                return
            start = stream.sent
            stream.sent = start + size
            stream.window -= size
            self._send_window -= size
            output += (frame_head(size << 8 | DATA, END_STREAM if size == unsent else 0, stream_id),
                       body[start:start + size])
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
            if now - self._closing_since >= self.ping_timeout:
                if self._streams:
                    self.abort(f"{self._close_reason}: {len(self._streams)} streams unanswered "
                               f"{self.ping_timeout:g} s later")
                elif self.transport is not None:  # closed cleanly, but the peer does not take our last bytes
                    self.transport.abortConnection()
                return
            if not self._streams:
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
        self._ping_payload = os.urandom(8)
        self._output.append(ping_frame(self._ping_payload))
        self._ping_sent = now
        self.flush()

    def _cancel_timers(self) -> None:
        for timer in (self._check_timer, self._write_call):
            if timer is not None and timer.active():
                timer.cancel()
        self._check_timer = self._write_call = None

    def _peer(self) -> str:
        try:
            peer = self.transport.getPeer()
            return f"{peer.host}:{peer.port}"
        except Exception:  # noqa: BLE001 - only for log lines
            return "?"
