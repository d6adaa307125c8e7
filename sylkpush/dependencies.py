"""The packages the daemon needs, checked before anything imports them.

Run from a checkout without them, ``import twisted`` finds the checkout's own
``twisted/plugins`` directory (the twistd plugin) as a namespace package and
the error reads ``No module named 'twisted.python'``, which hides the cause.
This module imports nothing beyond the standard library.
"""

from __future__ import annotations

import importlib.util
from typing import List

#: requirements.txt name -> a module it provides
REQUIRED = {
    "Twisted": "twisted.python",
    "treq": "treq",
    "h2": "h2",
    "idna": "idna",
    "service-identity": "service_identity",
    "pyOpenSSL": "OpenSSL",
    "PyJWT": "jwt",
    "google-auth": "google.auth",
    "prometheus-client": "prometheus_client",
}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package is missing
        return False


def missing_packages() -> List[str]:
    """The packages of :data:`REQUIRED` that cannot be imported."""
    return [package for package, module in REQUIRED.items() if not _importable(module)]


def advice(missing: List[str]) -> str:
    """One line saying what is missing and how to install it."""
    return (f"sylk-pushserver: missing Python packages: {', '.join(missing)}. Install them with "
            f"`pip install -r requirements.txt` (`make run` does it in .venv and starts a demo), "
            f"or on Debian 12 with `make debian-deps` or the sylk-pushserver package")
