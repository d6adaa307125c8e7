"""Push-service clients, one module per service (``apple``, ``firebase``).

Each module defines a :class:`sylkpush.pns.base.PushClient` subclass named
``<Platform>Client`` (``AppleClient``, ``FirebaseClient``).
"""

from __future__ import annotations

import importlib
from typing import Type

from sylkpush.pns.base import ConfigError, PushClient


def builtin_client_class(platform: str) -> Type[PushClient]:
    """The client class of a built-in platform; ConfigError when there is none."""
    try:
        module = importlib.import_module(f"sylkpush.pns.{platform}")
    except ImportError as exc:
        raise ConfigError(f"no push service module for platform {platform}: {exc}") from None
    name = f"{platform.capitalize()}Client"
    client_class = getattr(module, name, None)
    if client_class is None:
        raise ConfigError(f"sylkpush.pns.{platform} has no {name}")
    return client_class
