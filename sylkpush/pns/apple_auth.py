"""How an Apple application proves who it is to APNs.

Certificate auth: a TLS client certificate (``apple_certificate`` with its key
in the same file or in ``apple_key``).  Token auth: an ES256 provider JWT made
with the ``.p8`` key (``apple_key``), header ``kid`` = ``key_id``, claims
``iss`` = ``team_id`` and ``iat``.  Apple wants one token reused for between 20
and 60 minutes; we make a new one after :data:`TOKEN_LIFETIME` seconds (reactor
time) or when APNs answers ``ExpiredProviderToken``.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from twisted.internet import ssl

from sylkpush.config import ConfigError, read_file
from sylkpush.pns.tls import load_client_certificate

#: seconds a provider token is used before a new one is made (Apple: 20 to 60 min)
TOKEN_LIFETIME = 40 * 60


class CertificateAuth:
    """Authentication by TLS client certificate: nothing to add to requests."""

    mode = "certificate"

    def __init__(self, certificate_path: str, key_path: str = "") -> None:
        self.client_certificate: Optional[ssl.PrivateCertificate] = load_client_certificate(
            certificate_path, key_path)

    def authorization(self) -> Optional[str]:
        return None


class TokenAuth:
    """Authentication by provider JWT, made and renewed on reactor time."""

    mode = "token"
    client_certificate: Optional[ssl.PrivateCertificate] = None

    def __init__(self, key_path: str, key_id: str, team_id: str, reactor: Any,
                 lifetime: float = TOKEN_LIFETIME) -> None:
        self.key_id = key_id
        self.team_id = team_id
        self.reactor = reactor
        self.lifetime = lifetime
        self._key = _load_signing_key(key_path)
        self._token: Optional[str] = None
        self._issued_at = 0.0
        #: how many tokens were made; for tests and status
        self.generated = 0

    def authorization(self) -> str:
        """The ``authorization`` header value (``bearer <jwt>``)."""
        return "bearer " + self.token()

    def token(self) -> str:
        """The current provider token, made anew when it is too old."""
        now = self.reactor.seconds()
        if self._token is None or now - self._issued_at >= self.lifetime:
            self._token = jwt.encode({"iss": self.team_id, "iat": int(now)}, self._key,
                                     algorithm="ES256", headers={"kid": self.key_id})
            if isinstance(self._token, bytes):  # PyJWT < 2 returned bytes
                self._token = self._token.decode("ascii")
            self._issued_at = now
            self.generated += 1
        return self._token

    def expired(self, rejected_authorization: str) -> None:
        """APNs said ``ExpiredProviderToken`` to a request sent with ``rejected_authorization``.

        Only the first of the answers to requests that carried the current
        token forces a new one; the others were sent with it too.
        """
        if self._token is not None and rejected_authorization == "bearer " + self._token:
            self._token = None


def _load_signing_key(path: str) -> ec.EllipticCurvePrivateKey:
    data = read_file(path, "apple_key")
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"apple_key {path} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigError(f"apple_key {path} is not a P-256 EC key as APNs token auth requires")
    return key


def auth_for(app: Any, reactor: Any) -> Union[CertificateAuth, TokenAuth]:
    """The authentication an Apple application's settings describe (ConfigError if none)."""
    if app.key_id or app.team_id:
        if not app.key_id:
            raise ConfigError("team_id is set but key_id is missing (token auth needs both)")
        if not app.team_id:
            raise ConfigError("key_id is set but team_id is missing (token auth needs both)")
        if not app.apple_key:
            raise ConfigError("token auth (key_id, team_id) needs apple_key, the .p8 key file")
        return TokenAuth(app.apple_key, app.key_id, app.team_id, reactor)
    if app.apple_certificate:
        return CertificateAuth(app.apple_certificate, app.apple_key)
    if app.apple_key:
        raise ConfigError("apple_key is set without apple_certificate, nor key_id and team_id "
                          "for token auth")
    raise ConfigError("neither certificate auth (apple_certificate) nor token auth "
                      "(apple_key, key_id, team_id) is configured")
