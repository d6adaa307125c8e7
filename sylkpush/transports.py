"""The transports Twisted's reactors give the protocols here: their types,
and the shortcuts the hot paths take when writing to them.

``Protocol.transport`` is declared ``Optional[ITransport]``; the protocols of
this package only run connected, on TCP (or TLS over TCP) transports, which
also pause and resume reading.  A protocol says which it gets with a class
annotation, e.g. ``transport: IStreamTransport``.
"""

from __future__ import annotations

import functools
from typing import Any

from twisted.internet import abstract, tcp
from twisted.internet.interfaces import IPushProducer, ISSLTransport, ITCPTransport
from twisted.protocols.tls import TLSMemoryBIOProtocol


class IStreamTransport(ITCPTransport, IPushProducer):
    """A TCP connection that can stop and resume reading."""


class ITLSStreamTransport(ISSLTransport, IPushProducer):
    """A TLS connection over TCP (its peer certificate at hand) that can stop and resume reading."""


def send_now(transport: Any, data: bytes) -> None:
    """Write ``data`` to a TCP ``transport``; with nothing queued on it,
    straight to the socket.

    A write usually fits the socket's buffer: sending it at once spares the
    two epoll changes and the extra reactor pass of a queued write.  What
    the socket does not take, or any error, is left to Twisted's own write.
    """
    kind = type(transport)
    if (kind is not tcp.Server and kind is not tcp.Client) or transport.TLS:
        transport.write(data)
        return
    if transport.connected and not (transport.dataBuffer or transport._tempDataBuffer or transport.disconnecting):
        try:
            sent = transport.socket.send(data)
        except OSError:  # EAGAIN, or an error Twisted's write will find and report
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    # the class's write: send_now may stand in for the instance's (send_at_once)
    abstract.FileDescriptor.write(transport, data)


def send_at_once(transport: Any) -> None:
    """Make the TLS records written on ``transport`` (TLS over TCP) go out
    with :func:`send_now`, rather than when a later reactor pass finds the
    socket writable."""
    below = getattr(transport, "transport", None)
    if type(below) is tcp.Client or type(below) is tcp.Server:
        below.write = functools.partial(send_now, below)  # type: ignore[method-assign]  # this instance only


def write_through(transport: Any, data: bytes) -> None:
    """Write ``data`` on ``transport``; on TLS, encrypted now rather than
    gathered with other writes until the next reactor pass (as newer Twisted
    releases do), for callers that gather their writes already."""
    if isinstance(transport, TLSMemoryBIOProtocol):
        TLSMemoryBIOProtocol.write(transport, data)
    else:
        transport.write(data)


def no_delay(transport: Any) -> None:
    """Turn Nagle's algorithm off on ``transport``'s TCP connection (under TLS
    too), where it has one: requests and answers are a few hundred bytes, and
    one written while the last is unacknowledged would wait for the peer's
    delayed ACK."""
    set_no_delay = getattr(transport, "setTcpNoDelay", None)  # not on in-memory transports
    if set_no_delay is not None:
        set_no_delay(True)
