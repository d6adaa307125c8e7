"""The logging pipeline: a bounded buffer in the reactor thread, a writer thread."""

from __future__ import annotations

import io
import logging

from twisted.trial import unittest

from sylkpush.logs import (FORMAT, BatchedStreamHandler, BufferingHandler, LogWriter, RedactingFilter,
                           SecondCachingFormatter, log_format)


def record(message, *args, exc_info=None):
    return logging.LogRecord("sylkpush.test", logging.INFO, __file__, 1, message, args, exc_info)


class LogPipelineTests(unittest.TestCase):

    def writer(self, limit=100):
        buffer = BufferingHandler(limit)
        buffer.addFilter(RedactingFilter())
        stream = io.StringIO()
        output = logging.StreamHandler(stream)
        output.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        return buffer, LogWriter(buffer, [output], interval=0.01), stream

    def test_records_are_written_in_order_by_the_writer_thread(self):
        buffer, writer, stream = self.writer()
        writer.start()
        for n in range(50):
            buffer.handle(record("line %d for %s", n, "rid"))
        writer.stop()
        self.assertEqual(stream.getvalue().splitlines(), [f"INFO line {n} for rid" for n in range(50)])

    def test_a_full_buffer_drops_and_says_so(self):
        buffer, writer, stream = self.writer(limit=3)
        for n in range(5):
            buffer.handle(record("line %d", n))
        self.assertEqual((len(buffer.records), buffer.dropped), (3, 2))
        writer.start()
        writer.stop()
        self.assertEqual(stream.getvalue().splitlines(), [
            "INFO line 0", "INFO line 1", "INFO line 2",
            "WARNING 2 log records dropped: the log destination is too slow"])

    def test_tracebacks_are_rendered_and_redacted_before_buffering(self):
        buffer, writer, stream = self.writer()
        try:
            raise ValueError("refused: Authorization: bearer eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJUIn0.c2ln")
        except ValueError:
            import sys
            buffer.handle(record("token refresh failed", exc_info=sys.exc_info()))
        [buffered] = buffer.records
        self.assertIsNone(buffered.exc_info)
        writer.start()
        writer.stop()
        text = stream.getvalue()
        self.assertIn("Traceback", text)
        self.assertIn("ValueError", text)
        self.assertNotIn("eyJhbGciOiJFUzI1NiJ9", text)

    def test_the_console_gets_a_batch_in_a_few_writes(self):
        """stderr is line-buffered: a write per line was a system call per record."""
        writes = []

        class Stream(io.StringIO):
            def write(self, text):
                writes.append(text)
                return super().write(text)
        buffer = BufferingHandler(100)
        buffer.addFilter(RedactingFilter())
        stream = Stream()
        console = BatchedStreamHandler(stream)
        console.setFormatter(SecondCachingFormatter("%(levelname)s %(message)s"))
        writer = LogWriter(buffer, [console], interval=0.01)
        for n in range(70):
            buffer.handle(record("line %d", n))
        writer.start()
        writer.stop()
        self.assertEqual(stream.getvalue().splitlines(), [f"INFO line {n}" for n in range(70)])
        self.assertEqual([text.count("\n") for text in writes], [8] * 8 + [6])

    def test_the_daemons_formatter_writes_what_logging_formatter_writes(self):
        try:
            raise ValueError("broken")
        except ValueError:
            import sys
            failed = sys.exc_info()
        cleaner = RedactingFilter()
        for line_format in (FORMAT, log_format(worker=2)):
            ours, standard = SecondCachingFormatter(line_format), logging.Formatter(line_format)
            for item in (record("result %s %s", "call-1", 200), record("plain"),
                         record("failed: %s", "x", exc_info=failed), record("not cleaned %s", "x")):
                if item.msg != "not cleaned %s":
                    cleaner.filter(item)
                self.assertEqual(ours.format(item), standard.format(item))


