"""Noticing that applications.ini changed.

Polling the file's identity (inode, size, modification time) once a second is
portable, notices editors that replace the file as well as those that rewrite
it, and costs one ``stat`` per second: cheap enough to stay on the reactor
thread.  The reload itself is the service's business.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Optional, Tuple

from twisted.internet.task import LoopingCall

log = logging.getLogger(__name__)

#: seconds between two looks at the file; a change is applied within 2 s
POLL_INTERVAL = 1.0

Signature = Optional[Tuple[int, int, int, int]]


def file_signature(path: str) -> Signature:
    """What identifies a version of ``path``; None when it does not exist."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_ino, stat.st_dev, stat.st_size, stat.st_mtime_ns)


class FileWatcher:
    """Calls ``changed()`` after the file at ``path`` changes.

    The first look only records the signature.  A file that disappears is a
    change too (the reload then reports that it cannot be read and keeps the
    previous applications).
    """

    def __init__(self, path: str, changed: Callable[[], Any], reactor: Any,
                 interval: float = POLL_INTERVAL) -> None:
        self.path = path
        self.changed = changed
        self.interval = interval
        self._signature: Signature = file_signature(path)
        self._loop = LoopingCall(self.check)
        self._loop.clock = reactor

    def start(self) -> None:
        self._loop.start(self.interval, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def check(self) -> bool:
        """Look at the file now; True (and ``changed()`` called) when it changed."""
        signature = file_signature(self.path)
        if signature == self._signature:
            return False
        self._signature = signature
        log.info("%s changed", self.path)
        try:
            self.changed()
        except Exception:
            log.exception("reloading after a change of %s failed", self.path)
        return True
