"""Throw-away PKI for the fakes: a CA, server certificates and client certificates.

Nothing here is committed to the repository: tests and demos call
:func:`make_pki` and get fresh keys every time.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


#: days the certificates are valid: beyond the daemon's 30-day expiry warnings
VALID_DAYS = 365


def new_ec_key() -> ec.EllipticCurvePrivateKey:
    """A P-256 key, the kind Apple issues as .p8 and uses for ES256."""
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return _pem_key(key)


def public_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass
class Issued:
    """A certificate and its key, both PEM."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def combined_pem(self) -> bytes:
        return self.cert_pem + self.key_pem

    def write(self, directory: str, name: str, combined: bool = False) -> Tuple[str, str]:
        """Write ``name``.crt and ``name``.key (or one ``name``.pem); returns the paths."""
        if combined:
            path = os.path.join(directory, name + ".pem")
            with open(path, "wb") as stream:
                stream.write(self.combined_pem)
            return path, path
        cert_path = os.path.join(directory, name + ".crt")
        key_path = os.path.join(directory, name + ".key")
        with open(cert_path, "wb") as stream:
            stream.write(self.cert_pem)
        with open(key_path, "wb") as stream:
            stream.write(self.key_pem)
        return cert_path, key_path


class CertificateAuthority:
    """A CA that signs server and client certificates for loopback tests."""

    def __init__(self, name: str = "Sylk Pushserver Test CA") -> None:
        self.key = new_ec_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.utcnow()
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        return _pem_cert(self.cert)

    def write(self, directory: str, name: str = "ca") -> str:
        path = os.path.join(directory, name + ".crt")
        with open(path, "wb") as stream:
            stream.write(self.cert_pem)
        return path

    def issue(self, common_name: str, server_names: Sequence[str] = (),
              client: bool = False, uid: Optional[str] = None, days: float = VALID_DAYS) -> Issued:
        """Sign a certificate for a server (``server_names``) or a client,
        valid for ``days`` from now (expired ``-days`` ago when negative)."""
        key = new_ec_key()
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        if uid:
            # Apple puts the bundle id of a push certificate in the UID attribute
            attributes.insert(0, x509.NameAttribute(NameOID.USER_ID, uid))
        now = datetime.datetime.utcnow()
        not_after = now + datetime.timedelta(days=days)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes)).issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(min(now, not_after) - datetime.timedelta(days=1))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False)
        )
        if server_names:
            alt: List[x509.GeneralName] = []
            for name in server_names:
                try:
                    alt.append(x509.IPAddress(ipaddress.ip_address(name)))
                except ValueError:
                    alt.append(x509.DNSName(name))
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(_pem_cert(cert), _pem_key(key))

    def server(self, names: Sequence[str] = ("localhost", "127.0.0.1", "::1")) -> Issued:
        return self.issue(names[0], server_names=names)

    def client(self, common_name: str, uid: Optional[str] = None, days: float = VALID_DAYS) -> Issued:
        return self.issue(common_name, client=True, uid=uid, days=days)
