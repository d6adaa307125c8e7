"""Logging set-up: console, systemd journal, optional file.

Handlers that write to files or sockets run in a writer thread behind a
bounded buffer, so a slow disk or journal never blocks the reactor; when the
buffer is full, records are dropped and counted rather than waited for.
The reactor thread only appends records; the writer collects them in
batches (every 50 ms), so the two threads do not hand the GIL back and
forth for every line.
A filter makes every record safe to write, as a last line of defence: long
values capped, credentials redacted, control characters escaped (a caller
cannot forge a log line), hpack's encoded header blocks dropped.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import sys
import threading
import time
from collections import deque
from typing import Any, Deque, List, Mapping, Optional

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_SOCKET = "/run/systemd/journal/socket"
#: records waiting for the writer thread at most; more are dropped and counted
BUFFER_LIMIT = 10_000
#: how often the writer thread writes what was logged meanwhile, seconds
WRITE_INTERVAL = 0.05

#: the longest argument of a log call written in full, characters; a longer one is
#: cut and marked ``…(N bytes)``.  Above any payload APNs or FCM accept, so debug
#: lines of real pushes are whole; a longer value is an attack or a bug.
VALUE_LIMIT = 8192
#: the longest message (arguments merged in) or traceback written in full
MESSAGE_LIMIT = 65536

# Every pattern below runs in time linear in the text it scans: quantifiers
# are bounded or possessive, and a pattern that could start at every
# character of a long run (a JWT) may only start where a token starts.
_SECRET_PATTERNS = [
    # (what the lower-cased text holds when the pattern can match, pattern, replacement)
    # the value of any authorization header, in "name: value", "name=value",
    # dict reprs and HTTP/2 header tuples ("(b'authorization', b'bearer ...')")
    (("authorization",),
     re.compile(r"(?i)(\bauthorization['\"]?\s{0,8}[:=,]\s{0,8}(?:b?['\"])?)[^'\"\r\n]++"), r"\1<redacted>"),
    # bearer tokens and legacy "key=" keys wherever they are
    (("bearer",), re.compile(r"(?i)(\bbearer\s{1,8})[A-Za-z0-9._~+/=-]++"), r"\1<redacted>"),
    (("_token", "assertion", "private_key", "client_secret"),
     re.compile(r"(?i)(['\"]?(?:access_token|refresh_token|id_token|assertion|private_key|client_secret)['\"]?"
                r"\s{0,8}[:=]\s{0,8}['\"]?)(?!<redacted)[^'\"\s,}&]++"), r"\1<redacted>"),
    # Google OAuth access tokens and JWTs (provider tokens, service-account assertions)
    (("ya29.",), re.compile(r"\bya29\.[A-Za-z0-9._-]++"), "<redacted access token>"),
    (("eyj",), re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}+\.[A-Za-z0-9_-]{8,}+\.[A-Za-z0-9_-]++"),
     "<redacted jwt>"),
]
_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z ]{0,40}PRIVATE KEY-----")
_PEM_END = re.compile(r"-----END [A-Z ]{0,40}PRIVATE KEY-----")
#: what follows BEGIN in a PEM block cut short: base64, blank space, escaped newlines
_PEM_BODY = re.compile(r"(?:[A-Za-z0-9+/=\s]|\\n)*+")
_PRIVATE_KEY = "<redacted private key>"

#: what the lower-cased text of every text holding a secret contains; most log
#: lines contain none, and then the substitutions are skipped (looking for
#: each with ``in`` is twice as fast as one regular expression of them all)
_SECRET_HINTS = ("bearer", "key=", "authorization", "_token", "assertion", "private_key", "private key", "secret",
                 "ya29", "eyj")

#: what must not reach a log line raw: control characters (a CR/LF would start a
#: forged line, ESC drives terminals), lone surrogates (the file handler cannot
#: encode them and would drop the line), line separators and bidi overrides
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
#: the same, newlines excepted: for tracebacks, which are multi-line by nature
_UNSAFE_IN_TRACEBACK = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(match: "re.Match[str]") -> str:
    char = match.group()
    return _ESCAPES.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def escape(text: str, pattern: "re.Pattern[str]" = _UNSAFE) -> str:
    """``text`` with control characters, lone surrogates and the like written as escapes."""
    if pattern is _UNSAFE and text.isascii() and text.isprintable():  # the usual line, quicker than a search
        return text
    if pattern.search(text) is None:
        return text
    return pattern.sub(_escape_one, text)


def cap(text: str, limit: int = VALUE_LIMIT) -> str:
    """``text``, or its first ``limit`` characters marked ``…(N bytes)`` with its full size."""
    if len(text) <= limit:
        return text
    size = len(text.encode("utf-8", "surrogatepass"))
    return f"{text[:limit]}…({size} bytes)"


class _Capped:
    """An argument of any other type, whose text is capped when it is formatted."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:
        return cap(str(self.value))

    def __repr__(self) -> str:
        return cap(repr(self.value))


