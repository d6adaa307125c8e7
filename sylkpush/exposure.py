"""Who can reach the API: the warning for a server open to any caller.

The default listen address is every interface (``0.0.0.0``, as the original
sylk-pushserver), so a general.ini that leaves ``host`` out keeps working
for proxies on other hosts.  Anyone who can reach the port can then make the
server push to any token of its applications unless something restricts the
callers; the operator is told so at start.
"""

from __future__ import annotations

import ipaddress
from typing import Optional

from sylkpush.config import Settings

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def is_loopback(host: str) -> bool:
    """True when ``host`` (an address or a name) is reachable only from this machine."""
    host = host.strip().strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False  # another host name: it may resolve to any address


def callers_restricted(settings: Settings) -> bool:
    """True when general.ini limits who may call the API."""
    return bool(settings.allowed_hosts or settings.keys_file)


def open_access_warning(settings: Settings, host: str, port: int) -> Optional[str]:
    """The warning for a server listening on ``host``:``port``, or None when it is fine."""
    if is_loopback(host) or callers_restricted(settings):
        return None
    return (f"listening on {host} port {port} with neither allowed_hosts nor API keys: anyone who can reach this port "
            f"can send pushes to your users; set allowed_hosts in general.ini to the addresses of your "
            f"proxies, or [api] keys_file (or host = 127.0.0.1 when they run on this machine)")
