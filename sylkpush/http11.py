"""The API's HTTP/1.1 server: request parsing, the request object the
resources see, and one connection's protocol.

Twisted's web server reads a request line by line and builds several
objects per request; the API's requests are small and alike, so here the
head is read in one go (found by its blank line, split, checked), the body
by its length (or chunked), and each answer goes out in one write with its
Content-Length.  The resources (``twisted.web.resource.Resource``) stay as
they are: a request walks the tree with ``getChildForRequest`` and is
rendered as twisted.web would (bytes, or ``NOT_DONE_YET`` and ``write`` /
``finish`` later), with the part of ``twisted.web.server.Request`` they use.

Malformed requests are answered with the JSON envelope and the connection
is closed (the stream can no longer be trusted to find the next request):
400 naming the rule, 431 for a head over :data:`MAX_HEAD` bytes or with
more than :data:`MAX_HEADERS` fields, 505 for an HTTP version other than
1.0 and 1.1.  Bare LF line ends and obsolete line folding are refused, as
are Content-Length with Transfer-Encoding and transfer codings other than
chunked: each could let a proxy in front and this server see different
requests in the same bytes.
"""

from __future__ import annotations

import json
import logging
import re
import time
from http import HTTPStatus
from io import BytesIO
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import unquote_to_bytes as unquote

from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import IResource, Resource, getChildForRequest
from twisted.web.server import NOT_DONE_YET

from sylkpush.dispatch import exc_info_of
from sylkpush.transports import no_delay, send_now

log = logging.getLogger("sylkpush.web")
#: the access log: one line per answer, at DEBUG only (see :class:`Site`)
access_log = logging.getLogger("sylkpush.web.access")

#: the request line and header fields at most, in bytes
MAX_HEAD = 16384
#: header fields per request at most
MAX_HEADERS = 100
#: request bodies kept at most (larger ones are read, dropped and answered 413)
MAX_BODY = 64 * 1024
#: bytes of a body over the limit kept to find its call-id for the log
SNIFF_BYTES = 4096
#: bytes of the next requests a connection buffers while it answers one
#: before it stops reading (pipelining callers wait on TCP then)
PIPELINE_BUFFER = 64 * 1024

_VERSION = re.compile(rb"HTTP/\d\.\d\Z")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}\Z")
#: control characters other than tab, not allowed in a chunk's extensions
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


#: reason phrases: twisted.web's (as answered before), the standard library's for the codes it lacks (431)
REASONS: Dict[int, bytes] = {status.value: status.phrase.encode("ascii") for status in HTTPStatus}
REASONS.update(http.RESPONSES)


def envelope(code: int, description: str, data: Any = None, extra: Optional[Dict[str, Any]] = None) -> bytes:
    """The JSON body of every answer (``extra``: more keys beside code, description and data)."""
    return json.dumps({"code": code, "description": description, "data": data or {}, **(extra or {})}).encode("utf-8")


def answer_bytes(code: int, description: str) -> bytes:
    """A whole HTTP/1.1 JSON answer that closes the connection, for callers
    whose request is not (or no longer) read."""
    body = envelope(code, description)
    return (b"HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % (code, REASONS.get(code, b"Unknown"), http_date(), len(body))) + body


#: the second and its HTTP date, last formatted
_date: Tuple[int, bytes] = (0, b"")


def http_date() -> bytes:
    """The HTTP date of now, formatted once a second."""
    global _date
    now = int(time.time())
    if now != _date[0]:
        _date = (now, http.datetimeToString(now))
    return _date[1]


class HttpError(Exception):
    """A request that cannot be read: answered ``code`` and the connection closed."""

    def __init__(self, code: int, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


#: a well-formed request head, with its last line's CRLF: method, target, version, field lines
_HEAD = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+) ([^\x00-\x20\x7f]+) (HTTP/1\.[01])\r\n"
                   rb"((?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[^\x00\r\n]*\r\n)*)\Z")


_METHODS = {method: method for method in (b"POST", b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"PUT")}


