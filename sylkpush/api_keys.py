"""API keys: ``[api] keys_file`` in general.ini, one ``name key`` a line.

When a keys file is configured, every ``/push`` and ``/v2`` request needs
``Authorization: Bearer <key>``.  Keys are compared in constant time (their
SHA-256 digests, so not even their length shows) and never logged; the name
of the key a request used is.  The file is read again on SIGHUP; a file that
became unusable leaves the previous keys in force.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Optional, Tuple

from sylkpush.config import ConfigError

log = logging.getLogger(__name__)

#: shorter keys are refused: they could be guessed
MIN_KEY_LENGTH = 16


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def parse_keys(text: str, path: str) -> Tuple[Tuple[str, bytes], ...]:
    """(name, digest of the key) for each line; ConfigError naming the
    line (never showing a key) for anything else."""
    keys = []
    names = set()
    digests = set()
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 2:
            raise ConfigError(f"{path} line {number}: expected 'name key'")
        name, key = fields
        if len(key) < MIN_KEY_LENGTH:
            raise ConfigError(f"{path} line {number}: the key of {name} is shorter than "
                                  f"{MIN_KEY_LENGTH} characters")
        digest = _digest(key.encode("utf-8"))
        if name in names:
            raise ConfigError(f"{path} line {number}: {name} is named twice")
        if digest in digests:
            raise ConfigError(f"{path} line {number}: the key of {name} is also another name's key")
        names.add(name)
        digests.add(digest)
        keys.append((name, digest))
    if not keys:
        raise ConfigError(f"{path} holds no key (one 'name key' a line)")
    return tuple(keys)


def read_keys(path: str) -> Tuple[Tuple[str, bytes], ...]:
    """The keys of the file at ``path``; ConfigError when it is unusable."""
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read keys_file {path}: {exc}") from None
    return parse_keys(text, path)


class ApiKeys:
    """The keys in force; :meth:`authenticate` checks an Authorization header."""

    def __init__(self, path: str, keys: Tuple[Tuple[str, bytes], ...]) -> None:
        self.path = path
        self.keys = keys

    @classmethod
    def from_file(cls, path: str) -> "ApiKeys":
        return cls(path, read_keys(path))

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(name for name, _ in self.keys)

    def replace(self, keys: Tuple[Tuple[str, bytes], ...]) -> None:
        """Put freshly read keys in force (one assignment)."""
        self.keys = keys

    def authenticate(self, authorization: Optional[bytes]) -> Optional[str]:
        """The name of the key an ``Authorization: Bearer`` header carries, or None."""
        if not authorization:
            return None
        scheme, _, given = authorization.strip().partition(b" ")
        if scheme.lower() != b"bearer" or not given.strip():
            return None
        digest = _digest(given.strip())
        found = None
        for name, key in self.keys:  # every key is compared: the time does not say which one matched
            if hmac.compare_digest(digest, key) and found is None:
                found = name
        return found