def _capped(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= VALUE_LIMIT else cap(value)
    if isinstance(value, (int, float)) or value is None:  # bool is an int
        return value
    if isinstance(value, (bytes, bytearray)) and len(value) <= VALUE_LIMIT:
        return value
    return _Capped(value)


def _all_short(args: tuple) -> bool:
    """True when :func:`_capped` would leave every one of ``args`` as it is
    (the usual short texts and numbers; found without calling it for each)."""
    for value in args:
        kind = type(value)
        if kind is str:
            if len(value) > VALUE_LIMIT:
                return False
        elif kind is not int and kind is not float and value is not None:
            return False
    return True


def _redact_private_keys(text: str) -> str:
    """``text`` with PEM private keys removed, whole or cut short, in one pass."""
    pieces = []
    position = 0
    end_missing = False  # once no END follows a BEGIN, none follows a later one
    while True:
        begin = _PEM_BEGIN.search(text, position)
        if begin is None:
            break
        pieces.append(text[position:begin.start()])
        end = None if end_missing else _PEM_END.search(text, begin.end())
        if end is None:
            end_missing = True
            body = _PEM_BODY.match(text, begin.end())
            position = body.end() if body is not None else begin.end()
        else:
            position = end.end()
        pieces.append(_PRIVATE_KEY)
    if not pieces:
        return text
    pieces.append(text[position:])
    return "".join(pieces)


def redact(text: str) -> str:
    """``text`` with JWTs, access tokens, legacy keys and private keys removed."""
    lowered = text.lower()
    for hint in _SECRET_HINTS:
        if hint in lowered:
            break
    else:
        return text
    # private keys first: the key-name rules would otherwise cut a PEM block in two
    if "private key" in lowered:
        text = _redact_private_keys(text)
    for keywords, pattern, replacement in _SECRET_PATTERNS:
        if any(keyword in lowered for keyword in keywords):
            text = pattern.sub(replacement, text)
    return text


#: hpack's traces of whole encoded header blocks: an encoded block carries the
#: authorization header (the APNs provider token) in a form no pattern can see
_ENCODED_BLOCK_TRACES = frozenset(("Encoded header block to %s", "Decoding %s"))


class RedactingFilter(logging.Filter):
    """Makes each record safe to write: arguments capped, credentials
    redacted, control characters escaped; drops hpack's encoded header blocks.

    The message is merged with its arguments here, once, so the queue handler
    and the listener's formatters do not format it again.
    """

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("hpack") and record.msg in _ENCODED_BLOCK_TRACES:
            return False
        args = record.args
        if args:
            if isinstance(args, tuple):
                if not _all_short(args):
                    record.args = tuple(map(_capped, args))
            elif isinstance(args, Mapping):
                record.args = {key: _capped(value) for key, value in args.items()}
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the format: still write what was said
            message = f"{cap(str(record.msg))} (with arguments that do not fit it)"
        record.msg, record.args = escape(redact(cap(message, MESSAGE_LIMIT))), None
        # tracebacks are formatted later by the handlers: format and clean them now
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = escape(redact(cap(record.exc_text, MESSAGE_LIMIT)), _UNSAFE_IN_TRACEBACK)
        if record.stack_info:
            record.stack_info = escape(redact(cap(record.stack_info, MESSAGE_LIMIT)), _UNSAFE_IN_TRACEBACK)
        return True


class BufferingHandler(logging.Handler):
    """The reactor thread's only logging work: append the record to a bounded
    buffer.  A deque append needs no lock and wakes no thread, so logging costs
    the reactor little and never blocks it; the writer thread collects the
    buffer in batches.  When the buffer is full, records are dropped and counted.
    """

    def __init__(self, limit: int = BUFFER_LIMIT) -> None:
        super().__init__()
        self.records: Deque[logging.LogRecord] = deque()
        self.limit = limit
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) >= self.limit:
            self.dropped += 1
            return
        # the redacting filter merged the message and rendered the traceback
        # already: the writer thread must not render the live exception again
        record.exc_info = None
        self.records.append(record)


