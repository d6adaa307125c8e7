"""SIGTERM/SIGINT on a real ``./sylk-pushserver`` process: the port
closes, pushes in flight are finished (or answered past the drain deadline:
504 when they were handed to the push service and never answered), and the
process exits 0."""

from __future__ import annotations

import os
import re
import shutil
import sys

from twisted.internet import defer, protocol, reactor, task
from twisted.trial import unittest

from tests.helpers import make_config_dir, post, wakeup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: a custom push service that answers each push ``delay`` seconds later
SLOW_PNS = '''
from twisted.internet.defer import Deferred, DeferredList, succeed
from sylkpush.pns.base import PushClient, PushResult


class MypnsClient(PushClient):
    def __init__(self, app, reactor):
        super().__init__(app, reactor)
        self.delay = float(app.option("delay"))
        self.waiting = []

    def send(self, push):
        answer = Deferred()
        self.waiting.append(answer)
        self.reactor.callLater(self.delay, answer.callback, PushResult(200, "OK", "slow://" + push.token))
        return answer

    def stop(self):
        pending = [d for d in self.waiting if not d.called]
        done = [Deferred() for _ in pending]
        for answer, finished in zip(pending, done):
            answer.addBoth(lambda result, f=finished: (f.callback(None), result)[1])
        return DeferredList(done) if done else succeed(None)
'''


def slow_app(delay: float) -> str:
    return f"""
[slow]
app_id = com.example.slow
app_type = myapp
app_platform = mypns
delay = {delay}
"""


class ServerProcess(protocol.ProcessProtocol):
    """Collects the daemon's console log; ``listening`` fires with its port."""

    def __init__(self):
        self.output = b""
        self.listening = defer.Deferred()
        self.ended = defer.Deferred()

    def errReceived(self, data):
        self.output += data
        found = re.search(rb"listening on http://127\.0\.0\.1:(\d+)", self.output)
        if found and not self.listening.called:
            self.listening.callback(int(found.group(1)))

    outReceived = errReceived

    def processEnded(self, reason):
        self.ended.callback(reason.value.exitCode)


def spawn_daemon(testcase: unittest.TestCase, directory: str, *options: str):
    """``./sylk-pushserver --config_dir directory --no-fork *options`` as a child process,
    killed at the test's cleanup if still running; (ServerProcess, transport)."""
    process = ServerProcess()
    args = [sys.executable, os.path.join(ROOT, "sylk-pushserver"), "--config_dir", directory, "--no-fork",
            "--ip", "127.0.0.1", *options]
    transport = reactor.spawnProcess(process, sys.executable, args, env=dict(os.environ), path=ROOT)

    def kill_if_running():
        if not process.ended.called:
            transport.signalProcess("KILL")
            return process.ended
    testcase.addCleanup(kill_if_running)
    return process, transport


