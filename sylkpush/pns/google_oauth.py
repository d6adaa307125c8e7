"""OAuth2 access tokens for a Google service account, without blocking the reactor.

google-auth loads the service-account key and signs the JWT assertion (RS256);
the signing runs in the reactor's thread pool and the token request itself is
an asynchronous HTTP POST (any treq-like client), so neither blocks the
reactor.  Tokens are cached and renewed ahead of their expiry, measured on the
clock the caller passes in (a ``twisted.internet.task.Clock`` in tests); only
one request to the token endpoint is ever in flight.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import urlencode

from google.auth import jwt as google_jwt
from google.oauth2 import service_account
from twisted.internet.defer import Deferred, CancelledError
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

from sylkpush.config import ConfigError

log = logging.getLogger(__name__)

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: lifetime of the signed assertion; Google accepts at most one hour
ASSERTION_LIFETIME = 3600
#: renew this long before the access token expires (shorter for short-lived tokens)
REFRESH_MARGIN = 300.0
#: give up on one token request after this long
TOKEN_REQUEST_TIMEOUT = 20.0
#: while the current token is still valid, a failed renewal is retried after this long
BACKGROUND_RETRY = 10.0


class TokenError(Exception):
    """No access token could be obtained; ``permanent`` when retrying cannot help
    (the token endpoint refused the service account)."""

    def __init__(self, reason: str, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


@dataclass(frozen=True)
class ServiceAccount:
    """The parts of a service-account JSON file the client needs."""

    path: str
    client_email: str
    token_uri: str
    project_id: str
    private_key_id: str
    credentials: Any  # google.oauth2.service_account.Credentials


def load_service_account(path: str, scopes=(FCM_SCOPE,)) -> ServiceAccount:
    """Read and check a service-account JSON file (ConfigError with the reason)."""
    try:
        with open(path, encoding="utf-8") as stream:
            info = json.load(stream)
    except OSError as exc:
        raise ConfigError(f"cannot read the service account file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"the service account file {path} is not JSON: {exc}") from None
    if not isinstance(info, dict):
        raise ConfigError(f"the service account file {path} does not hold a JSON object")
    if info.get("type", "service_account") != "service_account":
        raise ConfigError(f"{path} is a {info.get('type')!r} credential, not a service account")
    missing = [key for key in ("client_email", "token_uri", "private_key") if not info.get(key)]
    if missing:
        raise ConfigError(f"the service account file {path} lacks {', '.join(missing)}")
    if not str(info["token_uri"]).startswith(("https://", "http://")):
        raise ConfigError(f"the service account file {path} has token_uri {info['token_uri']!r}, not an URL")
    try:
        credentials = service_account.Credentials.from_service_account_info(info, scopes=list(scopes))
    except Exception as exc:  # google-auth raises ValueError, cryptography others
        # never show the key material: only the exception type and its first line
        detail = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise ConfigError(f"the private key in {path} cannot be used: {detail}") from None
    return ServiceAccount(path=path, client_email=info["client_email"], token_uri=info["token_uri"],
                          project_id=str(info.get("project_id") or ""),
                          private_key_id=str(info.get("private_key_id") or ""),
                          credentials=credentials)


def make_assertion(account: ServiceAccount, now: float, scopes=(FCM_SCOPE,)) -> bytes:
    """The signed RS256 JWT that the token endpoint exchanges for an access token."""
    payload = {
        "iss": account.client_email,
        "aud": account.token_uri,
        "scope": " ".join(scopes),
        "iat": int(now),
        "exp": int(now) + ASSERTION_LIFETIME,
    }
    return google_jwt.encode(account.credentials.signer, payload)


class AccessTokenSource:
    """Hands out a valid access token for one service account.

    ``http`` is a treq ``HTTPClient`` (or anything with the same ``post``);
    ``clock`` measures token lifetimes; ``wall_time`` dates the JWT assertion
    (the token endpoint checks it against real time).
    """

    def __init__(self, account: ServiceAccount, http: Any, reactor: Any, clock: Any = None,
                 wall_time: Callable[[], float] = time.time, scopes=(FCM_SCOPE,)) -> None:
        self.account = account
        self.http = http
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.wall_time = wall_time
        self.scopes = tuple(scopes)
        self.refreshes = 0
        self._token: Optional[str] = None
        self._expires_at = 0.0
        self._margin = REFRESH_MARGIN
        self._fetching: Optional[Deferred] = None
        self._waiters: List[Deferred] = []
        self._stopped = False
        #: after a failed background renewal, wait before trying again
        self._quiet_until = 0.0

    @property
    def fetching(self) -> bool:
        return self._fetching is not None

    def current(self) -> Optional[str]:
        """The token when one is valid now (renewed in the background when it
        nears its expiry), else None: :meth:`get` one."""
        now = self.clock.seconds()
        if self._token is None or now >= self._expires_at:
            return None
        if now >= self._expires_at - self._margin and now >= self._quiet_until:
            # still valid: use it and renew in the background
            self._start_fetch()
        return self._token

    def get(self) -> "Deferred[str]":
        """A Deferred firing with a valid token, or failing with TokenError."""
        token = self.current()
        if token is not None:
            d: Deferred = Deferred()
            d.callback(token)
            return d
        waiter: Deferred = Deferred()
        self._waiters.append(waiter)
        self._start_fetch()
        return waiter

    def invalidate(self, token: str) -> None:
        """The push service refused ``token``: the next get() fetches a new one.

        Only the current token is dropped, so many concurrent 401s for the same
        token cause a single refresh.
        """
        if token == self._token:
            self._token = None
            self._expires_at = 0.0

    def stop(self) -> None:
        """Cancel a token request in flight; waiters get TokenError."""
        self._stopped = True
        if self._fetching is not None:
            self._fetching.cancel()

    def _start_fetch(self) -> None:
        if self._fetching is not None or self._stopped:
            if self._stopped:
                self._release(Failure(TokenError("the client is stopping")))
            return
        self.refreshes += 1
        log.debug("requesting an access token for %s from %s", self.account.client_email, self.account.token_uri)
        fetching = self._fetch()
        self._fetching = fetching
        fetching.addBoth(self._fetched)

    def _fetch(self) -> Deferred:
        pool = self.reactor.getThreadPool()
        d = deferToThreadPool(self.reactor, pool, make_assertion, self.account, self.wall_time(), self.scopes)
        d.addCallback(self._post)
        timer = self.clock.callLater(TOKEN_REQUEST_TIMEOUT, d.cancel)

        def done(result):
            if timer.active():
                timer.cancel()
            return result
        return d.addBoth(done)

    def _post(self, assertion: bytes) -> Deferred:
        body = urlencode({"grant_type": JWT_BEARER_GRANT, "assertion": assertion.decode("ascii")}).encode("ascii")
        d = self.http.post(self.account.token_uri, data=body, headers={
            b"Content-Type": [b"application/x-www-form-urlencoded"],
            b"Accept": [b"application/json"],
        })
        d.addCallback(self._read)
        return d

    def _read(self, response: Any) -> Deferred:
        d = response.content()
        d.addCallback(self._parse, response.code)
        return d

    def _parse(self, content: bytes, code: int) -> Dict[str, Any]:
        try:
            answer = json.loads(content.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            answer = None
        if not isinstance(answer, dict):
            answer = {}
        if code != 200:
            error = answer.get("error") or f"HTTP {code}"
            if isinstance(error, dict):  # some endpoints nest it
                error = error.get("status") or error.get("message") or f"HTTP {code}"
            text = answer.get("error_description") or ""
            reason = f"{error} - {text}" if text else str(error)
            if 400 <= code < 500 and code != 429:
                # the endpoint refused the assertion; retrying will not help
                raise TokenError(f"{self.account.token_uri} refused the service account: {reason}", permanent=True)
            raise TokenError(f"{self.account.token_uri} answered {code}: {reason}")
        token = answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise TokenError(f"{self.account.token_uri} answered without an access_token")
        try:
            expires_in = float(answer.get("expires_in", 3600))
        except (TypeError, ValueError):
            expires_in = 3600.0
        return {"token": token, "expires_in": expires_in}

    def _fetched(self, result: Any) -> None:
        self._fetching = None
        if isinstance(result, Failure):
            if result.check(TokenError):
                failure = result
            elif result.check(CancelledError):
                failure = Failure(TokenError(f"no answer from {self.account.token_uri}"
                                             if not self._stopped else "the client is stopping"))
            else:
                failure = Failure(TokenError(f"token request to {self.account.token_uri} failed: "
                                             f"{result.getErrorMessage() or result.type.__name__}"))
            log.log(logging.INFO if self._stopped else logging.WARNING, "no access token for %s: %s",
                    self.account.client_email, failure.value.reason)
            self._quiet_until = self.clock.seconds() + BACKGROUND_RETRY
            self._release(failure)
            return
        now = self.clock.seconds()
        self._token = result["token"]
        lifetime = max(0.0, result["expires_in"])
        self._expires_at = now + lifetime
        # a short-lived token is renewed in its last quarter instead of 5 minutes early
        self._margin = min(REFRESH_MARGIN, lifetime / 4)
        log.info("access token for %s obtained, valid for %d s", self.account.client_email, lifetime)
        self._release(self._token)

    def _release(self, result: Any) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)
