"""Finding the renderer classes of an application type.

Built-in types live in ``sylkpush.applications.<app_type>``; any other type is
the module ``<app_type>.py`` in ``extra_applications_dir``.  Either way the
module defines ``<Platform><Apptype>Headers`` and ``<Platform><Apptype>Payload``
(``AppleSylkHeaders``, ``FirebaseMyappPayload``).  Anything wrong is a
:class:`~sylkpush.config.ConfigError` whose message names the module and the
class, so the caller can leave that application out with one clear log line.

Loading a module reads and runs a file: call this while loading the
configuration, not per request.
"""

from __future__ import annotations

from typing import Tuple, Type

from sylkpush.applications.base import Renderer
from sylkpush.config import ConfigError
from sylkpush.custom_modules import find_module

BUILTIN_TYPES = ("sylk", "linphone")


def class_names(app_type: str, platform: str) -> Tuple[str, str]:
    """The names of the headers and payload classes, e.g. ``AppleSylkHeaders``."""
    prefix = platform.capitalize() + app_type.capitalize()
    return prefix + "Headers", prefix + "Payload"


def renderer_classes(app_type: str, platform: str,
                     extra_dir: str = "") -> Tuple[Type[Renderer], Type[Renderer]]:
    """The ``(HeadersClass, PayloadClass)`` of ``app_type`` on ``platform``.

    ``extra_dir`` is the already resolved ``extra_applications_dir``; it is
    only looked at for types that are not built in.
    """
    module = find_module(app_type, "application", "sylkpush.applications", BUILTIN_TYPES, extra_dir)
    where = getattr(module, "__file__", None) or module.__name__
    classes = []
    for class_name, attribute in zip(class_names(app_type, platform), ("headers", "payload")):
        cls = getattr(module, class_name, None)
        if cls is None:
            raise ConfigError(f"application module {where} has no class {class_name}")
        if not (isinstance(cls, type) and issubclass(cls, Renderer) and hasattr(cls, attribute)):
            raise ConfigError(f"{class_name} in application module {where} must subclass "
                              f"the sylkpush.applications.base class with .{attribute}")
        classes.append(cls)
    return classes[0], classes[1]
