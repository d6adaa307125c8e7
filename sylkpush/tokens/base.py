"""What every token store holds and offers (the v2 API's storage).

A :class:`Device` is one row of the original server's Cassandra
``push_tokens`` table: an account (``username`` and ``domain``, its
partition key), ``device_id`` and ``app_id`` (its clustering key), and what
is needed to push to it.  A :class:`TokenStore` keeps them; every method
returns a Deferred and never blocks the reactor.  Failures are
:class:`StorageError` (answered 500) or :class:`StorageUnavailable`
(answered 503: try again later).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, TypeVar

from twisted.internet.defer import Deferred

_R = TypeVar("_R")

#: how SIP clients spell their instance id (RFC 5626 ``+sip.instance``)
URN_UUID_PREFIX = "<urn:uuid:"


class StorageError(Exception):
    """The store failed to do what was asked; the message says why."""


class StorageUnavailable(StorageError):
    """The store cannot be reached now (not opened, cluster down): retry later."""


@dataclass(frozen=True)
class Device:
    """One device of an account: a row of ``push_tokens``."""

    username: str
    domain: str
    device_id: str
    app_id: str
    device_token: str
    background_token: Optional[str]
    #: canonical platform name (``apple``, ``firebase`` or a custom one)
    platform: str
    silent: bool
    user_agent: Optional[str]

    @property
    def account(self) -> str:
        return f"{self.username}@{self.domain}"

    @property
    def key(self) -> Tuple[str, str, str, str]:
        """What makes a device unique: account, device id and application."""
        return (self.username, self.domain, self.device_id, self.app_id)


def split_account(account: str) -> Tuple[str, str]:
    """``user@domain`` as (username, domain); ValueError when it is not one.

    The first ``@`` splits, as the original server did when it wrote the
    Cassandra rows that are read back.
    """
    username, at, domain = account.partition("@")
    if not at or not username or not domain:
        raise ValueError(f"{account!r} is not user@domain")
    return username, domain


def normalize_device_id(device_id: str) -> str:
    """The device id without the ``<urn:uuid:`` and ``>`` that SIP clients wrap it in."""
    if device_id.startswith(URN_UUID_PREFIX):
        device_id = device_id[len(URN_UUID_PREFIX):]
    if device_id.endswith(">"):
        device_id = device_id[:-1]
    return device_id


def split_token(platform: str, token: str) -> Tuple[str, Optional[str]]:
    """(device token, background token): an Apple app registers ``A-B`` for
    its VoIP token A and its background (alert) token B."""
    if platform == "apple":
        token, dash, background = token.partition("-")
        if dash:
            return token, background
    return token, None


class TokenStore:
    """The interface of a token store.  Subclasses implement every method.

    Methods are safe to call before :meth:`open` has finished (they wait for
    it) and fail with :class:`StorageUnavailable` when it failed.
    """

    #: short name for logs and /health (``sqlite``, ``cassandra``)
    backend = ""

    def open(self) -> "Deferred[None]":
        """Connect or create; fires when the store is usable."""
        raise NotImplementedError

    def store(self, device: Device) -> "Deferred[None]":
        """Add ``device``, or replace the one with the same :attr:`Device.key`.

        When the Deferred fires the device is stored durably: a crash of the
        process at any later point does not lose it.
        """
        raise NotImplementedError

    def remove(self, username: str, domain: str, app_id: str, device_id: str) -> "Deferred[bool]":
        """Remove one device; fires True when it was there."""
        raise NotImplementedError

    def devices(self, username: str, domain: str, device_id: Optional[str] = None) -> "Deferred[List[Device]]":
        """The account's devices (only those with ``device_id`` when given),
        ordered by device id and application."""
        raise NotImplementedError

    def remove_expired(self, device: Device) -> "Deferred[bool]":
        """Remove ``device`` after its push service said its token is gone
        (410), unless it was registered again with another token meanwhile;
        fires True when it was removed."""
        raise NotImplementedError

    def status(self) -> Dict[str, Any]:
        """For /health and /metrics, without I/O: ``backend``, ``state``,
        ``up`` (bool), ``reason`` when not up, ``devices`` when known."""
        raise NotImplementedError

    def close(self) -> "Deferred[None]":
        """Finish the work already asked for, then release the store."""
        raise NotImplementedError


def passing_through(result: _R, fired: "Deferred[None]") -> _R:
    """A callback that fires ``fired`` and passes ``result`` on unchanged: a
    Deferred of one's own for a caller waiting on a shared one."""
    fired.callback(None)
    return result
