"""Shared set-up for the Firebase tests: a started FakeFCM and clients pointed at it."""

from __future__ import annotations

import itertools
import os
from typing import Any, Dict, Optional

from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.internet import defer, reactor, task
from twisted.internet.task import Clock

from sylkpush.config import AppConfig
from sylkpush.pns.base import OutgoingPush
from sylkpush.pns.firebase import FirebaseClient
from sylkpush.testing.fake_fcm import FakeFCM

_ids = itertools.count(1)
_service_key = []


def service_key():
    """One RSA key per test run: generating 2048-bit keys costs 0.2 s each."""
    if not _service_key:
        _service_key.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return _service_key[0]


def app_for(fake: FakeFCM, legacy: bool = False, **changes: Any) -> AppConfig:
    """An AppConfig for an application served by ``fake``."""
    values: Dict[str, Any] = dict(section="fcm-test", app_id="com.example.fcm", app_type="sylk",
                                  platform="firebase", tls_ca_file=fake.ca_file)
    if legacy:
        values.update(firebase_push_url=fake.legacy_url, firebase_authorization_key=fake.legacy_key)
    else:
        values.update(firebase_push_url=fake.push_url, firebase_authorization_file=fake.service_account_file)
    values.update(changes)
    return AppConfig(**values)


def v1_payload(token: str, **data: str) -> Dict[str, Any]:
    return {"message": {"token": token, "data": dict({"event": "incoming_session", "call-id": "c1"}, **data),
                        "android": {"priority": "high", "ttl": "60s"}}}


def legacy_payload(token: str) -> Dict[str, Any]:
    return {"to": token, "time_to_live": 2419199, "priority": "high",
            "data": {"call-id": "c1", "sip-from": "alice@example.com", "loc-key": "", "loc-args": "alice"}}


def push_for(token: str, clock: Any, budget: float = 64.0, legacy: bool = False,
             payload: Optional[Dict[str, Any]] = None) -> OutgoingPush:
    """An OutgoingPush to ``token`` whose deadline is ``budget`` seconds from now on ``clock``."""
    return OutgoingPush(request_id=f"incoming_session-com.example.fcm-call{next(_ids)}", token=token,
                        headers={}, payload=payload or (legacy_payload(token) if legacy else v1_payload(token)),
                        deadline=clock.seconds() + budget)


@defer.inlineCallbacks
def wait_until(predicate, limit: float = 10.0):
    """Let the real reactor run until ``predicate()`` holds (fails after ``limit`` seconds)."""
    waited = 0.0
    while not predicate():
        if waited > limit:
            raise AssertionError(f"condition not reached within {limit} s")
        yield task.deferLater(reactor, 0.002, lambda: None)
        waited += 0.002


class FakeFCMMixin:
    """For trial TestCases: ``self.fake`` is started; ``client()`` builds a stopped-at-cleanup client."""

    fake_delay = 0.0
    token_lifetime = 3600.0

    @defer.inlineCallbacks
    def setUp(self):
        directory = self.mktemp()
        os.makedirs(directory)
        self.fake = FakeFCM(reactor, directory, project="sylk-test", delay=self.fake_delay,
                            token_lifetime=self.token_lifetime, service_key=service_key())
        yield self.fake.start()
        self.addCleanup(self.fake.stop)

    def client(self, legacy: bool = False, clock: Optional[Clock] = None, app: Optional[AppConfig] = None,
               **options: Any) -> FirebaseClient:
        client = FirebaseClient(app or app_for(self.fake, legacy=legacy), reactor, clock=clock, **options)
        client.start()
        self.addCleanup(client.stop)
        return client
