"""The bench's Node.js fake (scripts/bench-fake.mjs) against the daemon's own APNs and FCM clients.

Skipped where ``node`` is not on PATH.  The fake is a separate process, as in
the bench; what it delivered is read back from its control port.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import sys
from typing import List, Optional, Tuple

import h2.connection
import h2.events
from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from sylkpush.config import AppConfig
from sylkpush.pns.apple import AppleClient
from sylkpush.pns.firebase import FirebaseClient
from tests.apple_helpers import TOKEN, make_push
from tests.firebase_helpers import push_for, v1_payload

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
from bench_lib import Fake, node_fake  # noqa: E402

NO_NODE = None if shutil.which("node") else "node (Node.js) is not on PATH"


def h2_status(port: int, directory: str, path: str, headers: List[Tuple[str, str]], body: bytes,
              certificate: Optional[str] = None) -> int:
    """The status of one HTTP/2 POST to the fake, made with the h2 library on a blocking socket
    (``certificate``: the client certificate, ``<name>.crt`` and ``<name>.key`` in ``directory``)."""
    context = ssl.create_default_context(cafile=os.path.join(directory, "ca.crt"))
    context.set_alpn_protocols(["h2"])
    if certificate:
        context.load_cert_chain(os.path.join(directory, certificate + ".crt"),
                                os.path.join(directory, certificate + ".key"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        connection = h2.connection.H2Connection()
        connection.initiate_connection()
        stream_id = connection.get_next_available_stream_id()
        connection.send_headers(stream_id, [(":method", "POST"), (":scheme", "https"),
                                            (":authority", f"127.0.0.1:{port}"), (":path", path), *headers])
        connection.send_data(stream_id, body, end_stream=True)
        sock.sendall(connection.data_to_send())
        while True:
            data = sock.recv(65536)  # TLS 1.3: a refused client certificate surfaces here
            if not data:
                raise ConnectionError("closed before an answer")
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    return int(dict(event.headers)[b":status"])
            sock.sendall(connection.data_to_send())


class NodeFakeTests(unittest.TestCase):
    skip = NO_NODE

    def start(self, service: str) -> Fake:
        fake = node_fake(service, os.path.abspath(self.mktemp()), [])
        self.addCleanup(fake.stop)
        return fake

    @inlineCallbacks
    def test_apns_delivers_to_a_client_with_a_certificate_and_refuses_one_without(self):
        fake = self.start("apns")
        app = AppConfig(section="node-apns", app_id="com.example.fake", app_type="sylk", platform="apple",
                        apple_host="127.0.0.1", apple_port=fake.port,
                        tls_ca_file=os.path.join(fake.directory, "ca.crt"),
                        apple_certificate=os.path.join(fake.directory, "client.crt"),
                        apple_key=os.path.join(fake.directory, "client.key"))
        client = AppleClient(app, reactor)
        client.start()
        self.addCleanup(client.stop)
        results = yield gatherResults([client.send(make_push(reactor, payload={"event": "incoming_session",
                                                                               "call-id": f"node-{n}"}))
                                       for n in range(3)])
        self.assertEqual([result.code for result in results], [200, 200, 200])
        missing_topic = yield client.send(make_push(reactor, headers={"apns-topic": ""},
                                                    payload={"call-id": "node-no-topic"}))
        self.assertEqual((missing_topic.code, missing_topic.body), (400, {"reason": "MissingTopic"}))
        self.assertEqual(fake.delivered("node-"), {"node-0": 1, "node-1": 1, "node-2": 1})

        headers = [("apns-topic", "com.example.fake"), ("apns-push-type", "alert")]
        body = b'{"call-id": "node-raw"}'
        status = yield deferToThread(h2_status, fake.port, fake.directory, f"/3/device/{TOKEN}", headers, body,
                                     certificate="client")
        self.assertEqual(status, 200)
        with self.assertRaises(ssl.SSLError):
            yield deferToThread(h2_status, fake.port, fake.directory, f"/3/device/{TOKEN}", headers, body)
        self.assertEqual(fake.delivered("node-raw"), {"node-raw": 1})

    @inlineCallbacks
    def test_fcm_delivers_with_an_access_token_and_refuses_a_bad_one(self):
        fake = self.start("fcm")
        directory = fake.directory
        sample = open(os.path.join(directory, "fake-fcm-applications.ini")).read()
        values = dict(line.split(" = ", 1) for line in sample.splitlines() if " = " in line)
        app = AppConfig(section="node-fcm", app_id="com.example.fcm", app_type="sylk", platform="firebase",
                        tls_ca_file=values["tls_ca_file"], firebase_push_url=values["firebase_push_url"],
                        firebase_authorization_file=values["firebase_authorization_file"])
        client = FirebaseClient(app, reactor)
        client.start()
        self.addCleanup(client.stop)
        results = yield gatherResults([
            client.send(push_for(f"device-{n}", reactor, payload=v1_payload(f"device-{n}",
                                                                             **{"call-id": f"node-{n}"})))
            for n in range(3)])
        self.assertEqual([result.code for result in results], [200, 200, 200])
        self.assertEqual(client.tokens.refreshes, 1)  # its assertion was accepted once, then the token reused
        bad_token = yield client.send(push_for("bad token", reactor, payload=v1_payload("bad token")))
        self.assertEqual(bad_token.code, 410)  # FCM's INVALID_ARGUMENT about message.token: purge it
        self.assertEqual(fake.delivered("node-"), {"node-0": 1, "node-1": 1, "node-2": 1})

        path = values["firebase_push_url"].split(str(fake.port), 1)[1]
        status = yield deferToThread(h2_status, fake.port, directory, path,
                                     [("authorization", "Bearer ya29.not-issued-here")],
                                     b'{"message": {"token": "device-x", "data": {"call-id": "node-x"}}}')
        self.assertEqual(status, 401)
        self.assertEqual(fake.delivered("node-x"), {})
