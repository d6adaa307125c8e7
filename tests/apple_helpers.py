"""Shared pieces of the Apple client tests: pushes and a client wired to a fake APNs."""

from __future__ import annotations

from typing import Any, Dict, Optional

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks

from sylkpush.pns.apple import AppleClient
from sylkpush.pns.base import OutgoingPush
from sylkpush.testing.fake_apns import FakeAPNs

TOKEN = "0123456789abcdef" * 4
TOPIC = "com.example.fake"


def make_push(clock: Any, token: str = TOKEN, request_id: str = "incoming_session-app-call1",
              deadline_in: float = 10.0, headers: Optional[Dict[str, str]] = None,
              payload: Optional[Dict[str, Any]] = None, voip: bool = False) -> OutgoingPush:
    """A push as the dispatcher would hand it over."""
    rendered = {"apns-topic": TOPIC, "apns-push-type": "voip" if voip else "alert",
                "apns-priority": "10", "apns-expiration": str(int(clock.seconds()) + 120)}
    if headers:
        rendered.update(headers)
    return OutgoingPush(request_id=request_id, token=token, headers=rendered,
                        payload=payload if payload is not None else {"event": "incoming_session"},
                        deadline=clock.seconds() + deadline_in, voip=voip)


class FakeAPNsMixin:
    """setUp starts a fake APNs and an AppleClient with quick timings; cleanup stops both."""

    auth = "certificate"
    fake_options: Dict[str, Any] = {}

    @inlineCallbacks
    def setUp(self):
        self.fake = FakeAPNs(reactor, directory=self.mktemp(), **self.fake_options)
        yield self.fake.start()
        self.addCleanup(self.fake.stop)
        self.client = self.new_client()

    def new_client(self, auth: Optional[str] = None, **kwargs: Any) -> AppleClient:
        client = AppleClient(self.fake.app_config(auth=auth or self.auth), reactor, **kwargs)
        # keep the real schedule's shape, at a pace fit for tests
        client.reconnect_initial = 0.05
        client.reconnect_max = 0.2
        client.retry_initial = 0.02
        client.retry_max = 0.1
        client.start()
        self.addCleanup(client.stop)
        return client

    def push(self, **kwargs: Any) -> OutgoingPush:
        return make_push(reactor, **kwargs)
