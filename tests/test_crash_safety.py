"""An acknowledged registration survives ``kill -9`` at any point.

A real ``./sylk-pushserver`` process takes v2 registrations from several
concurrent clients and is SIGKILLed at a random moment (sometimes while it is
still starting); after each restart every registration that was answered 200
must be in its database.  The figures (acknowledged, found, lost, stored
without an answer) go to the test log.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3

import treq
from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.python import log
from twisted.trial import unittest
from twisted.web.client import HTTPConnectionPool

from sylkpush.testing.fake_apns import FakeAPNs
from sylkpush.tokens.sqlite import DATABASE_NAME
from tests.helpers import make_config_dir
from tests.test_remote_log import free_port
from tests.test_shutdown import spawn_daemon

CYCLES = 8
WRITERS = 8


def registered(path: str) -> set:
    """(account, device id) of every device in the database at ``path``."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        rows = connection.execute("SELECT username, domain, device_id FROM push_tokens").fetchall()
    return {(f"{username}@{domain}", device_id) for username, domain, device_id in rows}


class KillNineTests(unittest.TestCase):

    timeout = 180

    @defer.inlineCallbacks
    def setUp(self):
        self.fake = FakeAPNs(reactor, directory=os.path.abspath(self.mktemp()))
        yield self.fake.start()
        self.addCleanup(self.fake.stop)
        self.port = free_port()
        self.directory = make_config_dir(self.fake.applications_ini("com.example.sylk", "sylk"),
                                         f"[server]\nport = {self.port}\nspool_dir = spool\n")
        self.database = os.path.join(self.directory, "spool", DATABASE_NAME)

    def spawn(self):
        return spawn_daemon(self, self.directory)

    @defer.inlineCallbacks
    def writer(self, pool, cycle, number, acknowledged, stop, acked):
        """Registers new devices one after the other until the daemon is gone;
        ``acked`` is called after each 200."""
        sent = 0
        while not stop:
            device = f"c{cycle}-w{number}-{sent}"
            account = f"user{sent % 25}@example.com"
            body = json.dumps({"app-id": "com.example.sylk", "platform": "apple", "token": f"{sent:064x}",
                               "device-id": device}).encode()
            sent += 1
            try:
                response = yield treq.post(f"http://127.0.0.1:{self.port}/v2/tokens/{account}", body,
                                           headers={b"content-type": [b"application/json"]}, pool=pool)
                yield response.content()
            except Exception:
                return  # killed: what was not answered was not acknowledged
            if response.code == 200:
                acknowledged.add((account, device))
                acked()

    @defer.inlineCallbacks
    def test_acknowledged_registrations_survive_sigkill(self):
        seed = random.randrange(1 << 30)
        chance = random.Random(seed)
        acknowledged: set = set()
        for cycle in range(CYCLES):
            process, transport = self.spawn()
            kind = ("at a random moment", "right after an answer", "right after an answer", "while starting")[cycle % 4]
            if kind == "while starting":
                # opening (or creating) the database must survive it too
                yield task.deferLater(reactor, chance.uniform(0.0, 0.5), lambda: None)
                transport.signalProcess("KILL")
                yield process.ended
            else:
                yield process.listening
                pool = HTTPConnectionPool(reactor, persistent=True)
                pool.maxPersistentPerHost = WRITERS
                stop: list = []
                answers = [chance.randrange(50, 500)]

                def acked():
                    # the kill follows an answer at once: an answer sent before its commit would be lost
                    answers[0] -= 1
                    if kind == "right after an answer" and answers[0] == 0:
                        transport.signalProcess("KILL")
                writers = [self.writer(pool, cycle, n, acknowledged, stop, acked) for n in range(WRITERS)]
                if kind == "at a random moment":
                    yield task.deferLater(reactor, chance.uniform(0.2, 1.0), lambda: None)
                    transport.signalProcess("KILL")
                yield process.ended
                stop.append(True)
                yield defer.gatherResults(writers)
                yield pool.closeCachedConnections()
            # restart, then count what the restarted daemon has
            process, transport = self.spawn()
            yield process.listening
            found = yield deferToThread(registered, self.database)
            lost = acknowledged - found
            log.msg(f"kill -9 {kind}: acknowledged {len(acknowledged)}, found {len(found)}, lost {len(lost)}, "
                    f"stored without an answer {len(found - acknowledged)}")
            self.assertEqual(lost, set(), f"seed {seed}, cycle {cycle}")
            transport.signalProcess("KILL")
            yield process.ended
        log.msg(f"kill -9: seed {seed}, {CYCLES} kills, {len(acknowledged)} registrations acknowledged, "
                f"all found after every restart")
        self.assertGreater(len(acknowledged), 0)
