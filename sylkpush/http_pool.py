"""Persistent HTTP/1.1 connection pools for the HTTP clients the daemon runs
(remote logging, custom push services such as ``config/pns/mypns.py``).

Twisted's pool builds a factory for every new connection, and a Twisted
factory logs "Starting factory" and "Stopping factory" when it starts and
stops: two INFO lines for every connection and reconnection, about nothing
an operator can act on.  The pools made here use a quiet factory.
"""

from __future__ import annotations

from typing import Any

from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory


class QuietConnectionFactory(_HTTP11ClientFactory):
    """The pool's factory of one connection, without the start and stop lines."""

    noisy = False


def connection_pool(reactor: Any, per_host: int = 2) -> HTTPConnectionPool:
    """A persistent pool keeping up to ``per_host`` idle connections to each host."""
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = per_host
    pool._factory = QuietConnectionFactory  # the documented way to change it has none
    return pool