class LogWriter:
    """The thread that formats and writes the buffered records, every
    ``interval`` seconds, and what is left when :meth:`stop` is called."""

    def __init__(self, buffer: BufferingHandler, handlers: List[logging.Handler],
                 interval: float = WRITE_INTERVAL) -> None:
        self.buffer = buffer
        self.handlers = handlers
        self.interval = interval
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="sylkpush-log-writer", daemon=True)
        self._reported_drops = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write what is buffered, then end the thread."""
        self._stopping = True
        self._wake.set()
        self._thread.join()
        for handler in self.handlers:
            handler.close()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            self._write_batch()
            if self._stopping:
                self._write_batch()
                return

    def _write_batch(self) -> None:
        records = self.buffer.records
        wrote = False
        while records:
            record = records.popleft()
            for handler in self.handlers:
                handler.handle(record)
            wrote = True
        dropped = self.buffer.dropped
        if dropped != self._reported_drops:
            note = logging.LogRecord("sylkpush.logs", logging.WARNING, __file__, 0,
                                     "%d log records dropped: the log destination is too slow",
                                     (dropped - self._reported_drops,), None)
            self._reported_drops = dropped
            for handler in self.handlers:
                handler.handle(note)
            wrote = True
        if wrote:
            for handler in self.handlers:
                handler.flush()


class SecondCachingFormatter(logging.Formatter):
    """FORMAT's formatter, rendering the timestamp's date and time once a second."""

    _second = -1
    _text = ""

    def format(self, record: logging.LogRecord) -> str:
        if record.args or record.exc_info or record.exc_text or record.stack_info or type(record.msg) is not str:
            return super().format(record)
        # the usual record, merged and cleaned by RedactingFilter: one line, without
        # logging.Formatter's steps for what it does not have
        record.message = record.msg
        record.asctime = self.formatTime(record)
        return self._fmt % record.__dict__  # type: ignore[operator]  # _fmt is set (FORMAT or log_format())

    def formatTime(self, record: logging.LogRecord, datefmt: Optional[str] = None) -> str:  # noqa: N802
        second = int(record.created)
        if second != self._second or datefmt:
            # the listener thread alone formats: no lock needed
            self._text = time.strftime(datefmt or self.default_time_format, self.converter(record.created))
            self._second = second
        return "%s,%03d" % (self._text, record.msecs)


class BatchedStreamHandler(logging.StreamHandler):
    """A StreamHandler that writes a batch's lines ``chunk_lines`` at a time
    and leaves the rest to :meth:`flush` (:class:`LogWriter` flushes after
    every batch).

    ``sys.stderr`` is line-buffered, even into a file: written one line at a
    time, every record cost a system call.  Chunks rather than one write per
    batch: each write lets the reactor thread take the GIL back soon.
    """

    chunk_lines = 8

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._lines: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record))
            if len(self._lines) >= self.chunk_lines:
                self._write_lines()
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # Handler.__init__ made it
            if self._lines:
                try:
                    self._write_lines()
                except Exception:  # the stream is gone (a closed pipe): nowhere left to say so
                    pass
        super().flush()

    def _write_lines(self) -> None:
        lines, self._lines = self._lines, []
        lines.append("")
        self.stream.write(self.terminator.join(lines))


def log_format(worker: int = 0) -> str:
    """FORMAT, with ``[worker N]`` after the level when the server runs several workers."""
    return FORMAT if not worker else FORMAT.replace(" %(name)s", f" [worker {worker}] %(name)s", 1)


def journal_handler(worker: int = 0) -> Optional[logging.Handler]:
    """A handler for the systemd journal, or None when there is no journal."""
    if not os.path.exists(JOURNAL_SOCKET):
        return None
    try:
        from systemd.journal import JournalHandler  # python3-systemd
    except ImportError:
        return None
    if not worker:
        return JournalHandler(SYSLOG_IDENTIFIER="sylk-pushserver")
    handler = JournalHandler(SYSLOG_IDENTIFIER="sylk-pushserver", SYLKPUSH_WORKER=str(worker))
    handler.setFormatter(logging.Formatter(f"[worker {worker}] %(message)s"))
    return handler


_writer: Optional[LogWriter] = None


def setup_logging(foreground: bool, debug: bool = False, log_file: str = "",
                  debug_hpack: bool = False, forward_twisted: bool = True, worker: int = 0) -> logging.Logger:
    """Route the ``sylkpush`` loggers (and Twisted's) to their destinations.

    Foreground: the console.  As a service: the journal, or stderr when no
    journal is reachable.  ``log_file`` adds a file (reopened after rotation).
    ``forward_twisted`` False leaves Twisted's own events to twistd's logger.
    ``worker`` (when not 0) is written on every line.
    """
    global _writer
    stop_logging()
    handlers: List[logging.Handler] = []
    line_format = log_format(worker)
    destination = None if foreground else journal_handler(worker)
    if destination is None:
        destination = BatchedStreamHandler(sys.stderr)
        destination.setFormatter(SecondCachingFormatter(line_format))
    handlers.append(destination)
    if log_file:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        file_handler = logging.handlers.WatchedFileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter(line_format))
        handlers.append(file_handler)

    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    buffer = BufferingHandler()
    buffer.addFilter(RedactingFilter())
    root.addHandler(buffer)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # the log format uses none of these: do not compute them for every record
    # (logging's documented optimisations; the caller lookup walks frames)
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    # hpack traces are very verbose: only with debug_hpack
    for name in ("hpack", "h2"):
        logging.getLogger(name).setLevel(logging.DEBUG if (debug and debug_hpack) else logging.WARNING)
    _writer = LogWriter(buffer, handlers)
    _writer.start()
    if forward_twisted:
        _forward_twisted_logs()
    return logging.getLogger("sylkpush")


def stop_logging() -> None:
    """Write what is buffered and stop the writer thread (at exit)."""
    global _writer
    if _writer is not None:
        _writer.stop()
        _writer = None


_twisted_forwarded = False


def _forward_twisted_logs() -> None:
    """Send twisted.logger events into stdlib logging, once per process."""
    global _twisted_forwarded
    if _twisted_forwarded:
        return
    from twisted.logger import STDLibLogObserver, globalLogBeginner
    globalLogBeginner.beginLoggingTo([STDLibLogObserver(name="twisted")],
                                     discardBuffer=False, redirectStandardIO=False)
    _twisted_forwarded = True
