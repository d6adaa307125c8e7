"""Shared test tools: config directories, a recording push client, HTTP calls."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from typing import Any, Dict, List, Optional, Tuple

import treq
from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred, succeed

from sylkpush.config import load_settings
from sylkpush.pns.base import OutgoingPush, PushClient, PushResult
from sylkpush.service import PushServer

SYLK_APPLE = """
[sylk-ios]
app_id = com.example.sylk
app_type = sylk
app_platform = apple
"""
SYLK_FIREBASE = """
[sylk-android]
app_id = com.example.sylk
app_type = sylk
app_platform = firebase
"""
LINPHONE_APPLE = """
[linphone-ios]
app_id = org.linphone.phone
app_type = linphone
app_platform = ios
"""


class RecordingClient(PushClient):
    """A push-client double: records every push and answers as scripted.

    ``answers`` maps a token to a PushResult or to a Deferred to fire later;
    any other token gets 200.
    """

    instances: List["RecordingClient"] = []

    def __init__(self, app: Any, reactor: Any) -> None:
        super().__init__(app, reactor)
        self.sent: List[OutgoingPush] = []
        self.answers: Dict[str, Any] = {}
        self.started = self.stopped = False
        RecordingClient.instances.append(self)

    def start(self) -> None:
        self.started = True

    def stop(self):
        self.stopped = True
        return succeed(None)

    def send(self, push: OutgoingPush) -> Deferred:
        self.sent.append(push)
        answer = self.answers.get(push.token)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, Deferred):
            return answer
        return succeed(answer or PushResult(200, "OK", f"https://push.test/{push.token}", {"id": "1"}))


def recording_client_class(platform: str, extra_dir: str) -> type:
    return RecordingClient


def make_config_dir(applications: str, general: str = "") -> str:
    """A fresh config directory with the two files."""
    directory = tempfile.mkdtemp(prefix="sylkpush-test-")
    with open(os.path.join(directory, "applications.ini"), "w") as stream:
        stream.write(applications)
    if general:
        with open(os.path.join(directory, "general.ini"), "w") as stream:
            stream.write(general)
    return directory


def start_server(testcase: Any, applications: str, general: str = "",
                 find_client: Any = recording_client_class, **options: Any) -> Tuple[PushServer, str]:
    """Start a PushServer on 127.0.0.1 and a free port; stopped at cleanup.

    ``find_client`` None means the real Apple and Firebase clients;
    ``options`` go to PushServer (``drain_timeout``, ``watch_interval``, ...).
    """
    directory = make_config_dir(applications, general)
    settings = load_settings(directory, host="127.0.0.1", port=0)
    if "spool_dir" not in general:  # never the system's /var/spool
        settings = dataclasses.replace(settings, spool_dir=os.path.join(directory, "spool"))
    if find_client is not None:  # None: the real push-service clients
        options["find_client"] = find_client
    server = PushServer(settings, reactor, **options)
    server.startService()
    testcase.addCleanup(lambda: server.running and server.stopService())
    address = server.port.getHost()
    scheme = "https" if settings.tls_certificate else "http"
    return server, f"{scheme}://127.0.0.1:{address.port}"


def overridden(body: Dict[str, Any], overrides: Dict[str, Any]) -> Dict[str, Any]:
    """``body`` with ``overrides`` (``_`` in names meaning ``-``; None removes the key)."""
    for key, value in overrides.items():
        key = key.replace("_", "-")
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def wakeup(**overrides: Any) -> Dict[str, Any]:
    """A valid sylk incoming call for com.example.sylk on Apple."""
    return overridden({
        "app-id": "com.example.sylk", "platform": "apple", "token": "a1b2c3d4",
        "device-id": "dev-1", "call-id": "call-1@example.com", "from": "alice@example.com",
        "from-display-name": "Alice", "to": "bob@example.com", "media-type": "audio",
        "event": "incoming_session", "silent": True,
    }, overrides)


def keys_file(*lines: str) -> str:
    """A file of API keys (``name key`` lines) for ``[api] keys_file``; its path."""
    path = os.path.join(tempfile.mkdtemp(prefix="sylkpush-keys-"), "api-keys")
    with open(path, "w") as stream:
        stream.write("".join(line + "\n" for line in lines))
    return path


@defer.inlineCallbacks
def post(url: str, body: Any, raw: Optional[bytes] = None, method: str = "POST",
         headers: Optional[Dict[bytes, List[bytes]]] = None, **kwargs: Any):
    """Send a request (``headers`` added to its JSON content type); returns
    (status, parsed JSON or text, response)."""
    data = raw if raw is not None else json.dumps(body).encode("utf-8")
    response = yield treq.request(method, url, data=data if method not in ("GET", "HEAD") else None,
                                  headers={b"content-type": [b"application/json"], **(headers or {})},
                                  persistent=False, **kwargs)
    content = yield response.content()
    try:
        parsed = json.loads(content)
    except ValueError:
        parsed = content.decode("utf-8", "replace")
    return response.code, parsed, response
