"""The keys general.ini and applications.ini understand, and the warnings for others.

configparser accepts any key, so a misspelt one (``apple_cerificate``) would
be ignored without a word and the setting it meant left at its default.
Every key that is not understood is reported with its file, section and the
closest known key.  Custom application and push-service modules read keys of
their own from their sections (``AppConfig.option``): there only keys close
to a known one are reported.
"""

from __future__ import annotations

import configparser
import difflib
from typing import Collection, Dict, FrozenSet, List, Optional

from sylkpush.notification import PLATFORM_ALIASES

#: general.ini: section -> keys
GENERAL_KEYS: Dict[str, FrozenSet[str]] = {
    "server": frozenset({"host", "port", "tls_certificate", "return_async", "allowed_hosts", "log_to_file",
                         "log_file", "spool_dir", "debug", "debug_hpack", "max_connections", "request_timeout",
                         "workers"}),
    "applications": frozenset({"config_file", "credentials_folder", "extra_applications_dir", "extra_pns_dir"}),
    "api": frozenset({"keys_file"}),
    "Cassandra": frozenset({"cluster_contact_points", "keyspace", "table", "debug", "username", "password",
                            "ca_file", "local_dc"}),
}

#: applications.ini: the keys of every section
APPLICATION_KEYS: FrozenSet[str] = frozenset({
    "app_id", "app_type", "app_platform",
    "apple_certificate", "apple_key", "key_id", "team_id", "apple_push_url", "apple_connections", "voip",
    "apple_apns_id",
    "firebase_push_url", "firebase_authorization_file", "firebase_authorization_key", "firebase_max_in_flight",
    "firebase_connections",
    "tls_ca_file", "log_remote_urls", "log_remote_timeout", "log_remote_key",
})

#: how alike a key must be to a known one to be offered as "did you mean"
SIMILARITY = 0.75


def closest(name: str, known: Collection[str]) -> Optional[str]:
    """The known name most like ``name``, if one is alike enough."""
    matches = difflib.get_close_matches(name, list(known), n=1, cutoff=SIMILARITY)
    return matches[0] if matches else None


def _unknown(where: str, kind: str, name: str, suggestion: Optional[str]) -> str:
    hint = f"; did you mean {suggestion}?" if suggestion else ""
    return f"{where}: unknown {kind} {name}{hint} (it is ignored)"


def general_warnings(path: str, parser: configparser.ConfigParser) -> List[str]:
    """One line per section or key of general.ini that is not understood."""
    warnings = []
    for section in parser.sections():
        known = GENERAL_KEYS.get(section)
        if known is None:
            suggestion = closest(section, GENERAL_KEYS)
            warnings.append(_unknown(path, "section", f"[{section}]", suggestion and f"[{suggestion}]"))
            continue
        for key in parser.options(section):
            if key not in known:
                warnings.append(_unknown(f"{path} [{section}]", "key", key, closest(key, known)))
    return warnings


def uses_custom_module(values: Dict[str, str]) -> bool:
    """True when an applications.ini section's application or push service is not built in."""
    # imported here: both modules import sylkpush.config, which imports this one
    from sylkpush.applications.renderer_classes import BUILTIN_TYPES
    from sylkpush.pns.client_classes import BUILTIN_PLATFORMS
    platform = values.get("app_platform", "").strip().lower()
    return (values.get("app_type", "").strip().lower() not in BUILTIN_TYPES
            or PLATFORM_ALIASES.get(platform, platform) not in BUILTIN_PLATFORMS)


def application_warnings(path: str, section: str, values: Dict[str, str]) -> List[str]:
    """One line per key of an applications.ini section that is not understood.

    A section with a custom application or push-service module may hold keys
    that module reads: there only keys close to a known one are reported.
    """
    custom = uses_custom_module(values)
    warnings = []
    for key in sorted(values):
        if key in APPLICATION_KEYS:
            continue
        suggestion = closest(key, APPLICATION_KEYS)
        if suggestion or not custom:
            warnings.append(_unknown(f"{path} [{section}]", "key", key, suggestion))
    return warnings
