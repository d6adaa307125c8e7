"""Loading operators' own Python modules: custom applications and push services.

A custom module is a file ``<name>.py`` in a configured directory.  Each is
imported once per process under a private name, so two directories may hold
modules of the same name without clashing.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType
from typing import Dict, Tuple, Type

from sylkpush.pns.base import ConfigError, PushClient

_loaded: Dict[Tuple[str, str], ModuleType] = {}


def load_extra_module(directory: str, name: str) -> ModuleType:
    """Import ``directory/name.py``; ConfigError saying why when it cannot be."""
    path = os.path.join(directory, f"{name}.py")
    key = (os.path.abspath(path), str(os.path.getmtime(path)) if os.path.exists(path) else "")
    if key in _loaded:
        return _loaded[key]
    if not os.path.isfile(path):
        raise ConfigError(f"module {name} not found: no file {path}")
    module_name = f"sylkpush_extra_{abs(hash(key[0])):x}_{name}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"module {path} cannot be loaded")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # any error in an operator's module disables only its apps
        raise ConfigError(f"module {path} failed to import: {type(exc).__name__}: {exc}") from None
    sys.modules[module_name] = module
    _loaded[key] = module
    return module


def module_class(module: ModuleType, class_name: str, base: type) -> type:
    """``module.class_name``, which must subclass ``base``."""
    found = getattr(module, class_name, None)
    if not isinstance(found, type) or not issubclass(found, base):
        raise ConfigError(f"module {module.__file__} has no class {class_name} "
                          f"subclassing {base.__module__}.{base.__qualname__}")
    return found


def custom_client_class(platform: str, directory: str) -> Type[PushClient]:
    """``<Platform>Client`` from ``directory/<platform>.py``."""
    module = load_extra_module(directory, platform)
    return module_class(module, f"{platform.capitalize()}Client", PushClient)
