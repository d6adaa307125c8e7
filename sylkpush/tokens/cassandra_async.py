"""The DataStax Cassandra driver driven from a Twisted reactor.

With ``cassandra.io.twistedreactor.TwistedConnection`` the driver does its
socket I/O in the reactor thread, yet the driver stays threaded, which shapes
how the daemon must call it:

- ``Cluster.connect``, ``Session.prepare`` and ``Cluster.shutdown`` wait on a
  ``threading.Event`` for answers that only the reactor thread can deliver:
  called in the reactor thread they would hang it until their timeout.  They
  run in the reactor's thread pool here.
- A ``ResponseFuture`` runs its callbacks in whichever thread completes it:
  the reactor thread for most answers, a driver executor thread for schema
  changes (it waits for schema agreement there), the calling thread when the
  request fails before it is sent.  Results reach the reactor through
  ``callFromThread`` from any other thread (directly in the reactor thread),
  which also makes these helpers work with the driver's other connection
  classes (asyncore, libev).
- A ``TwistedConnection`` created while ``reactor.running`` is false runs
  ``reactor.run()`` in a thread of its own, meant for programs without a
  reactor.  The daemon's reactor (and trial's) is not running yet while
  services start and between trial's tests, so ``connect`` waits until the
  reactor runs, and a cluster must be shut down before the reactor stops.
"""

from typing import Any, Callable, List, Optional

from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThreadPool
from twisted.python import threadable
from twisted.python.failure import Failure


def _in_thread_pool(reactor: Any, function: Callable, *args: Any, **kwargs: Any) -> Deferred:
    return deferToThreadPool(reactor, reactor.getThreadPool(), function, *args, **kwargs)


def connect(reactor: Any, cluster: Any, keyspace: Optional[str] = None) -> Deferred:
    """``cluster.connect(keyspace)`` off the reactor thread, once the reactor runs.

    Fires with the driver's ``Session``.
    """
    connected: Deferred = Deferred()
    reactor.callWhenRunning(
        lambda: _in_thread_pool(reactor, cluster.connect, keyspace).chainDeferred(connected))
    return connected


def prepare(reactor: Any, session: Any, query: str) -> Deferred:
    """``session.prepare(query)`` off the reactor thread; fires with the statement."""
    return _in_thread_pool(reactor, session.prepare, query)


def shutdown(reactor: Any, cluster: Any) -> Deferred:
    """``cluster.shutdown()`` off the reactor thread: closes every connection."""
    return _in_thread_pool(reactor, cluster.shutdown)


def execute(reactor: Any, session: Any, query: Any, parameters: Any = None,
            **options: Any) -> Deferred:
    """Run ``query`` with ``session.execute_async``; never blocks the reactor.

    Fires, in the reactor thread, with the list of every row of every page
    (empty for statements that return none), or fails with the driver's
    exception: the driver's own request timeout bounds the wait.  ``options``
    go to ``execute_async`` (``timeout``, ``execution_profile``...).
    Cancelling the Deferred only stops waiting: the request may still apply.
    """
    rows: List[Any] = []

    def page_done(page: Any) -> None:
        if result.called:
            return
        if isinstance(page, list):
            rows.extend(page)
        if future.has_more_pages:
            future.start_fetching_next_page()
        else:
            result.callback(rows)

    def failed(error: BaseException) -> None:
        if not result.called:
            result.errback(Failure(error))

    def in_reactor(function: Callable, argument: Any) -> None:
        if threadable.isInIOThread():
            function(argument)
        else:
            reactor.callFromThread(function, argument)

    result: Deferred = Deferred(lambda _: future.clear_callbacks())
    try:
        future = session.execute_async(query, parameters, **options)
    except Exception:
        return fail()
    future.add_callbacks(lambda page: in_reactor(page_done, page), lambda error: in_reactor(failed, error))
    return result
