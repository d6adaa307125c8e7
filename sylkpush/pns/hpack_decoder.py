"""HPACK (RFC 7541) decoding of the header blocks APNs and FCM send back.

Every response of a connection goes through one :class:`HeaderBlockDecoder`,
in order: the peer adds headers (an APNs ``apns-id``, FCM's ``date``) to its
dynamic table and refers to them in later blocks, so the table here follows
it block by block.  The request side (:mod:`sylkpush.pns.h2frames`) never
adds to the peer's table and needs no more than :data:`STATIC_TABLE`.

Huffman-coded strings (most of what servers send) are decoded a byte at a
time through a table of transitions between the code tree's inner nodes:
one dict look-up per byte instead of a walk per bit.  Each entry is worked
out the first time a byte is seen in a node (APNs' UUIDs and FCM's headers
use some 2 500 of them), so the table grows only with what peers send, to
256 x 256 entries at most, and costs nothing at start.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple, Union

#: RFC 7541 Appendix A, from index 1
STATIC_TABLE: Tuple[Tuple[str, str], ...] = (
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"), (":path", "/index.html"),
    (":scheme", "http"), (":scheme", "https"), (":status", "200"), (":status", "204"), (":status", "206"),
    (":status", "304"), (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""), ("accept", ""),
    ("access-control-allow-origin", ""), ("age", ""), ("allow", ""), ("authorization", ""),
    ("cache-control", ""), ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""),
    ("content-length", ""), ("content-location", ""), ("content-range", ""), ("content-type", ""),
    ("cookie", ""), ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
    ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
    ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""), ("max-forwards", ""),
    ("proxy-authenticate", ""), ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""),
    ("retry-after", ""), ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""),
    ("transfer-encoding", ""), ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""))

#: the dynamic table's size until the peer changes it, and the most we allow
#: (what a client that says no SETTINGS_HEADER_TABLE_SIZE allows)
DEFAULT_TABLE_SIZE = 4096
#: the largest header list taken, counted as the table counts entries
DEFAULT_MAX_HEADER_LIST = 65536
#: what an entry costs in the table beyond its name and value (RFC 7541 §4.1)
ENTRY_OVERHEAD = 32
#: continuation octets an integer may have after its prefix: 28 bits, more
#: than any length, index or table size a block of ours can hold
MAX_INTEGER_OCTETS = 4

#: the bit length of the Huffman code of each symbol, 0 to 255 then EOS, as
#: a letter ("a" is 5 bits, "z" 30).  RFC 7541 Appendix B's code is
#: canonical (the codes of one length are consecutive, in symbol order, after
#: those of shorter lengths), so the lengths are the whole code.
HUFFMAN_LENGTHS = bytes(ord(letter) - ord("a") + 5 for letter in (
    "isxxxxxxxtzxxzxxxxxxxxzxxxxxxxxxbffhibdgffdgdbbbaaabbbbbbbcdkbhf"
    "ibccccccccccccccccccccccdcdioijbkabababbbaccbbbabcbaabccccckgjix"
    "prpprrrsrssssststtrstssssqrsrsstrqprrssqsrrtqrssqqrqsrssprrrsrrs"
    "vvporsruvvvwwvtuoqvwwvwtqqvvxwwwptpqrqqsrruuttvsvwvvwwwwwxwwwwwv"
    "z"))
EOS = 256


class HeaderBlockError(ValueError):
    """A header block that cannot be decoded: a connection error
    (COMPRESSION_ERROR), as the table can no longer follow the peer's."""


def huffman_codes() -> List[int]:
    """The code of each symbol (0 to 256), rebuilt from :data:`HUFFMAN_LENGTHS`."""
    codes = [0] * len(HUFFMAN_LENGTHS)
    code = -1
    previous = 0
    for symbol in sorted(range(len(HUFFMAN_LENGTHS)), key=lambda symbol: (HUFFMAN_LENGTHS[symbol], symbol)):
        length = HUFFMAN_LENGTHS[symbol]
        code = (code + 1) << (length - previous)
        previous = length
        codes[symbol] = code
    return codes


