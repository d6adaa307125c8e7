"""The logging pipeline: a bounded buffer in the reactor thread, a writer thread."""

from __future__ import annotations

import io
import logging

from twisted.trial import unittest

from sylkpush.logs import BufferingHandler, LogWriter, RedactingFilter


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
