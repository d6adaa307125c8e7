"""Loading the module of an application type or a push service: built in,
or an operator's own.

A custom module is a file ``<name>.py`` in a configured directory
(``extra_applications_dir`` or ``extra_pns_dir``).  Modules are cached by
path, modification time and size: an edited module is loaded again on the
next configuration reload, an unchanged one is reused.  Anything wrong is a
:class:`~sylkpush.config.ConfigError` naming the file, so the caller can
leave the applications that need it out with one clear log line.
:mod:`sylkpush.applications.renderer_classes` and
:mod:`sylkpush.pns.client_classes` find their classes in these modules.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType
from typing import Dict, Sequence, Tuple

from sylkpush.config import ConfigError

#: prefix of the sys.modules names of the modules loaded from configured directories
EXTRA_PACKAGE = "sylkpush_extra"

_loaded: Dict[str, Tuple[int, int, ModuleType]] = {}


def find_module(name: str, kind: str, package: str, builtins: Sequence[str], directory: str) -> ModuleType:
    """``package.name`` when ``name`` is one of ``builtins``, else the custom
    module ``directory/name.py``; ``kind`` (e.g. ``application``) names it in errors."""
    if name not in builtins:
        return load_custom_module(directory, name, kind)
    try:
        return importlib.import_module(f"{package}.{name}")
    except Exception as exc:
        raise ConfigError(f"{kind} module {package}.{name} failed to import: {type(exc).__name__}: {exc}") from None


def load_custom_module(directory: str, name: str, kind: str) -> ModuleType:
    """Import ``directory/name.py``; ``kind`` (e.g. ``application``) names it in errors."""
    if not name.isidentifier():
        raise ConfigError(f"{kind} {name!r} is not a valid module name")
    if not directory:
        raise ConfigError(f"{kind} {name} is not built in and no directory for custom modules is set")
    path = os.path.abspath(os.path.join(directory, name + ".py"))
    try:
        stat = os.stat(path)
    except OSError:
        raise ConfigError(f"{kind} module {path} for {name} does not exist") from None
    cached = _loaded.get(path)
    if cached is not None and cached[:2] == (stat.st_mtime_ns, stat.st_size):
        return cached[2]
    module_name = f"{EXTRA_PACKAGE}.{kind.replace(' ', '_')}.{name}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{kind} module {path} cannot be loaded")
    module = importlib.util.module_from_spec(spec)
    # registered while it runs so dataclasses and typing can find it
    previous = sys.modules.get(module_name)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # any error in an operator's module disables only its apps
        if previous is None:
            sys.modules.pop(module_name, None)
        else:
            sys.modules[module_name] = previous
        raise ConfigError(f"{kind} module {path} failed to import: {type(exc).__name__}: {exc}") from None
    _loaded[path] = (stat.st_mtime_ns, stat.st_size, module)
    return module


def clear_cache() -> None:
    """Forget every module loaded from the configured directories."""
    _loaded.clear()
    for name in [name for name in sys.modules if name.startswith(EXTRA_PACKAGE + ".")]:
        del sys.modules[name]
