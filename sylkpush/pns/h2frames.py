"""HTTP/2 on the wire for the push client (RFC 9113): frame layouts and the
frames it writes, and the HPACK encoder of its requests.

The client needs few frame kinds and no server or push features, so it
writes and reads them itself (see :mod:`sylkpush.pns.http2`) instead of
running a general HTTP/2 state machine and frame objects per frame.
"""

from __future__ import annotations

import struct
from typing import Any, Dict, List, Optional, Tuple

from h2.errors import ErrorCodes

from sylkpush.pns.hpack_decoder import DEFAULT_TABLE_SIZE, STATIC_TABLE

#: what a client says first (RFC 9113 §3.4), before its SETTINGS
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types (RFC 9113 §6)
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# frame flags
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# settings (RFC 9113 §6.5.2)
HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6

#: the flow-control window of a stream or connection until told otherwise
DEFAULT_WINDOW = 65535
#: the largest frame payload until told otherwise (and the largest we take)
DEFAULT_MAX_FRAME = 16384
LARGEST_MAX_FRAME = 2 ** 24 - 1
LARGEST_WINDOW = 2 ** 31 - 1

#: frame header: length (24 bits) and type as one word, flags, stream id
#: (its reserved top bit masked by the reader)
FRAME_HEAD = struct.Struct(">LBL")
#: ``frame_head(length << 8 | type, flags, stream_id)``: a frame's 9 first bytes
frame_head = FRAME_HEAD.pack
SETTING = struct.Struct(">HL")
TWO_WORDS = struct.Struct(">LL")
WORD = struct.Struct(">L")


class H2ProtocolError(Exception):
    """The peer broke HTTP/2: the connection ends with GOAWAY ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def error_name(code: int) -> str:
    """An error code's name (RFC 9113 §7), or its number when unknown."""
    try:
        return ErrorCodes(code).name
    except ValueError:
        return str(code)


def settings_frame(settings: Dict[int, int]) -> bytes:
    payload = b"".join(SETTING.pack(key, value) for key, value in settings.items())
    return frame_head(len(payload) << 8 | SETTINGS, 0, 0) + payload


SETTINGS_ACK = frame_head(SETTINGS, ACK, 0)


def ping_frame(payload: bytes, ack: bool = False) -> bytes:
    return frame_head(8 << 8 | PING, ACK if ack else 0, 0) + payload


def goaway_frame(code: int, last_stream_id: int = 0, debug: bytes = b"") -> bytes:
    return frame_head((8 + len(debug)) << 8 | GOAWAY, 0, 0) + TWO_WORDS.pack(last_stream_id, code) + debug


def rst_stream_frame(stream_id: int, code: int) -> bytes:
    return frame_head(4 << 8 | RST_STREAM, 0, stream_id) + WORD.pack(code)


def window_update_frame(stream_id: int, increment: int) -> bytes:
    return frame_head(4 << 8 | WINDOW_UPDATE, 0, stream_id) + WORD.pack(increment)


def header_frames(stream_id: int, block: bytes, end_stream: bool, max_frame: int) -> List[bytes]:
    """A header block as HEADERS and, when it exceeds ``max_frame``, CONTINUATION frames."""
    flags = END_STREAM if end_stream else 0
    if len(block) <= max_frame:
        return [frame_head(len(block) << 8 | HEADERS, flags | END_HEADERS, stream_id), block]
    frames = [frame_head(max_frame << 8 | HEADERS, flags, stream_id), block[:max_frame]]
    for start in range(max_frame, len(block), max_frame):
        piece = block[start:start + max_frame]
        last = start + max_frame >= len(block)
        frames += (frame_head(len(piece) << 8 | CONTINUATION, END_HEADERS if last else 0, stream_id), piece)
    return frames


# -- HPACK (RFC 7541) for the requests --------------------------------------------

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
_STATIC = {(name.encode(), value.encode()): index
           for index, (name, value) in reversed(list(enumerate(STATIC_TABLE, 1)))}
_STATIC_NAMES = {name: index for (name, _), index in reversed(list(_STATIC.items()))}


class LiteralEncoder:
    """An HPACK encoder that never uses the dynamic table.

    Each header is the static table entry that matches it whole, or a literal
    that is never added to the table (RFC 7541 §6.2.2; ``authorization`` as
    never indexed, §6.2.3), without Huffman coding.  A header's encoding then
    depends on nothing else: it is computed once and kept, and a request's
    header block is made of kept pieces.  The blocks grow by some bytes; no
    table search and no Huffman coding.  Changes of the table size the peer
    allows (``header_table_size``) are still signalled (§4.2): the smallest
    since the last block, if below the last, then the last.
    """

    #: header encodings kept at most (the per-push ones, like :path, come and go)
    KEPT = 4096
    SENSITIVE = frozenset((b"authorization",))

    def __init__(self) -> None:
        self._kept: Dict[Tuple[Any, Any], bytes] = {}
        self._table_size = DEFAULT_TABLE_SIZE
        #: the smallest table size since the last block, when it changed
        self._smallest: Optional[int] = None

    @property
    def header_table_size(self) -> int:
        """The dynamic table size the peer allows (its SETTINGS_HEADER_TABLE_SIZE)."""
        return self._table_size

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        if value != self._table_size or self._smallest is not None:
            self._smallest = value if self._smallest is None else min(self._smallest, value)
            self._table_size = value

    def encode(self, headers: Any) -> bytes:
        """The header block of ``headers``, (name, value) pairs of bytes or str."""
        kept = self._kept
        block = []
        smallest = self._smallest
        if smallest is not None:
            self._smallest = None
            if smallest < self._table_size:
                block.append(_hpack_integer(smallest, 5, 0x20))
            block.append(_hpack_integer(self._table_size, 5, 0x20))
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
