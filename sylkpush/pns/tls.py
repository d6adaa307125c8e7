"""TLS for connections to push services: always verified, TLS 1.2 or newer.

The peer's certificate and host name are checked against the system CA store
plus an optional per-application CA bundle (``tls_ca_file``), which is how
tests and private deployments reach their own endpoints.  Verification is
never switched off.
"""

from __future__ import annotations

from typing import Optional, Sequence

from OpenSSL import crypto
from twisted.internet import ssl
from twisted.internet._sslverify import IOpenSSLTrustRoot  # not re-exported by twisted.internet.ssl
from zope.interface import implementer

from sylkpush.config import ConfigError, read_file


def load_ca_bundle(path: str) -> list:
    """Every certificate of the PEM bundle at ``path`` (ConfigError when none)."""
    data = read_file(path)
    marker = b"-----END CERTIFICATE-----"
    certs = []
    for chunk in data.split(marker)[:-1]:
        try:
            certs.append(crypto.load_certificate(crypto.FILETYPE_PEM, chunk + marker))
        except crypto.Error:
            raise ConfigError(f"{path} holds a certificate that cannot be parsed") from None
    if not certs:
        raise ConfigError(f"{path} holds no PEM certificate")
    return certs


@implementer(IOpenSSLTrustRoot)
class SystemAndExtraTrust:
    """The system CA store plus the certificates of an extra bundle."""

    def __init__(self, extra: Sequence = ()) -> None:
        self.extra = list(extra)

    def _addCACertsToContext(self, context) -> None:  # noqa: N802 (Twisted's interface name)
        context.set_default_verify_paths()
        store = context.get_cert_store()
        for cert in self.extra:
            store.add_cert(cert)


def load_client_certificate(cert_path: str, key_path: str = "") -> ssl.PrivateCertificate:
    """A client certificate and its key from PEM files (the key may be in the cert file)."""
    cert_data = read_file(cert_path)
    key_data = read_file(key_path) if key_path and key_path != cert_path else cert_data
    try:
        return ssl.PrivateCertificate.loadPEM(cert_data + b"\n" + key_data)
    except Exception as exc:  # pyOpenSSL raises several types for bad PEM
        raise ConfigError(f"cannot load the certificate {cert_path} with its key: {exc}") from None


def client_tls_options(hostname: str, ca_file: str = "",
                       client_certificate: Optional[ssl.PrivateCertificate] = None,
                       alpn: Sequence[bytes] = (b"h2",)):
    """A connection creator for ``hostname`` (verified, TLS >= 1.2, ALPN ``alpn``)."""
    trust = SystemAndExtraTrust(load_ca_bundle(ca_file) if ca_file else ())
    return ssl.optionsForClientTLS(
        hostname,
        trustRoot=trust,
        clientCertificate=client_certificate,
        acceptableProtocols=list(alpn) or None,
        extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_2},
    )