def parse_head(head: bytes) -> Tuple[bytes, bytes, bytes, Dict[bytes, bytes]]:
    """(method, target, version, fields) of a request head without its
    final blank line; field names lower case, a repeated field's values
    joined with ", ".  :class:`HttpError` when it breaks a rule."""
    found = _HEAD.match(head + b"\r\n")
    if found is None:
        raise _head_error(head)
    method, target, version, lines = found.groups()
    # the usual ones shared: thousands of requests wait during an outage
    method = _METHODS.get(method, method)
    version = b"HTTP/1.1" if version == b"HTTP/1.1" else b"HTTP/1.0"
    if lines.count(b"\r\n") > MAX_HEADERS:
        raise HttpError(431, f"more than {MAX_HEADERS} header fields")
    fields: Dict[bytes, bytes] = {}
    for line in lines.split(b"\r\n")[:-1]:
        name, _, value = line.partition(b":")
        name = name.lower()
        value = value.strip(b" \t")
        if name in fields:
            if name == b"content-length" or name == b"transfer-encoding" or name == b"host":
                raise HttpError(400, f"the {name.decode('ascii')} header field more than once")
            value = fields[name] + b", " + value
        fields[name] = value
    return method, target, version, fields


def _head_error(head: bytes) -> HttpError:
    """What is wrong with a head that is not well-formed."""
    lines = head.split(b"\r\n")
    if b"\n" in head and head.count(b"\n") != len(lines) - 1:
        return HttpError(400, "lines must end with CRLF, not a bare LF")
    if b"\r" in head and head.count(b"\r") != len(lines) - 1:
        return HttpError(400, "a bare CR in the request head")
    parts = lines[0].split(b" ")
    if len(parts) == 3 and parts[2] not in (b"HTTP/1.1", b"HTTP/1.0") and _VERSION.match(parts[2]):
        return HttpError(505, "only HTTP/1.1 and HTTP/1.0 are served here")
    if len(parts) != 3 or not _HEAD.match(lines[0] + b"\r\n"):
        return HttpError(400, "malformed request line: it must be METHOD TARGET HTTP/1.1")
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            return HttpError(400, "obsolete line folding (a field line starting with a space) is not accepted")
        if b"\x00" in line:
            return HttpError(400, "a NUL byte in a header field")
    return HttpError(400, "malformed header field: it must be name: value")


def body_length(fields: Dict[bytes, bytes]) -> Optional[int]:
    """The length the head gives its body; None when it is chunked."""
    coding = fields.get(b"transfer-encoding")
    length = fields.get(b"content-length")
    if coding is not None and coding.lower() != b"identity":
        if length is not None:
            raise HttpError(400, "a request must not have both Content-Length and Transfer-Encoding")
        if coding.lower() != b"chunked":
            raise HttpError(400, "Transfer-Encoding must be chunked (or Content-Length given instead)")
        return None
    if length is None:
        return 0
    if not length.isdigit() or len(length) > 18:
        raise HttpError(400, "Content-Length must be a decimal number of bytes")
    return int(length)


class ChunkedBody:
    """Reads a chunked body as it arrives: :meth:`feed` takes bytes and
    returns what follows the body once it is complete (None until then).
    Past :data:`MAX_BODY` bytes the data is dropped as it comes."""

    __slots__ = ("pending", "size", "body", "trailers")

    def __init__(self) -> None:
        #: the start of a line not yet whole
        self.pending = b""
        #: bytes left of the chunk being read (-1: at a chunk-size line, -2: at the CRLF after a chunk)
        self.size = -1
        #: the body, and one byte more when it is over MAX_BODY
        self.body = bytearray()
        self.trailers = False

    def feed(self, data: bytes) -> Optional[bytes]:
        data = self.pending + data if self.pending else data
        self.pending = b""
        while True:
            if self.size > 0:
                piece = data[:self.size]
                room = MAX_BODY + 1 - len(self.body)
                if room > 0:
                    self.body += piece[:room]
                self.size -= len(piece)
                data = data[len(piece):]
                if self.size:
                    return None
                self.size = -2
            if len(data) < 2 or (self.size == -1 and not self.trailers and b"\r\n" not in data):
                if len(data) > 1024:
                    raise HttpError(400, "a chunk-size line over 1024 bytes")
                self.pending = data
                return None
            if self.size == -2:
                if data[:2] != b"\r\n":
                    raise HttpError(400, "a chunk of a chunked body must end with CRLF")
                data = data[2:]
                self.size = -1
            elif self.trailers:
                if data[:2] == b"\r\n":
                    return data[2:]
                end = data.find(b"\r\n\r\n")
                if end < 0:
                    if len(data) > MAX_HEAD:
                        raise HttpError(431, f"chunked trailers over {MAX_HEAD} bytes")
                    self.pending = data
                    return None
                return data[end + 4:]
            else:
                end = data.find(b"\r\n")
                size, _, extensions = data[:end].partition(b";")
                size = size.rstrip(b" \t")
                if not _HEX.match(size) or _CONTROL.search(extensions):
                    raise HttpError(400, "malformed chunk-size line in a chunked body")
                self.size = int(size, 16)
                data = data[end + 2:]
                if self.size == 0:
                    self.trailers = True
                    self.size = -1