class ShutdownTests(unittest.TestCase):

    timeout = 30

    @defer.inlineCallbacks
    def start(self, delay, drain_timeout):
        directory = make_config_dir(slow_app(delay), "[server]\nspool_dir = spool\n")
        os.mkdir(os.path.join(directory, "applications"))
        shutil.copy(os.path.join(ROOT, "config", "applications", "myapp.py"), os.path.join(directory, "applications"))
        os.mkdir(os.path.join(directory, "pns"))
        with open(os.path.join(directory, "pns", "mypns.py"), "w") as stream:
            stream.write(SLOW_PNS)
        process, transport = spawn_daemon(self, directory, "--port", "0", "--drain_timeout", str(drain_timeout))
        port = yield process.listening
        return process, transport, f"http://127.0.0.1:{port}"

    @defer.inlineCallbacks
    def in_flight(self, url, count):
        """Wait until the server reports ``count`` pushes in flight."""
        while True:
            _, text, _ = yield post(url + "/metrics", None, method="GET")
            if f"sylkpush_in_flight {float(count)}" in text:
                return
            yield task.deferLater(reactor, 0.02, lambda: None)

    @defer.inlineCallbacks
    def wait_output(self, process, text):
        """Wait until the server has written ``text``."""
        while text not in process.output:
            yield task.deferLater(reactor, 0.02, lambda: None)

    def push(self, url, i):
        return post(url + "/push", wakeup(**{"app-id": "com.example.slow", "platform": "mypns",
                                             "token": f"t{i}", "call-id": f"c{i}"}))

    @defer.inlineCallbacks
    def test_sigterm_finishes_pushes_in_flight(self):
        process, transport, url = yield self.start(delay=1.0, drain_timeout=10)
        calls = [self.push(url, i) for i in range(10)]
        yield self.in_flight(url, 10)
        transport.signalProcess("TERM")
        answers = yield defer.gatherResults(calls)
        self.assertEqual([code for code, _, _ in answers], [200] * 10)
        self.assertEqual(sorted(body["data"]["token"] for _, body, _ in answers), sorted(f"t{i}" for i in range(10)))
        exit_code = yield process.ended
        self.assertEqual(exit_code, 0, process.output.decode())
        self.assertIn(b"waiting up to 10 s for 10 pushes in flight", process.output)
        self.assertIn(b"Sylk Pushserver stopped", process.output)

    @defer.inlineCallbacks
    def test_second_sigterm_while_draining_is_noted_not_an_error(self):
        # systemd and operators send SIGTERM again when a stop takes a while
        process, transport, url = yield self.start(delay=1.0, drain_timeout=10)
        calls = [self.push(url, i) for i in range(3)]
        yield self.in_flight(url, 3)
        transport.signalProcess("TERM")
        yield self.wait_output(process, b"waiting up to 10 s")
        transport.signalProcess("TERM")
        answers = yield defer.gatherResults(calls)
        self.assertEqual([code for code, _, _ in answers], [200] * 3)
        exit_code = yield process.ended
        self.assertEqual(exit_code, 0, process.output.decode())
        self.assertIn(b"already stopping", process.output)
        self.assertNotIn(b"ReactorNotRunning", process.output)
        self.assertNotIn(b"CRITICAL", process.output)

    @defer.inlineCallbacks
    def test_drain_deadline_answers_504_for_pushes_handed_over(self):
        # this custom client cannot say whether a push went out: its callers
        # must not hear "not sent" (503), which a proxy would send again
        process, transport, url = yield self.start(delay=60, drain_timeout=0.5)
        calls = [self.push(url, i) for i in range(5)]
        yield self.in_flight(url, 5)
        transport.signalProcess("INT")
        answers = yield defer.gatherResults(calls)
        self.assertEqual([code for code, _, _ in answers], [504] * 5)
        self.assertIn("sent, no answer from the push service before shutdown", answers[0][1]["description"])
        exit_code = yield process.ended
        self.assertEqual(exit_code, 0, process.output.decode())
        self.assertIn(b"drain deadline of 0.5 s passed: 0 pushes answered 503 (not sent), 5 answered 504",
                      process.output)


class DrainAnswerTests(unittest.TestCase):
    """At the drain deadline the real Apple client tells "not sent" (503, safe
    to send again) from "sent, no answer" (504): a proxy that retries on 503
    must never ring a phone twice."""

    timeout = 30

    @defer.inlineCallbacks
    def start(self, fake_delay):
        from sylkpush.testing.fake_apns import FakeAPNs
        from tests.helpers import start_server
        from tests.test_resilience import wait_until
        self.fake = FakeAPNs(reactor, directory=os.path.abspath(self.mktemp()), delay=fake_delay)
        yield self.fake.start()
        self.addCleanup(self.fake.stop)
        self.server, url = start_server(self, self.fake.applications_ini("com.example.sylk"), find_client=None,
                                        drain_timeout=0.5)
        [app] = list(self.server.registry)
        yield wait_until(lambda: app.client.status()["state"] == "connected")
        return url + "/push", app.client

    @defer.inlineCallbacks
    def test_push_written_and_unanswered_gets_504(self):
        from tests.test_resilience import wait_until
        url, client = yield self.start(fake_delay=3.0)
        answer = post(url, wakeup(token="0a1b2c3d" * 8))
        yield wait_until(lambda: self.fake.requests_received == 1)
        yield self.server.stopService()
        code, body, _ = yield answer
        self.assertEqual(code, 504)
        self.assertEqual(body["description"],
                         "push notification failed: sent, no answer from the push service before shutdown")
        self.assertEqual(client.status()["in_flight"], 0)

    @defer.inlineCallbacks
    def test_push_never_sent_gets_503(self):
        from tests.test_resilience import wait_until
        url, client = yield self.start(fake_delay=0)
        yield self.fake.stop()
        yield wait_until(lambda: client.status()["state"] != "connected")
        answer = post(url, wakeup(token="0a1b2c3d" * 8))
        yield wait_until(lambda: client.status()["queued"] == 1)
        yield self.server.stopService()
        code, body, _ = yield answer
        self.assertEqual(code, 503)
        self.assertTrue(body["description"].startswith("push notification failed: not sent before shutdown"),
                        body["description"])
        self.assertEqual(self.fake.requests_received, 0)
