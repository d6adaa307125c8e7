"""``workers`` in general.ini: several processes on one listening socket.

The real ``./sylk-pushserver`` with two workers, pushing to a fake APNs in
this process: every request is answered once, both workers take their part,
``/metrics`` (whichever worker answers it) adds both up, and SIGTERM stops
them all.
"""

from __future__ import annotations

import os
import re

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from sylkpush.config import ConfigError, load_settings
from sylkpush.testing.fake_apns import FakeAPNs
from tests.firebase_helpers import wait_until
from tests.helpers import make_config_dir, post, wakeup
from tests.test_shutdown import spawn_daemon
from tests.test_token_store import original_entry, write_original_file

REQUESTS = 300
CONCURRENCY = 60


class WorkersSettingTests(unittest.TestCase):

    def test_workers(self):
        def workers(value):
            return load_settings(make_config_dir("", f"[server]\nworkers = {value}\n")).workers
        self.assertEqual(load_settings(make_config_dir("")).workers, 1)
        self.assertEqual(workers(3), 3)
        self.assertEqual(workers("auto"), len(os.sched_getaffinity(0)))
        for bad in ("0", "-1", "two", "1.5", ""):
            with self.assertRaisesRegex(ConfigError, r"general.ini line 2: \[server\] workers must be an "
                                                         r"integer of at least 1, or auto"):
                workers(bad)


def requests_total(text: str) -> float:
    """The sum of sylkpush_requests_total{code="200"} in a /metrics text."""
    return sum(float(value) for value in
               re.findall(r'^sylkpush_requests_total\{[^}]*code="200"[^}]*\} (\S+)$', text, re.M))


class TwoWorkersTests(unittest.TestCase):

    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        self.fake = FakeAPNs(reactor, directory=os.path.abspath(self.mktemp()), delay=0.02)
        yield self.fake.start()
        self.addCleanup(self.fake.stop)
        directory = make_config_dir(self.fake.applications_ini("com.example.sylk"),
                                    "[server]\nworkers = 2\nspool_dir = spool\n")
        # the original server's token file, for the workers to import once
        write_original_file(os.path.join(directory, "spool"), {"alice@example.com": [
            original_entry("com.example.sylk", "d1", "t1"), original_entry("com.example.sylk", "d2", "t2")]})
        self.process, self.transport = spawn_daemon(self, directory, "--port", "0")
        port = yield self.process.listening
        self.url = f"http://127.0.0.1:{port}"
        # both workers listen and have their connections to the fake up
        yield self.wait_for(lambda: all(f"[worker {n}] sylkpush.service: listening on" in self.log()
                                        for n in (1, 2))
                            and self.log().count("APNs connection") >= 4)

    def log(self) -> str:
        return self.process.output.decode("utf-8", "replace")

    def wait_for(self, condition, limit: float = 30.0):
        def failed(failure):
            failure.trap(AssertionError)
            raise AssertionError(f"{failure.getErrorMessage()}; the log:\n{self.log()}")
        return wait_until(condition, limit).addErrback(failed)

    @defer.inlineCallbacks
    def test_every_request_answered_once_and_metrics_add_up(self):
        answers = {}
        semaphore = defer.DeferredSemaphore(CONCURRENCY)

        @defer.inlineCallbacks
        def one(n):
            code, body, _ = yield post(self.url + "/push", wakeup(**{"call-id": f"w-{n}", "token": f"{n:064x}"}))
            answers.setdefault(f"w-{n}", []).append((code, body["data"].get("call_id")))

        yield defer.gatherResults([semaphore.run(one, n) for n in range(REQUESTS)])
        self.assertEqual(len(answers), REQUESTS)
        self.assertEqual({call: codes for call, codes in answers.items() if codes != [(200, call)]}, {})
        delivered = sorted(note.payload["call-id"] for note in self.fake.notifications)
        self.assertEqual(delivered, sorted(answers))
        # each worker answered a part of them
        yield self.wait_for(lambda: self.log().count("result 200") >= REQUESTS)
        by_worker = [len(re.findall(rf"\[worker {n}\] sylkpush\.dispatch: incoming_session-\S+ result 200",
                                    self.log())) for n in (1, 2)]
        self.assertEqual(sum(by_worker), REQUESTS)
        self.assertTrue(all(by_worker), by_worker)
        # whichever worker answers /metrics, it adds up both; the state of the
        # other worker (pushes in flight, up) is at most a second old
        scrapes = []
        for _ in range(50):
            code, text, _ = yield post(self.url + "/metrics", None, method="GET")
            self.assertEqual(code, 200)
            self.assertEqual(requests_total(text), REQUESTS, text)
            self.assertIn('sylkpush_reconnects_total{app="com.example.sylk",platform="apple"}', text)
            if "sylkpush_in_flight 0.0" in text and \
                    'sylkpush_application_up{app="com.example.sylk",platform="apple"} 1.0' in text:
                scrapes.append(text)
                if len(scrapes) == 6:
                    break
            else:
                yield task.deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(len(scrapes), 6, text)

    @defer.inlineCallbacks
    def test_sigterm_and_sighup_reach_every_worker(self):
        self.transport.signalProcess("HUP")
        yield self.wait_for(lambda: all(f"[worker {n}] sylkpush.service: applications reloaded" in self.log()
                                        for n in (1, 2)))
        pids = [int(pid) for pid in re.findall(r"worker \d \(pid (\d+)\)", self.log())[:2]]
        self.assertEqual(len(pids), 2, self.log())
        self.transport.signalProcess("TERM")
        code = yield self.process.ended
        self.assertEqual(code, 0, self.log())
        for n, pid in zip((1, 2), pids):
            self.assertIn(f"worker {n} (pid {pid}) exited with 0", self.log())
            with self.assertRaises(ProcessLookupError):
                os.kill(pid, 0)

    @defer.inlineCallbacks
    def test_the_original_token_file_is_imported_once(self):
        self.assertEqual(self.log().count("token storage: imported 2 devices"), 1, self.log())
        code, _, _ = yield post(self.url + "/v2/tokens/bob@example.com", {
            "app-id": "com.example.sylk", "platform": "apple", "token": "b1", "device-id": "d3"})
        self.assertEqual(code, 200)
        # whichever worker answers, the device is there
        for _ in range(6):
            code, body, _ = yield post(self.url + "/v2/tokens/bob@example.com/push", {
                "event": "incoming_session", "call-id": "c-bob", "from": "alice@example.com",
                "to": "bob@example.com", "media-type": "audio"})
            self.assertEqual((code, [result["code"] for result in body["data"]]), (200, [200]))
        self.assertEqual(len(self.fake.notifications), 6)