#: names of answer headers as they are sent
_CANONICAL = {b"content-type": b"Content-Type", b"allow": b"Allow", b"www-authenticate": b"WWW-Authenticate"}


#: status lines by version and code, as they were first made
_STATUS: Dict[Tuple[bytes, int], bytes] = {}


def _canonical(name: bytes) -> bytes:
    known = _CANONICAL.get(name)
    return known if known is not None else b"-".join(part.capitalize() for part in name.split(b"-"))


class HttpRequest:
    """One request, with the part of ``twisted.web.server.Request`` the
    resources use: ``method``, ``uri``, ``path``, ``prepath``/``postpath``,
    ``content``, ``getHeader``, ``getClientAddress``, ``setResponseCode``,
    ``setHeader``, ``write``, ``finish``, ``finished``.  Written bytes are
    held until ``finish``, which sends the answer in one write with its
    length.  Thousands of these wait during an outage: slots, and
    :meth:`waiting` lets go of what answering does not need."""

    __slots__ = ("channel", "method", "uri", "path", "clientproto", "received_headers", "content", "prepath",
                 "postpath", "code", "headers", "written", "finished", "_disconnected", "body_too_large", "head",
                 "api_key_name", "sentLength")

    def __init__(self, channel: "HttpConnection", method: bytes, uri: bytes, version: bytes,
                 fields: Dict[bytes, bytes]) -> None:
        self.channel = channel
        self.method = method
        self.uri = uri
        self.path = uri.split(b"?", 1)[0] if b"?" in uri else uri
        self.clientproto = version
        self.received_headers: Optional[Dict[bytes, bytes]] = fields
        self.content: Optional[BytesIO] = None
        self.prepath: Optional[List[bytes]] = None
        self.postpath: Optional[List[bytes]] = None
        self.code = 200
        #: the answer's headers, once one is set
        self.headers: Optional[Dict[bytes, bytes]] = None
        self.written = b""
        self.finished = False
        #: the caller went away (twisted.web's name, which the resources check)
        self._disconnected = False
        self.body_too_large = False
        #: the first bytes of a body over the limit, to find its call-id
        self.head = b""
        self.api_key_name: Optional[str] = None
        self.sentLength = 0

    def getHeader(self, name: bytes) -> Optional[bytes]:  # noqa: N802 (twisted.web's names)
        return self.received_headers.get(name.lower()) if self.received_headers is not None else None

    def getClientAddress(self) -> Any:  # noqa: N802
        return self.channel.transport.getPeer()

    def setResponseCode(self, code: int, message: Optional[bytes] = None) -> None:  # noqa: N802
        self.code = code

    def setHeader(self, name: bytes, value: bytes) -> None:  # noqa: N802
        if self.headers is None:
            self.headers = {}
        self.headers[name.lower()] = value

    def write(self, data: bytes) -> None:
        if not self.finished:
            self.written += data

    def waiting(self) -> None:
        """The request is read and waits for its answer (thousands may,
        during a push service outage): let go of what answering does not
        need.  Only an access log at DEBUG wants the headers, for the user agent."""
        self.content = self.prepath = self.postpath = None
        if not access_log.isEnabledFor(logging.DEBUG):
            self.received_headers = None

    def finish(self) -> None:
        if self.finished or self._disconnected:
            return
        self.finished = True
        body, self.written = self.written, b""
        self.sentLength = len(body)
        status = _STATUS.get((self.clientproto, self.code))
        if status is None:
            status = _STATUS[self.clientproto, self.code] = b"%s %d %s\r\n" % (
                self.clientproto, self.code, REASONS.get(self.code, b"Unknown"))
        head = [status]
        if self.headers is not None:
            head += [_canonical(name) + b": " + value + b"\r\n" for name, value in self.headers.items()
                     if name != b"content-length" and name != b"date"]
        head.append(b"Date: %s\r\nContent-Length: %d\r\n" % (http_date(), len(body)))
        closing = not self.channel.persistent
        if closing and self.clientproto == b"HTTP/1.1":
            head.append(b"Connection: close\r\n")
        head.append(b"\r\n")
        if self.method != b"HEAD":
            head.append(body)
        self.channel.answered(self, b"".join(head))

    def process(self, resource: IResource) -> None:
        """Find the resource for this request below ``resource`` and render it, as twisted.web does."""
        self.prepath = []
        self.postpath = list(map(unquote, self.path[1:].split(b"/")))
        try:
            body = getChildForRequest(resource, self).render(self)
            if body is NOT_DONE_YET:
                return
            if not isinstance(body, bytes):
                raise TypeError(f"a resource rendered {type(body).__name__}, not bytes")
            self.write(body)
            self.finish()
        except BaseException:
            self.processingFailed(Failure())

    def processingFailed(self, reason: Failure) -> None:  # noqa: N802
        """An unexpected error: logged, and answered 500 unless answered already."""
        log.error("unhandled error answering %s %s", self.method, self.uri, exc_info=exc_info_of(reason))
        if self.finished or self._disconnected:
            return
        self.code = 500
        self.headers = {b"content-type": b"application/json"}
        self.written = envelope(500, "internal server error")
        self.finish()


