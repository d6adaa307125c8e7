"""Finding the renderer classes of an application type (SPEC §5, custom applications).

Built-in types live in ``sylkpush.applications.<app_type>``; any other type is
the module ``<app_type>.py`` in ``extra_applications_dir``.  Either way the
module defines ``<Platform><Apptype>Headers`` and ``<Platform><Apptype>Payload``
(``AppleSylkHeaders``, ``FirebaseMyappPayload``).  Anything wrong is a
:class:`~sylkpush.pns.base.ConfigError` whose message names the module and the
class, so the caller can leave that application out with one clear log line.

Loading a module reads and runs a file: call this while loading the
configuration, not per request.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType
from typing import Dict, Tuple, Type

from sylkpush.applications.base import Renderer
from sylkpush.pns.base import ConfigError

BUILTIN_TYPES = ("sylk", "linphone")
#: prefix of the sys.modules names of modules loaded from extra_applications_dir
EXTRA_PACKAGE = "sylkpush_extra_applications"

# path -> (mtime_ns, size, module): an edited module is loaded again on the
# next configuration reload, an unchanged one is reused
_loaded: Dict[str, Tuple[int, int, ModuleType]] = {}


def class_names(app_type: str, platform: str) -> Tuple[str, str]:
    """The names of the headers and payload classes, e.g. ``AppleSylkHeaders``."""
    prefix = platform.capitalize() + app_type.capitalize()
    return prefix + "Headers", prefix + "Payload"


def _load_extra(app_type: str, extra_dir: str) -> ModuleType:
    if not app_type.isidentifier():
        raise ConfigError(f"app_type {app_type!r} is not a valid module name")
    if not extra_dir:
        raise ConfigError(f"app_type {app_type} is not built in and no extra_applications_dir is set")
    path = os.path.abspath(os.path.join(extra_dir, app_type + ".py"))
    try:
        stat = os.stat(path)
    except OSError:
        raise ConfigError(f"application module {path} for app_type {app_type} does not exist") from None
    cached = _loaded.get(path)
    if cached is not None and cached[:2] == (stat.st_mtime_ns, stat.st_size):
        return cached[2]
    name = f"{EXTRA_PACKAGE}.{app_type}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"application module {path} cannot be loaded")
    module = importlib.util.module_from_spec(spec)
    # registered while it runs so dataclasses and typing can find it
    previous = sys.modules.get(name)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous
        raise ConfigError(f"application module {path} failed to import: "
                          f"{type(exc).__name__}: {exc}") from None
    _loaded[path] = (stat.st_mtime_ns, stat.st_size, module)
    return module


def _load_builtin(app_type: str) -> ModuleType:
    name = f"sylkpush.applications.{app_type}"
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise ConfigError(f"application module {name} failed to import: "
                          f"{type(exc).__name__}: {exc}") from None


def renderer_classes(app_type: str, platform: str,
                     extra_dir: str = "") -> Tuple[Type[Renderer], Type[Renderer]]:
    """The ``(HeadersClass, PayloadClass)`` of ``app_type`` on ``platform``.

    ``extra_dir`` is the already resolved ``extra_applications_dir``; it is
    only looked at for types that are not built in.
    """
    if app_type in BUILTIN_TYPES:
        module = _load_builtin(app_type)
    else:
        module = _load_extra(app_type, extra_dir)
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


def clear_cache() -> None:
    """Forget the modules loaded from extra_applications_dir."""
    _loaded.clear()
    for name in [name for name in sys.modules if name.startswith(EXTRA_PACKAGE + ".")]:
        del sys.modules[name]
