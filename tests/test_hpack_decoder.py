"""The HPACK decoder of the HTTP/2 client (sylkpush.pns.hpack_decoder):
RFC 7541's examples, agreement with the hpack package's encoder over random
sequences of blocks, and every malformed block refused."""

import os

from hpack import Encoder, NeverIndexedHeaderTuple
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.table import HeaderTable
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from sylkpush.pns.hpack_decoder import (
    HUFFMAN_LENGTHS, STATIC_TABLE, HeaderBlockDecoder, HeaderBlockError, huffman_codes, huffman_decode)

EXAMPLES = settings(max_examples=int(os.environ.get("SYLKPUSH_FUZZ_EXAMPLES", "150")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def block(text):
    """The octets of an RFC hex dump ("8286 8441 ...")."""
    return bytes.fromhex(text)


REQUEST_1 = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")]
REQUEST_2 = REQUEST_1 + [("cache-control", "no-cache")]
REQUEST_3 = [(":method", "GET"), (":scheme", "https"), (":path", "/index.html"),
             (":authority", "www.example.com"), ("custom-key", "custom-value")]
DATE_21 = ("date", "Mon, 21 Oct 2013 20:13:21 GMT")
DATE_22 = ("date", "Mon, 21 Oct 2013 20:13:22 GMT")
LOCATION = ("location", "https://www.example.com")
COOKIE = ("set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1")
RESPONSE_1 = [(":status", "302"), ("cache-control", "private"), DATE_21, LOCATION]
RESPONSE_2 = [(":status", "307"), ("cache-control", "private"), DATE_21, LOCATION]
RESPONSE_3 = [(":status", "200"), ("cache-control", "private"), DATE_22, LOCATION,
              ("content-encoding", "gzip"), COOKIE]

#: RFC 7541 C.3 (C.4 with Huffman): requests on one connection, and the
#: dynamic table (newest first) and its size after each
REQUESTS = [
    (REQUEST_1, [(":authority", "www.example.com")], 57),
    (REQUEST_2, [("cache-control", "no-cache"), (":authority", "www.example.com")], 110),
    (REQUEST_3, [("custom-key", "custom-value"), ("cache-control", "no-cache"), (":authority", "www.example.com")],
     164),
]
REQUESTS_PLAIN = [
    "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
    "8286 84be 5808 6e6f 2d63 6163 6865",
    "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
]
REQUESTS_HUFFMAN = [
    "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
    "8286 84be 5886 a8eb 1064 9cbf",
    "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
]
#: RFC 7541 C.5 (C.6 with Huffman): responses with a 256-octet table, entries evicted
RESPONSES = [
    (RESPONSE_1, [LOCATION, DATE_21, ("cache-control", "private"), (":status", "302")], 222),
    (RESPONSE_2, [(":status", "307"), LOCATION, DATE_21, ("cache-control", "private")], 222),
    (RESPONSE_3, [COOKIE, ("content-encoding", "gzip"), DATE_22], 215),
]
RESPONSES_PLAIN = [
    "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32"
    "3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
    "4803 3330 37c1 c0bf",
    "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970"
    "7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61"
    "6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31",
]
RESPONSES_HUFFMAN = [
    "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad"
    "1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
    "4883 640e ffc1 c0bf",
    "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2"
    "e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
]


class RFCExamplesTests(TestCase):
    """RFC 7541 Appendix C, block by block, with the table after each."""

    def check_sequence(self, decoder, blocks, expected):
        for index, (text, (headers, table, size)) in enumerate(zip(blocks, expected), 1):
            self.assertEqual(decoder.decode(block(text)), headers, f"block {index}")
            self.assertEqual(decoder.dynamic_table, table, f"table after block {index}")
            self.assertEqual(decoder.table_octets, size, f"table size after block {index}")

    def test_single_representations(self):  # C.2.1 to C.2.4, each on a new table
        cases = [
            ("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
             ("custom-key", "custom-header"), [("custom-key", "custom-header")], 55),
            ("040c 2f73 616d 706c 652f 7061 7468", (":path", "/sample/path"), [], 0),
            ("1008 7061 7373 776f 7264 0673 6563 7265 74", ("password", "secret"), [], 0),
            ("82", (":method", "GET"), [], 0),
        ]
        for text, header, table, size in cases:
            self.check_sequence(HeaderBlockDecoder(), [text], [([header], table, size)])

    def test_integers(self):  # C.1: 10 and 1337 in 5-bit prefixes, as table size updates
        decoder = HeaderBlockDecoder(max_table_size=4096)
        self.assertEqual(decoder.decode(block("2a")), [])
        self.assertEqual(decoder.table_size, 10)
        self.assertEqual(decoder.decode(block("3f9a0a")), [])
        self.assertEqual(decoder.table_size, 1337)
        self.assertEqual(decoder.decode(block("3fe11f 82")), [(":method", "GET")])  # 4096, then a header
        self.assertEqual(decoder.table_size, 4096)

    def test_requests(self):  # C.3
        self.check_sequence(HeaderBlockDecoder(), REQUESTS_PLAIN, REQUESTS)

    def test_requests_with_huffman(self):  # C.4
        self.check_sequence(HeaderBlockDecoder(), REQUESTS_HUFFMAN, REQUESTS)

    def test_responses_evicting(self):  # C.5
        self.check_sequence(HeaderBlockDecoder(max_table_size=256), RESPONSES_PLAIN, RESPONSES)

    def test_responses_evicting_with_huffman(self):  # C.6
        self.check_sequence(HeaderBlockDecoder(max_table_size=256), RESPONSES_HUFFMAN, RESPONSES)

    def test_static_table_and_huffman_code_agree_with_the_hpack_package(self):
        self.assertEqual([(name.encode(), value.encode()) for name, value in STATIC_TABLE],
                         list(HeaderTable.STATIC_TABLE))
        self.assertEqual(list(HUFFMAN_LENGTHS), list(REQUEST_CODES_LENGTH))
        self.assertEqual(huffman_codes(), list(REQUEST_CODES))


#: header names and values as servers may send them: any text, and a few
#: drawn often enough to be indexed
_texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
_headers = st.tuples(st.one_of(st.sampled_from(["apns-id", "date", "vary", ":status", "x-a"]), _texts),
                     st.one_of(st.sampled_from(["", "200", "Origin", "x" * 300]), _texts),
                     st.booleans())
_blocks = st.lists(st.tuples(st.lists(_headers, max_size=8),
                             st.lists(st.integers(0, 4096), max_size=2),
                             st.booleans()),
                   min_size=1, max_size=12)


class AgreementTests(TestCase):
    """What the hpack package encodes, this decoder reads back, block after
    block, its table in step with the encoder's."""

    @EXAMPLES
    @given(_blocks)
    def test_sequences_of_blocks_from_the_hpack_encoder(self, blocks):
        encoder, decoder = Encoder(), HeaderBlockDecoder()
        for headers, table_sizes, huffman in blocks:
            for size in table_sizes:
                # (hpack's encoder forgets a pending change when told the same size again)
                if size != encoder.header_table_size:
                    encoder.header_table_size = size
            encoded = encoder.encode([NeverIndexedHeaderTuple(name, value) if never else (name, value)
                                      for name, value, never in headers], huffman=huffman)
            self.assertEqual(decoder.decode(encoded), [(name, value) for name, value, _ in headers])
            table = [(name.decode(), value.decode()) for name, value in encoder.header_table.dynamic_entries]
            self.assertEqual(decoder.dynamic_table, table)
            self.assertEqual(decoder.table_octets,
                             sum(len(name) + len(value) + 32 for name, value in encoder.header_table.dynamic_entries))
            self.assertEqual(decoder.table_size, encoder.header_table_size)

    @EXAMPLES
    @given(st.binary(max_size=100))
    def test_any_octets_huffman_coded(self, data):
        coded = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(data)
        self.assertEqual(huffman_decode(coded), data)

    def test_every_symbol(self):
        data = bytes(range(256))
        coded = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(data)
        self.assertEqual(huffman_decode(coded), data)


class MalformedBlockTests(TestCase):
    """Each malformed block raises HeaderBlockError, saying why."""

    def assertRefused(self, data, reason, decoder=None):
        with self.assertRaises(HeaderBlockError) as raised:
            (decoder or HeaderBlockDecoder()).decode(data)
        self.assertRegex(str(raised.exception), reason)

    def test_index_0(self):
        self.assertRefused(b"\x80", "index 0 not in the table")

    def test_index_beyond_the_table(self):
        self.assertRefused(b"\xbe", "index 62 not in the table")  # the dynamic table is empty
        decoder = HeaderBlockDecoder()
        decoder.decode(b"\x41\x01a")  # :authority: a, at 62
        self.assertEqual(decoder.decode(b"\xbe"), [(":authority", "a")])
        self.assertRefused(b"\xbf", "index 63 not in the table", decoder)
        self.assertRefused(b"\x7f\x00\x01a", "name index 63 not in the table", decoder)
        self.assertRefused(b"\x1f\x30\x01a", "name index 63 not in the table", decoder)

    def test_truncated_integer(self):
        self.assertRefused(b"\xff", "cut short")
        self.assertRefused(b"\xff\x80", "cut short")
        self.assertRefused(b"\x40\x7f", "cut short")  # a name length

    def test_truncated_string(self):
        self.assertRefused(b"\x40\x0acustom", "string longer than the rest")  # the name
        self.assertRefused(b"\x04\x0c/sample", "string longer than the rest")  # the value
        self.assertRefused(b"\x04", "cut short")  # no value at all

    def test_integer_overflow(self):
        self.assertRefused(b"\xff\x80\x80\x80\x80\x01", "integer of more than 4 octets")
        # 4 continuation octets are still an integer (an index too large)
        self.assertRefused(b"\xff\x80\x80\x80\x01", "index 2097279 not in the table")

    def test_huffman_with_eos(self):
        # a name of EOS (30 ones) and 2 bits of padding
        self.assertRefused(b"\x00\x84\xff\xff\xff\xff\x00", "EOS or bad padding")
        # "a" (00011), EOS, then padding
        self.assertRefused(b"\x00\x85\x1f\xff\xff\xff\xff\x00", "EOS or bad padding")

    def test_huffman_padding(self):
        self.assertEqual(huffman_decode(b"\x1f"), b"a")  # 00011 and 3 ones
        self.assertEqual(huffman_decode(b"\x18\x3f"), b"a0")  # 00011, 00000 ("0"), 6 ones
        for coded in (b"\x18", b"\x1e", b"\x1f\xff", b"\xff"):  # zeros; not all ones; 8 and 11 ones; 8 ones
            with self.assertRaises(HeaderBlockError):
                huffman_decode(coded)
        self.assertRefused(b"\x00\x81\x1e\x00", "EOS or bad padding")

    def test_table_size_update_above_the_limit(self):
        self.assertRefused(b"\x3f\xe2\x1f", "table size of 4097, above the 4096 allowed")
        self.assertRefused(b"\x3f\xe1\x01", "table size of 256, above the 255 allowed",
                           HeaderBlockDecoder(max_table_size=255))
        self.assertEqual(HeaderBlockDecoder(max_table_size=256).decode(b"\x3f\xe1\x01\x82"), [(":method", "GET")])

    def test_table_size_update_after_a_header(self):
        self.assertRefused(b"\x82\x20", "size update after a header")
        self.assertEqual(HeaderBlockDecoder().decode(b"\x20\x3f\xe1\x1f\x82"), [(":method", "GET")])  # two first

    def test_not_utf8(self):
        self.assertRefused(b"\x00\x01\xff\x00", "not UTF-8")
        self.assertRefused(b"\x04\x01\xc3", "not UTF-8")

    def test_header_list_too_large(self):
        decoder = HeaderBlockDecoder(max_header_list=100)
        self.assertEqual(decoder.decode(b"\x40\x01a\x40" + b"x" * 64), [("a", "x" * 64)])  # 97 octets
        self.assertRefused(b"\xbe\x82", "header list larger than 100", decoder)  # 97 + 42
        self.assertRefused(b"\xbe\xbe\xbe\xbe", "header list larger than 100", decoder)


class TableTests(TestCase):
    """The dynamic table: entries in, oldest out, never above its size."""

    def test_an_entry_larger_than_the_table_empties_it(self):
        decoder = HeaderBlockDecoder(max_table_size=100)
        decoder.decode(b"\x40\x01a\x01b")  # 34 octets
        self.assertEqual((decoder.dynamic_table, decoder.table_octets), ([("a", "b")], 34))
        self.assertEqual(decoder.decode(b"\x40\x01c\x40" + b"x" * 64), [("c", "x" * 64)])  # 97: a, b evicted
        self.assertEqual((decoder.dynamic_table, decoder.table_octets), ([("c", "x" * 64)], 97))
        self.assertEqual(decoder.decode(b"\x7e\x44" + b"y" * 68), [("c", "y" * 68)])  # 101, named by the entry
        self.assertEqual((decoder.dynamic_table, decoder.table_octets), ([], 0))

    def test_a_smaller_table_evicts_the_oldest(self):
        decoder = HeaderBlockDecoder()
        decoder.decode(b"\x40\x01a\x01b\x40\x01c\x01d")
        self.assertEqual(decoder.dynamic_table, [("c", "d"), ("a", "b")])
        self.assertEqual(decoder.decode(b"\x3f\x03\xbe"), [("c", "d")])  # 34 octets: only the newest stays
        self.assertEqual((decoder.dynamic_table, decoder.table_octets, decoder.table_size), ([("c", "d")], 34, 34))
        self.assertEqual(decoder.decode(b"\x20"), [])
        self.assertEqual((decoder.dynamic_table, decoder.table_octets), ([], 0))
        with self.assertRaises(HeaderBlockError):
            decoder.decode(b"\xbe")

    def test_without_indexing_and_never_indexed_add_nothing(self):
        decoder = HeaderBlockDecoder()
        self.assertEqual(decoder.decode(b"\x00\x01a\x01b\x10\x01c\x01d\x0f\x2e\x01e\x1f\x2e\x01f"),
                         [("a", "b"), ("c", "d"), ("www-authenticate", "e"), ("www-authenticate", "f")])
        self.assertEqual((decoder.dynamic_table, decoder.table_octets), ([], 0))

    def test_names_and_values_in_utf8_count_their_octets(self):
        decoder = HeaderBlockDecoder()
        self.assertEqual(decoder.decode(b"\x40\x02\xc3\xa9\x03\xe2\x82\xac"), [("é", "€")])
        self.assertEqual(decoder.table_octets, 2 + 3 + 32)
