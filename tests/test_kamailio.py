"""config/kamailio.cfg driven by SIPp: a real SIP proxy waking a device through the daemon.

Kamailio runs on loopback with the shipped configuration (ports set with
``-A`` defines), SIPp user agents register with RFC 8599 push parameters
and call, and the fake APNs shows what reached Apple.  Skipped when
Kamailio, its modules or SIPp are not installed (``.ci/run`` installs
them: ``make sip-deps``).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
from typing import List, Optional

from twisted.internet import defer, protocol, reactor, task, utils
from twisted.trial import unittest

from sylkpush.applications.base import session_id
from sylkpush.testing.fake_apns import FakeAPNs
from tests.helpers import start_server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "config", "kamailio.cfg")
SCENARIOS = os.path.join(ROOT, "tests", "sipp")
#: where Debian (multiarch) and a source build put Kamailio's modules
MODULE_DIRS = ("/usr/lib/*/kamailio/modules", "/usr/lib/kamailio/modules", "/usr/local/lib*/kamailio/modules")
MODULES = ("http_client", "jansson", "async", "mqueue", "registrar", "usrloc", "tm")
TOKEN = "0123456789abcdef" * 4
BUNDLE = "com.example.sylk"
PN_PARAM = f"DEF123GHIJ.{BUNDLE}.voip"
#: SIPp's -cid_str, and the Call-ID of its first call
CALL_ID_FORMAT = "call-%u-kamailio-test"
CALL_ID = "call-1-kamailio-test"
REASON = "Call completed elsewhere"
#: bounds every SIPp run; the test's own timeout bounds the rest
SIPP_TIMEOUT = "20s"


def missing_tools() -> Optional[str]:
    """Why the test cannot run here, or None."""
    for program in ("kamailio", "sipp"):
        if not shutil.which(program):
            return f"{program} is not installed (make sip-deps installs Kamailio and SIPp)"
    for module in MODULES:
        if not any(glob.glob(os.path.join(directory, f"{module}.so")) for directory in MODULE_DIRS):
            return f"Kamailio module {module} is not installed (make sip-deps)"
    return None


def free_udp_port() -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


class Kamailio(protocol.ProcessProtocol):
    """A Kamailio process whose log lines a test can wait for."""

    def __init__(self) -> None:
        self.output = b""
        self.ended: defer.Deferred = defer.Deferred()
        self._waiting: List[tuple] = []

    def outReceived(self, data: bytes) -> None:
        self.output += data
        for pattern, waiter in list(self._waiting):
            if re.search(pattern, self.output):
                self._waiting.remove((pattern, waiter))
                waiter.callback(None)

    errReceived = outReceived

    def wait_for(self, pattern: bytes) -> defer.Deferred:
        waiter: defer.Deferred = defer.Deferred()
        self._waiting.append((pattern, waiter))
        self.outReceived(b"")
        return waiter

    def processEnded(self, reason) -> None:
        for _, waiter in self._waiting:
            waiter.errback(AssertionError("kamailio ended:\n" + self.output.decode(errors="replace")))
        self._waiting = []
        self.ended.callback(reason.value.exitCode)


class KamailioSippTests(unittest.TestCase):

    skip = missing_tools()
    timeout = 90

    @defer.inlineCallbacks
    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.fake = FakeAPNs(reactor, directory=os.path.join(self.directory, "apns"))
        yield self.fake.start()
        self.addCleanup(self.fake.stop)
        _, url = start_server(self, self.fake.applications_ini(BUNDLE, "sylk", auth="certificate", voip=True),
                              find_client=None)
        self.sip_port = free_udp_port()
        self.kamailio = self.start_kamailio(url)

    def start_kamailio(self, push_url: str) -> Kamailio:
        process = Kamailio()
        args = ["kamailio", "-f", CONFIG, "-DD", "-E", "-m", "64", "-M", "8",
                "-Y", self.directory, "-w", self.directory,
                "-A", f"SIP_LISTEN=udp:127.0.0.1:{self.sip_port}",
                "-A", f'PUSHSERVER="pushserver=>{push_url}"']
        transport = reactor.spawnProcess(process, shutil.which("kamailio"), args, env=dict(os.environ),
                                         path=self.directory)

        def stop() -> Optional[defer.Deferred]:
            if process.ended.called:
                return None
            transport.signalProcess("TERM")
            return process.ended
        self.addCleanup(stop)
        return process

    @defer.inlineCallbacks
    def sipp(self, scenario: str, **keys: str):
        """Run one SIPp scenario against Kamailio; fails the test unless it succeeds."""
        args = ["-sf", os.path.join(SCENARIOS, scenario), "-m", "1", "-i", "127.0.0.1",
                "-p", str(free_udp_port()), "-cid_str", CALL_ID_FORMAT,
                "-timeout", SIPP_TIMEOUT, "-timeout_error", "-nostdin", "-trace_err"]
        for name, value in dict(keys, domain="example.com").items():
            args += ["-key", name, value]
        args.append(f"127.0.0.1:{self.sip_port}")
        out, err, code = yield utils.getProcessOutputAndValue(shutil.which("sipp"), args, env=dict(os.environ),
                                                              path=self.directory)
        if code != 0:
            errors = "".join(open(path, errors="replace").read()
                             for path in glob.glob(os.path.join(self.directory, "*_errors.log")))
            self.fail(f"sipp {scenario} exited {code}:\n{err.decode(errors='replace')}\n{errors}\n"
                      f"kamailio:\n{self.kamailio.output.decode(errors='replace')}")

    def register(self):
        return self.sipp("register.xml", user="bob", contact_port=str(free_udp_port()),
                         provider="apns", prid=TOKEN, param=PN_PARAM)

    @defer.inlineCallbacks
    def delivered(self, count: int):
        """The fake's notifications once it has ``count`` (Kamailio posts after SIPp is done)."""
        while len(self.fake.notifications) < count:
            yield task.deferLater(reactor, 0.05, lambda: None)
        return list(self.fake.notifications)

    @defer.inlineCallbacks
    def test_call_then_cancel_wake_the_device(self):
        yield self.register()
        yield self.sipp("call-cancel.xml", callee="bob", reason=REASON, media="audio")
        call, cancel = yield self.delivered(2)

        self.assertEqual((call.token, call.auth), (TOKEN, "certificate"))
        self.assertEqual((call.headers["apns-push-type"], call.headers["apns-topic"]),
                         ("voip", f"{BUNDLE}.voip"))
        self.assertEqual(call.payload, {
            "event": "incoming_session", "call-id": CALL_ID, "session-id": session_id(CALL_ID),
            "media-type": "audio", "from_uri": "alice@example.com", "from_display_name": "Alice Liddell",
            "to_uri": "bob@example.com"})

        self.assertEqual(cancel.token, TOKEN)
        self.assertEqual((cancel.headers["apns-push-type"], cancel.headers["apns-topic"]),
                         ("background", BUNDLE))
        self.assertEqual(cancel.payload, {
            "event": "cancel", "call-id": CALL_ID, "session-id": session_id(CALL_ID), "reason": REASON,
            "aps": {"content-available": 1}})
        yield self.kamailio.wait_for(rb"push: cancel for sip:bob@example.com \(" + CALL_ID.encode() + rb"\) delivered")

    @defer.inlineCallbacks
    def test_video_offer_is_a_video_call(self):
        yield self.register()
        yield self.sipp("call-cancel.xml", callee="bob", reason=REASON, media="video")
        call, _ = yield self.delivered(2)
        self.assertEqual(call.payload["media-type"], "video")

    @defer.inlineCallbacks
    def test_token_refused_with_410_removes_the_contact(self):
        self.fake.answer_token(TOKEN, 410, "Unregistered")
        yield self.register()
        yield self.sipp("call-cancel.xml", callee="bob", reason=REASON, media="audio")
        yield self.kamailio.wait_for(rb"token no longer valid, contact removed")
        # bob has no contact left: the next call is answered 404
        yield self.sipp("call-not-found.xml", callee="bob")
        self.assertEqual(self.fake.notifications, [])
        self.assertGreaterEqual(self.fake.answers[410], 1)
