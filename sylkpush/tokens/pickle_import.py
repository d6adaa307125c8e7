"""Reading the original server's token file, ``spool_dir/webrtc_device_tokens``.

The original kept its v2 tokens in a pickle: a dictionary from account to a
dictionary from ``<app_id>-<device_id>`` to the registration (``app_id``,
``platform``, ``token``, ``background_token``, ``device_id``, ``silent``,
``user_agent``).  Unpickling can run arbitrary code, so the unpickler here
builds nothing but dictionaries, strings, booleans and None (the file's top
level is a ``collections.defaultdict``, read as a plain dictionary); anything
else refuses the whole file with :class:`PickleRefused`.
"""

from __future__ import annotations

import logging
import pickle
from typing import Any, BinaryIO, Dict, List, Tuple

from sylkpush.notification import PLATFORM_ALIASES
from sylkpush.tokens.base import Device, split_account

log = logging.getLogger(__name__)

PICKLE_NAME = "webrtc_device_tokens"
ALLOWED = "only dictionaries, strings, booleans and None are read"


class PickleRefused(ValueError):
    """The file holds something else than the original server's tokens."""


def _dictionary(default_factory: Any = None) -> Dict[Any, Any]:
    # what the file's defaultdict(None) is rebuilt as
    if default_factory is not None:
        raise PickleRefused(f"a defaultdict with a default factory is not allowed: {ALLOWED}")
    return {}


class RestrictedUnpickler(pickle.Unpickler):
    """Refuses every class and function except ``collections.defaultdict``."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "defaultdict"):
            return _dictionary
        raise PickleRefused(f"{module}.{name} is not allowed: {ALLOWED}")

    def persistent_load(self, pid: Any) -> Any:
        raise PickleRefused(f"persistent references are not allowed: {ALLOWED}")


def _check_plain(value: Any, where: str) -> None:
    """Refuse any value that is not a dict, str, bool or None (at any depth)."""
    if value is None or isinstance(value, (str, bool)):
        return
    if type(value) is dict:
        for key, item in value.items():
            if not isinstance(key, str):
                raise PickleRefused(f"{where}: a {type(key).__name__} key is not allowed: {ALLOWED}")
            _check_plain(item, f"{where}/{key}")
        return
    raise PickleRefused(f"{where}: a {type(value).__name__} is not allowed: {ALLOWED}")


def load(stream: BinaryIO) -> Dict[str, Any]:
    """The file's content, checked to be plain data; PickleRefused otherwise."""
    try:
        data = RestrictedUnpickler(stream).load()
    except PickleRefused:
        raise
    except Exception as exc:  # a truncated or foreign file raises many types
        raise PickleRefused(f"not a readable pickle: {exc}") from None
    if type(data) is not dict:
        raise PickleRefused(f"the top level is a {type(data).__name__}, not a dictionary")
    _check_plain(data, "accounts")
    return data


def _device(account: str, entry: Dict[str, Any]) -> Device:
    """One registration of the file as a Device; ValueError saying what is missing."""
    username, domain = split_account(account)
    for key in ("app_id", "platform", "token", "device_id"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise ValueError(f"{key} is missing")
    platform = entry["platform"].lower()
    silent = entry.get("silent", True)
    return Device(username=username, domain=domain, device_id=entry["device_id"], app_id=entry["app_id"],
                  device_token=entry["token"], background_token=entry.get("background_token") or None,
                  platform=PLATFORM_ALIASES.get(platform, platform),
                  silent=silent if isinstance(silent, bool) else True,
                  user_agent=entry.get("user_agent"))


def read_devices(path: str) -> Tuple[List[Device], List[str]]:
    """The devices of the file at ``path`` and a line for each entry left out.

    Raises PickleRefused for a file that is not plain data, OSError when it
    cannot be read.
    """
    with open(path, "rb") as stream:
        data = load(stream)
    devices: List[Device] = []
    skipped: List[str] = []
    for account, entries in data.items():
        if type(entries) is not dict:
            skipped.append(f"{account}: not a dictionary of devices")
            continue
        for key, entry in entries.items():
            if type(entry) is not dict:
                skipped.append(f"{account} {key}: not a dictionary")
                continue
            try:
                devices.append(_device(account, entry))
            except ValueError as exc:
                skipped.append(f"{account} {key}: {exc}")
    return devices, skipped
