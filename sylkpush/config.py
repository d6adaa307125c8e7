"""Configuration: general.ini and applications.ini (SPEC §3).

Everything is loaded into immutable objects.  A broken application section
never stops the others: :func:`load_applications` returns the good ones and a
list of ``(section, reason)`` problems for the caller to log.
"""

from __future__ import annotations

import configparser
import ipaddress
import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union
from urllib.parse import urlsplit

from sylkpush.config_keys import application_warnings, general_warnings
from sylkpush.expiry import pem_file_not_after
from sylkpush.notification import PLATFORM_ALIASES
from sylkpush.tokens.cassandra_cluster import DEFAULT_PORT, parse_contact_points
from sylkpush.tokens.cassandra_schema import DEFAULT_KEYSPACE, DEFAULT_TABLE, check_identifier

DEFAULT_CONFIG_DIRS = ("/etc/sylk-pushserver", "./config")
#: every interface, as the original sylk-pushserver (see sylkpush.exposure)
DEFAULT_HOST = "0.0.0.0"
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
log = logging.getLogger(__name__)


class ConfigFileError(Exception):
    """general.ini or applications.ini cannot be used at all."""


def _bool(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off", ""):
        return False
    raise ConfigFileError(f"{name}: {value!r} is not a boolean")


def parse_networks(value: str) -> Tuple[IPNetwork, ...]:
    """``allowed_hosts``: comma separated IPs and CIDR networks."""
    networks = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigFileError(f"allowed_hosts: {item!r} is not an IP address or network") from None
    return tuple(networks)


def find_config_dir(explicit: Optional[str]) -> str:
    """The directory given with --config_dir, else the first default that exists."""
    if explicit:
        if not os.path.isdir(explicit):
            raise ConfigFileError(f"configuration directory {explicit} does not exist")
        return os.path.abspath(explicit)
    for candidate in DEFAULT_CONFIG_DIRS:
        if os.path.isdir(candidate):
            return os.path.abspath(candidate)
    raise ConfigFileError("no configuration directory: tried " + ", ".join(DEFAULT_CONFIG_DIRS))


@dataclass(frozen=True)
class CassandraSettings:
    """[Cassandra]: the cluster that holds the v2 tokens (none: SQLite in spool_dir)."""

    contact_points: Tuple[str, ...] = ()
    port: int = DEFAULT_PORT
    keyspace: str = DEFAULT_KEYSPACE
    table: str = DEFAULT_TABLE
    debug: bool = False
    username: str = ""
    password: str = field(default="", repr=False)
    #: CA bundle the nodes' certificates must lead to; set, connections use TLS
    ca_file: str = ""
    #: datacenter whose nodes serve the requests (default: the contact points')
    local_dc: str = ""


@dataclass(frozen=True)
class Settings:
    """general.ini, with every default of SPEC §3."""

    config_dir: str
    host: str = DEFAULT_HOST
    port: int = 8400
    tls_certificate: str = ""
    return_async: bool = True
    allowed_hosts: Tuple[IPNetwork, ...] = ()
    log_to_file: bool = False
    log_file: str = "/var/log/sylk-pushserver/push.log"
    spool_dir: str = "/var/spool/sylk-pushserver"
    debug: bool = False
    debug_hpack: bool = False
    #: [api] keys_file: when set, /push and /v2 need one of its keys
    keys_file: str = ""
    applications_file: str = "applications.ini"
    credentials_folder: str = "credentials"
    extra_applications_dir: str = "applications/"
    extra_pns_dir: str = "pns/"
    cassandra: CassandraSettings = field(default_factory=CassandraSettings)
    #: keys and sections of general.ini not understood, to log at start
    config_warnings: Tuple[str, ...] = ()

    def path(self, name: str) -> str:
        """A path from the config files: relative ones start at config_dir."""
        if not name:
            return ""
        return os.path.normpath(os.path.join(self.config_dir, os.path.expanduser(name)))

    def credential(self, name: str) -> str:
        """A certificate, key or service-account file named in applications.ini.

        Absolute paths are used as they are; a relative name is looked up in
        credentials_folder first, then in the config directory.
        """
        if os.path.isabs(name):
            return name
        in_folder = os.path.join(self.path(self.credentials_folder), name)
        if os.path.exists(in_folder):
            return in_folder
        return self.path(name)


def load_settings(config_dir: str, host: Optional[str] = None, port: Optional[int] = None,
                  debug: Optional[bool] = None) -> Settings:
    """Read ``config_dir``/general.ini; command line values override the file."""
    parser = configparser.ConfigParser(interpolation=None)
    general = os.path.join(config_dir, "general.ini")
    if os.path.exists(general):
        try:
            with open(general, encoding="utf-8") as stream:
                parser.read_file(stream)
        except (OSError, UnicodeDecodeError, configparser.Error) as exc:
            raise ConfigFileError(f"cannot read {general}: {exc}") from None

    def get(section: str, key: str, default: str) -> str:
        return parser.get(section, key, fallback=default).strip()

    try:
        file_port = int(get("server", "port", "8400"))
    except ValueError:
        raise ConfigFileError(f"{general}: [server] port must be an integer") from None
    file_debug = _bool(get("server", "debug", "false"), "debug")
    return Settings(
        config_dir=config_dir,
        host=host or get("server", "host", DEFAULT_HOST) or DEFAULT_HOST,
        port=port if port is not None else file_port,
        tls_certificate=get("server", "tls_certificate", ""),
        return_async=_bool(get("server", "return_async", "true"), "return_async"),
        allowed_hosts=parse_networks(get("server", "allowed_hosts", "")),
        log_to_file=_bool(get("server", "log_to_file", "false"), "log_to_file"),
        log_file=get("server", "log_file", "/var/log/sylk-pushserver/push.log"),
        spool_dir=get("server", "spool_dir", "/var/spool/sylk-pushserver"),
        debug=file_debug if debug is None else debug,
        debug_hpack=_bool(get("server", "debug_hpack", "false"), "debug_hpack"),
        keys_file=get("api", "keys_file", ""),
        applications_file=get("applications", "config_file", "applications.ini"),
        credentials_folder=get("applications", "credentials_folder", "credentials"),
        extra_applications_dir=get("applications", "extra_applications_dir", "applications/"),
        extra_pns_dir=get("applications", "extra_pns_dir", "pns/"),
        cassandra=_cassandra_settings(get, general),
        config_warnings=tuple(general_warnings(general, parser)),
    )


def _cassandra_settings(get: Callable[[str, str, str], str], general: str) -> CassandraSettings:
    try:
        contact_points, port = parse_contact_points(get("Cassandra", "cluster_contact_points", ""))
        keyspace = check_identifier(get("Cassandra", "keyspace", "") or DEFAULT_KEYSPACE, "keyspace")
        table = check_identifier(get("Cassandra", "table", "") or DEFAULT_TABLE, "table")
    except ValueError as exc:
        raise ConfigFileError(f"{general}: [Cassandra] {exc}") from None
    username, password = get("Cassandra", "username", ""), get("Cassandra", "password", "")
    if bool(username) != bool(password):
        raise ConfigFileError(f"{general}: [Cassandra] username and password go together")
    return CassandraSettings(contact_points=contact_points, port=port, keyspace=keyspace, table=table,
                             debug=_bool(get("Cassandra", "debug", "false"), "Cassandra debug"),
                             username=username, password=password, ca_file=get("Cassandra", "ca_file", ""),
                             local_dc=get("Cassandra", "local_dc", ""))


@dataclass(frozen=True)
class AppConfig:
    """One section of applications.ini, with file names already resolved."""

    section: str
    app_id: str
    app_type: str
    platform: str
    # Apple
    apple_certificate: str = ""
    #: notAfter of apple_certificate (seconds since the epoch), read with the
    #: configuration; a renewed certificate thus makes the section "changed"
    apple_certificate_not_after: Optional[float] = None
    apple_key: str = ""
    key_id: str = ""
    team_id: str = ""
    apple_host: str = "api.push.apple.com"
    apple_port: int = 443
    voip: bool = False
    # Firebase
    firebase_push_url: str = ""
    firebase_authorization_file: str = ""
    firebase_authorization_key: str = ""
    # any platform
    tls_ca_file: str = ""
    log_remote_urls: Tuple[str, ...] = ()
    log_remote_timeout: float = 2.0
    log_remote_key: str = ""
    #: every key of the section as written, for custom modules
    options: Tuple[Tuple[str, str], ...] = ()

    @property
    def key(self) -> Tuple[str, str]:
        return (self.app_id, self.platform)

    @property
    def apple_token_auth(self) -> bool:
        """True when the section uses a .p8 key with key_id/team_id."""
        return bool(self.key_id and self.team_id)

    @property
    def firebase_legacy(self) -> bool:
        return bool(self.firebase_authorization_key) and not self.firebase_authorization_file

    def option(self, name: str, default: str = "") -> str:
        return dict(self.options).get(name, default)


def _split_host_port(value: str) -> Tuple[str, int]:
    """``apple_push_url``: ``host``, ``host:port`` or ``[v6]:port`` (an URL is tolerated)."""
    value = value.strip()
    parts = urlsplit(value if "://" in value else "//" + value)
    try:
        host, port = parts.hostname, parts.port or 443
    except ValueError:
        host, port = None, 0
    if not host or parts.path.strip("/"):
        raise ConfigFileError(f"apple_push_url {value!r} is not host or host:port")
    return host, port


def _app_from_section(settings: Settings, section: str, values: Dict[str, str]) -> AppConfig:
    def need(key: str) -> str:
        value = values.get(key, "").strip()
        if not value:
            raise ConfigFileError(f"{key} is missing")
        return value

    def credential(key: str) -> str:
        name = values.get(key, "").strip()
        if not name:
            return ""
        path = settings.credential(name)
        if not os.path.isfile(path):
            raise ConfigFileError(f"{key} file {path} does not exist")
        if not os.access(path, os.R_OK):
            raise ConfigFileError(f"{key} file {path} is not readable")
        return path

    app_id = need("app_id")
    app_type = need("app_type").lower()
    platform_name = need("app_platform").lower()
    platform = PLATFORM_ALIASES.get(platform_name, platform_name)
    host, port = ("api.push.apple.com", 443)
    if values.get("apple_push_url", "").strip():
        host, port = _split_host_port(values["apple_push_url"])
    firebase_url = values.get("firebase_push_url", "").strip()
    if firebase_url and urlsplit(firebase_url).scheme not in ("https", "http"):
        raise ConfigFileError(f"firebase_push_url {firebase_url!r} is not an http(s) URL")
    try:
        remote_timeout = float(values.get("log_remote_timeout", "") or 2)
    except ValueError:
        raise ConfigFileError("log_remote_timeout must be a number of seconds") from None
    apple_certificate = credential("apple_certificate")
    return AppConfig(
        section=section, app_id=app_id, app_type=app_type, platform=platform,
        apple_certificate=apple_certificate,
        apple_certificate_not_after=pem_file_not_after(apple_certificate) if apple_certificate else None,
        apple_key=credential("apple_key"),
        key_id=values.get("key_id", "").strip(),
        team_id=values.get("team_id", "").strip(),
        apple_host=host, apple_port=port,
        voip=_bool(values.get("voip", "false"), "voip"),
        firebase_push_url=firebase_url,
        firebase_authorization_file=credential("firebase_authorization_file"),
        firebase_authorization_key=values.get("firebase_authorization_key", "").strip(),
        tls_ca_file=credential("tls_ca_file"),
        log_remote_urls=tuple(u.strip() for u in values.get("log_remote_urls", "").split(",") if u.strip()),
        log_remote_timeout=remote_timeout,
        log_remote_key=values.get("log_remote_key", "").strip(),
        options=tuple(sorted(values.items())),
    )


def load_applications(settings: Settings) -> Tuple[List[AppConfig], List[Tuple[str, str]]]:
    """Parse applications.ini.

    Returns the usable applications and ``(section, reason)`` for each section
    left out.  Raises :class:`ConfigFileError` when the file itself cannot be
    read or parsed (a reload then keeps the previous applications).
    """
    path = settings.path(settings.applications_file)
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as stream:
            parser.read_file(stream)
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        raise ConfigFileError(f"cannot read {path}: {exc}") from None
    apps: List[AppConfig] = []
    problems: List[Tuple[str, str]] = []
    seen: Dict[Tuple[str, str], str] = {}
    for section in parser.sections():
        for warning in application_warnings(path, section, dict(parser.items(section))):
            log.warning("%s", warning)
        try:
            app = _app_from_section(settings, section, dict(parser.items(section)))
        except ConfigFileError as exc:
            problems.append((section, str(exc)))
            continue
        if app.key in seen:
            problems.append((section, f"{app.platform} {app.app_id} is already configured in section {seen[app.key]}"))
            continue
        seen[app.key] = section
        apps.append(app)
    return apps, problems