class _Node(Dict[int, Tuple["_Node", bytes]]):
    """An inner node of the Huffman code tree, and the transitions from it:
    ``node[byte]`` is the node that the byte's 8 bits lead to and the
    symbols they complete on the way, worked out on first use."""

    __slots__ = ("branches", "final")

    def __init__(self) -> None:
        super().__init__()
        #: the node or symbol after a 0 bit, after a 1 bit
        self.branches: List[Union[_Node, int, None]] = [None, None]
        #: a string may end here: the bits since the last symbol are a
        #: prefix of EOS (all ones) shorter than 8 (RFC 7541 §5.2)
        self.final = False

    def __missing__(self, byte: int) -> Tuple[_Node, bytes]:
        node = self
        symbols = bytearray()
        for shift in range(7, -1, -1):
            branch = node.branches[(byte >> shift) & 1]
            if isinstance(branch, _Node):
                node = branch
            elif branch == EOS:
                node = _BROKEN
                break
            else:
                symbols.append(branch)  # type: ignore[arg-type]  # a symbol: every branch is set
                node = _ROOT
        transition = self[byte] = (node, bytes(symbols))
        return transition


class _Broken(_Node):
    """Where a string that holds EOS goes, and stays: never final."""

    __slots__ = ()

    def __missing__(self, byte: int) -> Tuple[_Node, bytes]:
        return self, b""


def _code_tree() -> _Node:
    root = _Node()
    for symbol, code in enumerate(huffman_codes()):
        node = root
        for shift in range(HUFFMAN_LENGTHS[symbol] - 1, 0, -1):
            bit = (code >> shift) & 1
            branch = node.branches[bit]
            if branch is None:
                branch = node.branches[bit] = _Node()
            node = branch  # type: ignore[assignment]  # codes are prefix-free: an inner node
        node.branches[code & 1] = symbol
    node = root
    for _ in range(8):  # root and the first 7 nodes of EOS's all-ones path
        node.final = True
        node = node.branches[1]  # type: ignore[assignment]
    return root


_BROKEN = _Broken()
_ROOT = _code_tree()


def huffman_decode(data: Any) -> bytearray:
    """The octets Huffman-coded in ``data`` (bytes-like); :class:`HeaderBlockError`
    if it holds EOS or ends in padding that is not a prefix of EOS shorter than 8 bits."""
    node = _ROOT
    decoded = bytearray()
    for byte in data:
        node, symbols = node[byte]
        decoded += symbols
    if not node.final:
        raise HeaderBlockError("a Huffman-coded string with EOS or bad padding")
    return decoded


def _integer(data: Any, position: int, value: int) -> Tuple[int, int]:
    """An integer whose prefix was full (``value``), from its continuation
    octets at ``position``: the integer and the position after it."""
    for shift in range(0, 7 * MAX_INTEGER_OCTETS, 7):
        octet = data[position]
        position += 1
        value += (octet & 0x7F) << shift
        if octet < 0x80:
            return value, position
    raise HeaderBlockError(f"an integer of more than {MAX_INTEGER_OCTETS} octets after its prefix")


def _string(data: Any, position: int) -> Tuple[str, int, int]:
    """A string literal at ``position``: the text, its length in octets, and
    the position after it."""
    first = data[position]
    position += 1
    length = first & 0x7F
    if length == 0x7F:
        length, position = _integer(data, position, length)
    end = position + length
    if end > len(data):
        raise HeaderBlockError("a string longer than the rest of the block")
    octets = huffman_decode(data[position:end]) if first & 0x80 else data[position:end]
    return octets.decode(), len(octets), end


#: the static table as the decoder keeps it: index 0 stands for no entry
_STATIC_ENTRIES: List[Tuple[str, str]] = [("", ""), *STATIC_TABLE]
#: (entry size, name length) in octets, for each static entry
_STATIC_SIZES = [(0, 0)] + [(len(name) + len(value) + ENTRY_OVERHEAD, len(name)) for name, value in STATIC_TABLE]
_FIRST_DYNAMIC = len(_STATIC_ENTRIES)


