"""Finding the push-service client class of a platform.

A built-in platform's client is ``<Platform>Client`` in
``sylkpush.pns.<platform>`` (``AppleClient``, ``FirebaseClient``); any other
platform's is ``<Platform>Client`` in the module ``<platform>.py`` of
``extra_pns_dir``, and must subclass :class:`sylkpush.pns.base.PushClient`.
Anything wrong is a :class:`~sylkpush.config.ConfigError` naming the module
and the class.  Loading a module reads and runs a file: call this while
loading the configuration, not per request.
"""

from __future__ import annotations

from typing import Type

from sylkpush.config import ConfigError
from sylkpush.custom_modules import find_module
from sylkpush.pns.base import PushClient

BUILTIN_PLATFORMS = ("apple", "firebase")


def client_class(platform: str, extra_dir: str = "") -> Type[PushClient]:
    """The client class of ``platform``.

    ``extra_dir`` is the already resolved ``extra_pns_dir``; it is only
    looked at for platforms that are not built in.
    """
    module = find_module(platform, "push service", "sylkpush.pns", BUILTIN_PLATFORMS, extra_dir)
    where = getattr(module, "__file__", None) or module.__name__
    name = f"{platform.capitalize()}Client"
    found = getattr(module, name, None)
    if not (isinstance(found, type) and issubclass(found, PushClient)):
        raise ConfigError(f"push service module {where} has no class {name} "
                          f"subclassing sylkpush.pns.base.PushClient")
    return found
