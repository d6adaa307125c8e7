"""The transports Twisted's reactors give the protocols here, for type checking.

``Protocol.transport`` is declared ``Optional[ITransport]``; the protocols of
this package only run connected, on TCP (or TLS over TCP) transports, which
also pause and resume reading.  A protocol says which it gets with a class
annotation, e.g. ``transport: IStreamTransport``.
"""

from __future__ import annotations

from twisted.internet.interfaces import IPushProducer, ISSLTransport, ITCPTransport


class IStreamTransport(ITCPTransport, IPushProducer):
    """A TCP connection that can stop and resume reading."""


class ITLSStreamTransport(ISSLTransport, IPushProducer):
    """A TLS connection over TCP (its peer certificate at hand) that can stop and resume reading."""