class HeaderBlockDecoder:
    """Decodes the header blocks of one connection's peer, in order.

    ``max_table_size`` is the dynamic table size we allow the peer (what we
    said in SETTINGS_HEADER_TABLE_SIZE); ``max_header_list`` bounds what one
    block may decode to.
    """

    def __init__(self, max_table_size: int = DEFAULT_TABLE_SIZE,
                 max_header_list: int = DEFAULT_MAX_HEADER_LIST) -> None:
        self.max_table_size = max_table_size
        self.max_header_list = max_header_list
        #: the table's size limit, as the peer last set it
        self.table_size = max_table_size
        #: the octets the dynamic entries use, as RFC 7541 counts them
        self.table_octets = 0
        # static then dynamic entries (newest first), so that an index is a
        # position; with their (size, name length)
        self._entries = list(_STATIC_ENTRIES)
        self._sizes = list(_STATIC_SIZES)

    @property
    def dynamic_table(self) -> List[Tuple[str, str]]:
        """The dynamic table's entries, newest first."""
        return self._entries[_FIRST_DYNAMIC:]

    def decode(self, block: Any) -> List[Tuple[str, str]]:
        """The ``(name, value)`` headers of a whole header block (bytes-like),
        in order; :class:`HeaderBlockError` if it is malformed or too large."""
        headers: List[Tuple[str, str]] = []
        entries = self._entries
        sizes = self._sizes
        listed = 0
        position = 0
        end = len(block)
        try:
            while position < end:
                first = block[position]
                position += 1
                if first & 0x80:  # indexed (§6.1)
                    index = first & 0x7F
                    if index == 0x7F:
                        index, position = _integer(block, position, index)
                    if not 0 < index < len(entries):
                        raise HeaderBlockError(f"index {index} not in the table")
                    headers.append(entries[index])
                    listed += sizes[index][0]
                    continue
                if first & 0x40:  # literal, added to the table (§6.2.1)
                    index = first & 0x3F
                    if index == 0x3F:
                        index, position = _integer(block, position, index)
                elif first & 0x20:  # dynamic table size update (§6.3)
                    position = self._resize(block, position, first, headers)
                    continue
                else:  # literal, without indexing or never indexed (§6.2.2, §6.2.3)
                    index = first & 0x0F
                    if index == 0x0F:
                        index, position = _integer(block, position, index)
                if index:
                    if index >= len(entries):
                        raise HeaderBlockError(f"name index {index} not in the table")
                    name = entries[index][0]
                    name_length = sizes[index][1]
                else:
                    name, name_length, position = _string(block, position)
                value, value_length, position = _string(block, position)
                header = (name, value)
                headers.append(header)
                size = name_length + value_length + ENTRY_OVERHEAD
                listed += size
                if first & 0x40:
                    self._add(header, size, name_length)
        except IndexError:  # an integer or string cut short
            raise HeaderBlockError("a header block cut short") from None
        except UnicodeDecodeError as exc:
            raise HeaderBlockError(f"a header that is not UTF-8 ({exc.reason})") from None
        if listed > self.max_header_list:
            raise HeaderBlockError(f"a header list larger than {self.max_header_list} octets")
        return headers

    def _resize(self, block: Any, position: int, first: int, headers: List[Tuple[str, str]]) -> int:
        if headers:
            raise HeaderBlockError("a dynamic table size update after a header")
        size = first & 0x1F
        if size == 0x1F:
            size, position = _integer(block, position, size)
        if size > self.max_table_size:
            raise HeaderBlockError(f"a dynamic table size of {size}, above the {self.max_table_size} allowed")
        self.table_size = size
        self._evict()
        return position

    def _add(self, header: Tuple[str, str], size: int, name_length: int) -> None:
        # added, then the oldest evicted until the table fits: an entry larger
        # than the whole table empties it and is not kept either (§4.4)
        self._entries.insert(_FIRST_DYNAMIC, header)
        self._sizes.insert(_FIRST_DYNAMIC, (size, name_length))
        self.table_octets += size
        self._evict()

    def _evict(self) -> None:
        entries = self._entries
        sizes = self._sizes
        while self.table_octets > self.table_size:
            self.table_octets -= sizes.pop()[0]
            entries.pop()