class SafeRecordsTests(unittest.TestCase):
    """Whatever reaches the log is written as one line of bounded length,
    without credentials, and costs time linear in its length."""

    def written(self, *records, level=logging.DEBUG):
        buffer = BufferingHandler(100)
        buffer.addFilter(RedactingFilter())
        stream = io.StringIO()
        output = logging.StreamHandler(stream)
        output.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        writer = LogWriter(buffer, [output], interval=0.01)
        writer.start()
        for item in records:
            buffer.handle(item)
        writer.stop()
        return stream.getvalue()

    def test_redaction_takes_linear_time(self):
        # 1 MB of what made the old patterns quadratic: minutes then, well under a second now;
        # run in a child process, so a regression fails at the timeout instead of hanging the suite
        import os
        import subprocess
        import sys
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        attacks = ["eyJ", "-----BEGIN PRIVATE KEY-----", "authorization" + " " * 20, "bearer" + " " * 30 + "!",
                   "'access_token': '", "eyJaaaaaaaa."]
        script = ("import sys; from sylkpush.logs import redact\n"
                  f"for unit in {attacks!r}:\n"
                  "    redact(unit * (1000000 // len(unit)))\n"
                  "print('done')\n")
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                                env=dict(os.environ, PYTHONPATH=root))
        self.assertEqual(result.stdout, "done\n", result.stderr)

    def test_private_keys_and_tokens_are_still_redacted(self):
        from sylkpush.logs import redact
        pem = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\nAwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----"
        jwt_ = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJUIn0.c2lnbmF0dXJl"
        text = redact(f"a {pem} b {pem[:60]}")
        self.assertEqual(text, "a <redacted private key> b <redacted private key>")
        self.assertEqual(redact(f"x={jwt_}; ({jwt_})"), "x=<redacted jwt>; (<redacted jwt>)")
        self.assertEqual(redact("token ya29.a0AfH6SMB-x_y"), "token <redacted access token>")
        self.assertEqual(redact('{"access_token": "abc", "Authorization": "key=AAAA"}'),
                         '{"access_token": "<redacted>", "Authorization": "<redacted>"}')

    def test_long_values_are_capped(self):
        from sylkpush.logs import VALUE_LIMIT
        value = "x" * 100_000
        text = self.written(record("app %s is not configured (%r)", value, {"k": value}))
        line, = text.splitlines()
        self.assertLess(len(line), 2 * VALUE_LIMIT + 100)
        self.assertIn("x…(100000 bytes) is not configured", line[:VALUE_LIMIT + 100])
        self.assertTrue(line.endswith("…(100009 bytes))"), line[-100:])

    def test_control_characters_and_surrogates_are_escaped(self):
        forged = "call-1\r\n2024-01-01 00:00:00,000 ERROR sylkpush.web: injected"
        text = self.written(record("%s: result 200", forged), record("from %s", "\x1b[31mred\x1b[0m \ud800 \u202e"))
        self.assertEqual(text.splitlines(), [
            "INFO sylkpush.test: call-1\\r\\n2024-01-01 00:00:00,000 ERROR sylkpush.web: injected: result 200",
            "INFO sylkpush.test: from \\x1b[31mred\\x1b[0m \\ud800 \\u202e"])

    def test_a_traceback_keeps_its_lines_but_not_its_escapes(self):
        try:
            raise ValueError("bad \x1b[2J value")
        except ValueError:
            import sys
            text = self.written(record("failed", exc_info=sys.exc_info()))
        self.assertIn("\nTraceback (most recent call last):\n", text)
        self.assertIn("ValueError: bad \\x1b[2J value", text)

    def test_arguments_that_do_not_fit_the_format_are_still_written(self):
        text = self.written(record("%d pushes", "many"))
        self.assertEqual(text, "INFO sylkpush.test: %d pushes (with arguments that do not fit it)\n")

    def test_encoded_header_blocks_are_never_written(self):
        import hpack
        block = hpack.Encoder().encode([(":method", "POST"), ("authorization", "bearer eyJsecret.eyJsecret.sig")])
        records = [logging.LogRecord("hpack.hpack", logging.DEBUG, __file__, 1, "Encoded header block to %s",
                                     (block,), None),
                   logging.LogRecord("hpack.hpack", logging.DEBUG, __file__, 1, "Decoding %s", (block,), None),
                   logging.LogRecord("hpack.hpack", logging.DEBUG, __file__, 1, "Adding %s to the header table",
                                     ((b"authorization", b"bearer eyJsecret.eyJsecret.sig"),), None)]
        text = self.written(*records)
        self.assertEqual(text, "DEBUG hpack.hpack: Adding (b'authorization', b'<redacted>') to the header table\n")