class Site:
    """The resource tree of the API, and its access log: one line per
    answer to the ``sylkpush.web.access`` logger at DEBUG, costing nothing
    unless that level is enabled (the request-id lines of the dispatcher
    already say who asked what and what they got)."""

    def __init__(self, resource: Resource) -> None:
        self.resource = resource

    def log(self, request: HttpRequest) -> None:
        if access_log.isEnabledFor(logging.DEBUG):
            access_log.debug("%s", http.combinedLogFormatter(http.datetimeToLogString(), request).rstrip())


class HttpConnection:
    """One API connection: reads requests, renders each with the site's
    resources and writes its answer; one request at a time (what a
    pipelining caller sends meanwhile waits in :attr:`buffer`).

    ``factory`` is told what happens on the connection, for the connection
    limit and the request deadline (:mod:`sylkpush.connections`):
    ``register`` / ``unregister`` as it opens and closes, ``receiving`` at
    the first byte of a request, ``answering`` once it is whole, ``idle``
    once it is answered, and ``close`` (with an answer) for a request that
    cannot be read.
    """

    __slots__ = ("factory", "site", "transport", "buffer", "reading", "request", "persistent", "receiving_since",
                 "answering", "closed", "_in_loop", "_paused")

    def __init__(self, factory: Any, site: Site) -> None:
        self.factory = factory
        self.site = site
        self.transport: Any = None
        #: bytes received and not yet consumed
        self.buffer = b""
        #: the request whose body is being read, and what reads it
        self.reading: Optional[Tuple[HttpRequest, Any]] = None
        #: the request being answered
        self.request: Optional[HttpRequest] = None
        self.persistent = True
        #: when the first byte of the request now arriving came (None: none is arriving)
        self.receiving_since: Optional[float] = None
        #: a request is received and not yet answered
        self.answering = False
        #: closed by us: whatever else arrives is dropped
        self.closed = False
        self._in_loop = False
        self._paused = False

    # -- IProtocol ------------------------------------------------------------------

    def makeConnection(self, transport: Any) -> None:  # noqa: N802 (Twisted's names)
        self.transport = transport
        self.factory.register(self)
        no_delay(transport)  # answers are small: no waiting for the caller's ACK

    def connectionMade(self) -> None:  # noqa: N802
        pass

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self.closed:
            return
        if self.answering:
            if self.persistent:  # after a last request, whatever else comes is dropped
                self.buffer += data
                if len(self.buffer) > PIPELINE_BUFFER and not self._paused:
                    self._pause(True)
            return
        buffered = self.buffer
        if buffered and self.reading is None and len(buffered) + len(data) <= MAX_HEAD:
            # a head arriving in pieces: look at the new bytes only, not all again
            tail = buffered[-3:] + data
            if b"\r\n\r\n" not in tail and b"\n\n" not in tail and b"\n\r\n" not in tail:
                self.buffer = buffered + data
                return
        self._consume(buffered + data if buffered else data)

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        request, self.request = self.request, None
        if request is not None:
            request._disconnected = True  # its answer, when it comes, is dropped
        self.buffer = b""
        self.reading = None
        self.factory.unregister(self)

    def logPrefix(self) -> str:  # noqa: N802
        return "ApiConnection"

    # -- reading --------------------------------------------------------------------

    def _consume(self, data: bytes) -> None:
        """Read requests from ``data`` until one is being answered or more bytes are needed."""
        self.buffer = b""
        self._in_loop = True
        try:
            while data and not self.answering and not self.closed:
                if self.receiving_since is None:
                    self.factory.receiving(self)
                if self.reading is None:
                    rest = self._read_head(data)
                else:
                    rest = self._read_body(data)
                if rest is None:
                    return
                data = rest
            if not self.closed and self.persistent:
                self.buffer = data
        except HttpError as exc:
            self._refuse(exc)
        finally:
            self._in_loop = False

    def _read_head(self, data: bytes) -> Optional[bytes]:
        """The bytes after the head, once it is whole (None: more needed, kept in the buffer)."""
        if data[:2] == b"\r\n":  # a blank line before the request (RFC 9112 section 2.2)
            data = data.lstrip(b"\r\n")
            if not data:
                return data
        end = data.find(b"\r\n\r\n")
        if end < 0 or end > MAX_HEAD:
            if end > MAX_HEAD or len(data) > MAX_HEAD:
                raise HttpError(431, f"request head over {MAX_HEAD} bytes")
            if b"\n\n" in data or b"\n\r\n" in data:
                raise HttpError(400, "lines must end with CRLF, not a bare LF")
            self.buffer = data
            return None
        method, target, version, fields = parse_head(data[:end])
        length = body_length(fields)
        request = HttpRequest(self, method, target, version, fields)
        connection = fields.get(b"connection")
        if version != b"HTTP/1.1" or (connection is not None and b"close" in [
                token.strip() for token in connection.lower().split(b",")]):
            self.persistent = False
        data = data[end + 4:]
        if length == 0:
            self._received(request, b"")
            return data
        request.body_too_large = length is not None and length > MAX_BODY
        self.reading = (request, ChunkedBody() if length is None else length)
        if (version == b"HTTP/1.1" and fields.get(b"expect", b"").lower() == b"100-continue"
                and (length is None or len(data) < length)):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return data

    def _read_body(self, data: bytes) -> Optional[bytes]:
        assert self.reading is not None
        request, reader = self.reading
        if isinstance(reader, ChunkedBody):
            rest = reader.feed(data)
            if rest is None:
                return None
            body = bytes(reader.body)
            if len(body) > MAX_BODY:
                request.body_too_large = True
                request.head = body[:SNIFF_BYTES]
                body = b""
            self._received(request, body)
            return rest
        if request.body_too_large:
            # read and dropped, its first bytes kept for the call-id: answered 413
            if len(request.head) < SNIFF_BYTES:
                request.head += data[:min(reader, SNIFF_BYTES - len(request.head))]
            if len(data) < reader:
                self.reading = (request, reader - len(data))
                return None
            self._received(request, b"")
            return data[reader:]
        if len(data) < reader:
            self.buffer = data
            return None
        self._received(request, data[:reader])
        return data[reader:]

    def _received(self, request: HttpRequest, body: bytes) -> None:
        """``request`` is whole: render it."""
        self.reading = None
        self.request = request
        self.factory.answering(self)
        request.content = BytesIO(body)
        request.process(self.site.resource)

    def _refuse(self, error: HttpError) -> None:
        peer = self.transport.getPeer()
        log.info("refused request from %s: %d %s", getattr(peer, "host", peer), error.code, error.description)
        self.factory.on_refused(error.code)
        self.buffer = b""
        self.reading = None
        self.factory.close(self, answer_bytes(error.code, error.description))

    # -- answering ------------------------------------------------------------------

    def answered(self, request: HttpRequest, answer: bytes) -> None:
        """``request`` is answered with ``answer``: send it, then read the next request."""
        send_now(self.transport, answer)
        self.site.log(request)
        self.request = None
        if not self.persistent:
            self.buffer = b""
            self.factory.close(self)
            return
        self.factory.idle(self)
        if self._paused:
            self._pause(False)
        if self.buffer and not self._in_loop:
            self._consume(self.buffer)

    def _pause(self, pause: bool) -> None:
        # over TLS the TCP connection under it is the one that stops reading
        producer = self.transport if IPushProducer.providedBy(self.transport) else getattr(
            self.transport, "transport", None)
        if producer is None or not IPushProducer.providedBy(producer):
            return
        self._paused = pause
        if pause:
            producer.pauseProducing()
        else:
            producer.resumeProducing()
