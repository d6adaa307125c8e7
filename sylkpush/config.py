"""Configuration: general.ini and applications.ini (keys and defaults: docs/configuration.md).

Everything is loaded into immutable objects.  A broken application section
never stops the others: :func:`load_applications` returns the good ones and a
list of ``(section, reason)`` problems for the caller to log.

Error messages name the file, line, section and key, never the value: a
credential pasted into the wrong place must not end up in a log.
"""

from __future__ import annotations

import configparser
import hashlib
import ipaddress
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union
from urllib.parse import urlsplit

import idna

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


#: open API connections at most (idle ones are closed first when reached)
DEFAULT_MAX_CONNECTIONS = 4096
#: seconds a caller gets to send a whole request, headers and body
DEFAULT_REQUEST_TIMEOUT = 10.0

#: a value with one of these is not one line of text (configparser joins
#: continuation lines with a newline)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)\Z")


class ConfigError(Exception):
    """A configuration cannot be used; the message says why.

    Raised for a file as a whole (general.ini or applications.ini does not
    parse: the server does not start, a reload keeps what runs) and for one
    application's settings, its files or its modules (that application is
    left out).  Custom push services raise it from their constructor.
    """


class SettingError(ConfigError):
    """One value breaks ``rule``; the message names the key, never the value."""

    def __init__(self, rule: str, key: str = "") -> None:
        super().__init__(f"{key} {rule}" if key else rule)
        self.rule = rule
        self.key = key


def _bool(value: str, key: str = "") -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off", ""):
        return False
    raise SettingError("must be true or false", key)


def _integer(value: str, minimum: int, maximum: Optional[int] = None) -> int:
    try:
        number = int(value)
    except ValueError:
        raise SettingError("must be an integer") from None
    if number < minimum or (maximum is not None and number > maximum):
        raise SettingError(f"must be an integer from {minimum} to {maximum}" if maximum is not None
                           else f"must be an integer of at least {minimum}")
    return number


def _workers(value: str) -> int:
    """``workers``: a whole number of at least 1, or ``auto`` (the CPUs this process may use)."""
    if value.lower() == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except (AttributeError, OSError):
            return max(1, os.cpu_count() or 1)
    try:
        return _integer(value, 1)
    except SettingError:
        raise SettingError("must be an integer of at least 1, or auto") from None


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise SettingError("must be a number of seconds") from None
    if not 0 < number < float("inf"):
        raise SettingError("must be a positive number of seconds")
    return number


def parse_networks(value: str) -> Tuple[IPNetwork, ...]:
    """``allowed_hosts``: comma separated IPs and CIDR networks.

    The entries are named in errors: addresses, not secrets.  A network with
    host bits set (``10.1.2.3/8``) is refused rather than silently widened,
    and a value that lists nothing (``,``) is refused rather than read as
    "allow everyone".
    """
    networks = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            network = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise SettingError(f"entry {item!r} is not an IP address or network") from None
        if network.network_address != ipaddress.ip_address(item.split("/")[0]):
            raise SettingError(f"entry {item!r} has host bits set: write {network} for the whole network "
                               f"or {item.split('/')[0]} for the one address")
        networks.append(network)
    if value.strip() and not networks:
        raise SettingError("lists no address (leave it empty to allow every caller)")
    return tuple(networks)


def valid_host(host: str) -> bool:
    """True for an IP address or a host name made of valid ASCII labels
    (``_`` included: resolvers accept it, e.g. in container names)."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    return len(host) <= 253 and all(_HOST_LABEL.match(label) for label in labels)


def valid_url_host(host: str) -> bool:
    """:func:`valid_host`, and a name the IDNA encoding of Twisted's TLS and
    of URLs accepts (no ``_``, no ``--`` in the third and fourth places
    unless in a valid ``xn--`` label): a client never fails on it later."""
    if not valid_host(host):
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        idna.encode(host)
    except idna.IDNAError:
        return False
    return True


def read_file(path: str, what: str = "") -> bytes:
    """The contents of the file at ``path``, which the settings name ``what``;
    ConfigError saying why it cannot be read."""
    try:
        with open(path, "rb") as stream:
            return stream.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {what + ' ' if what else ''}{path}: {exc.strerror}") from None


def read_ini(path: str) -> Tuple[configparser.ConfigParser, Dict[Tuple[str, str], int]]:
    """Parse the ini file ``path``; also the line of each ``(section, key)``.

    Errors say which line is wrong and why, never what it holds.
    """
    data = read_file(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"cannot read {path}: line {line} is not UTF-8 text") from None
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=path)
    except configparser.Error as exc:
        raise ConfigError(f"cannot read {path}: {_parse_error(exc)}") from None
    return parser, _key_lines(parser, text)


def _parse_error(exc: configparser.Error) -> str:
    """What configparser found wrong, without the offending text it quotes."""
    if isinstance(exc, configparser.MissingSectionHeaderError):
        return f"line {exc.lineno}: a setting before the first [section] header"
    if isinstance(exc, configparser.ParsingError):
        numbers = ", ".join(str(number) for number, _ in exc.errors)
        return f"line {numbers}: not a [section] header, a 'key = value' line or a comment"
    if isinstance(exc, configparser.DuplicateSectionError):
        return f"line {exc.lineno}: section [{exc.section}] appears twice"
    if isinstance(exc, configparser.DuplicateOptionError):
        return f"line {exc.lineno}: {exc.option} appears twice in section [{exc.section}]"
    return f"the file does not parse ({type(exc).__name__})"


def _key_lines(parser: configparser.ConfigParser, text: str) -> Dict[Tuple[str, str], int]:
    lines: Dict[Tuple[str, str], int] = {}
    section = ""
    # configparser counts lines split at "\n" only
    for number, line in enumerate(text.split("\n"), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;" or line[0].isspace():
            continue
        header = parser.SECTCRE.match(stripped)
        if header:
            section = header.group("header")
            continue
        option = parser.OPTCRE.match(stripped)
        if option:
            lines.setdefault((section, parser.optionxform(option.group("option").rstrip())), number)
    return lines


def find_config_dir(explicit: Optional[str]) -> str:
    """The directory given with --config_dir, else the first default that exists."""
    if explicit:
        if not os.path.isdir(explicit):
            raise ConfigError(f"configuration directory {explicit} does not exist")
        return os.path.abspath(explicit)
    for candidate in DEFAULT_CONFIG_DIRS:
        if os.path.isdir(candidate):
            return os.path.abspath(candidate)
    raise ConfigError("no configuration directory: tried " + ", ".join(DEFAULT_CONFIG_DIRS))


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
    """general.ini; a key the file leaves out has the default written here."""

    config_dir: str
    host: str = DEFAULT_HOST
    port: int = 8400
    tls_certificate: str = ""
    return_async: bool = True
    allowed_hosts: Tuple[IPNetwork, ...] = ()
    log_to_file: bool = False
    log_file: str = "/var/log/sylk-pushserver/push.log"
    spool_dir: str = "/var/spool/sylk-pushserver"
    #: processes sharing the listening socket (see sylkpush.workers)
    workers: int = 1
    debug: bool = False
    debug_hpack: bool = False
    #: [api] keys_file: when set, /push and /v2 need one of its keys
    keys_file: str = ""
    applications_file: str = "applications.ini"
    credentials_folder: str = "credentials"
    extra_applications_dir: str = "applications/"
    extra_pns_dir: str = "pns/"
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
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
    general = os.path.join(config_dir, "general.ini")
    parser, lines = read_ini(general) if os.path.exists(general) else (configparser.ConfigParser(), {})

    def get(section: str, key: str, default: str) -> str:
        return parser.get(section, key, fallback=default).strip()

    def setting(section: str, key: str, default: str, convert: Callable[[str], Any]) -> Any:
        """``convert`` of the value; its error names the file, line, section and key."""
        try:
            return convert(get(section, key, default))
        except SettingError as exc:
            line = lines.get((section, key))
            where = f"{general} line {line}" if line else general
            raise ConfigError(f"{where}: [{section}] {key} {exc.rule}") from None

    file_debug = setting("server", "debug", "false", _bool)
    return Settings(
        config_dir=config_dir,
        host=host or get("server", "host", DEFAULT_HOST) or DEFAULT_HOST,
        port=port if port is not None else setting("server", "port", "8400", lambda v: _integer(v, 0, 65535)),
        tls_certificate=get("server", "tls_certificate", ""),
        return_async=setting("server", "return_async", "true", _bool),
        allowed_hosts=setting("server", "allowed_hosts", "", parse_networks),
        log_to_file=setting("server", "log_to_file", "false", _bool),
        log_file=get("server", "log_file", "/var/log/sylk-pushserver/push.log"),
        spool_dir=get("server", "spool_dir", "/var/spool/sylk-pushserver"),
        workers=setting("server", "workers", "1", _workers),
        debug=file_debug if debug is None else debug,
        debug_hpack=setting("server", "debug_hpack", "false", _bool),
        max_connections=setting("server", "max_connections", str(DEFAULT_MAX_CONNECTIONS),
                                lambda v: _integer(v, 1)),
        request_timeout=setting("server", "request_timeout", str(DEFAULT_REQUEST_TIMEOUT), _seconds),
        keys_file=get("api", "keys_file", ""),
        applications_file=get("applications", "config_file", "applications.ini"),
        credentials_folder=get("applications", "credentials_folder", "credentials"),
        extra_applications_dir=get("applications", "extra_applications_dir", "applications/"),
        extra_pns_dir=get("applications", "extra_pns_dir", "pns/"),
        cassandra=_cassandra_settings(setting, get, general),
        config_warnings=tuple(general_warnings(general, parser)),
    )


def _cassandra_settings(setting: Callable[..., Any], get: Callable[[str, str, str], str],
                        general: str) -> CassandraSettings:
    contact_points, port = setting("Cassandra", "cluster_contact_points", "", _contact_points)
    username, password = get("Cassandra", "username", ""), get("Cassandra", "password", "")
    if bool(username) != bool(password):
        raise ConfigError(f"{general}: [Cassandra] username and password go together")
    return CassandraSettings(
        contact_points=contact_points, port=port,
        keyspace=setting("Cassandra", "keyspace", "", lambda value: _identifier(value or DEFAULT_KEYSPACE)),
        table=setting("Cassandra", "table", "", lambda value: _identifier(value or DEFAULT_TABLE)),
        debug=setting("Cassandra", "debug", "false", _bool),
        username=username, password=password, ca_file=get("Cassandra", "ca_file", ""),
        local_dc=get("Cassandra", "local_dc", ""))


def _contact_points(value: str) -> Tuple[Tuple[str, ...], int]:
    # the entries are addresses, not secrets: errors may name them
    try:
        hosts, port = parse_contact_points(value)
    except ValueError as exc:
        raise SettingError(str(exc)) from None
    for host in hosts:
        if not valid_host(host):
            raise SettingError(f"entry {host!r} is not a host name or IP address")
    return hosts, port


def _identifier(value: str) -> str:
    try:
        return check_identifier(value, "")
    except ValueError:
        raise SettingError("must be a letter followed by letters, digits or '_'") from None


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
    #: configuration
    apple_certificate_not_after: Optional[float] = None
    apple_key: str = ""
    key_id: str = ""
    team_id: str = ""
    apple_host: str = "api.push.apple.com"
    apple_port: int = 443
    #: send an apns-id of our own with each push (the same on every try of it)
    apple_apns_id: bool = False
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
    #: digest of the contents of the files the section names (see
    #: :func:`files_digest`): a file replaced in place makes the section "changed"
    files_digest: str = ""

    @property
    def key(self) -> Tuple[str, str]:
        return (self.app_id, self.platform)

    @property
    def firebase_legacy(self) -> bool:
        return bool(self.firebase_authorization_key) and not self.firebase_authorization_file

    def option(self, name: str, default: str = "") -> str:
        return dict(self.options).get(name, default)


def _split_host_port(value: str) -> Tuple[str, int]:
    """``apple_push_url``: ``host``, ``host:port`` or ``[v6]:port`` (an URL is tolerated)."""
    try:
        parts = urlsplit(value if "://" in value else "//" + value)
    except ValueError:  # e.g. an unclosed [
        raise SettingError("must be host or host:port, with a valid host name", "apple_push_url") from None
    try:
        host, port = parts.hostname, parts.port or 443
    except ValueError:
        raise SettingError("has an invalid port", "apple_push_url") from None
    if not host or parts.path.strip("/") or not valid_url_host(host):
        raise SettingError("must be host or host:port, with a valid host name", "apple_push_url")
    return host, port


def _http_url(value: str, key: str) -> str:
    """An http(s) URL with a valid host name and port, in ASCII."""
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. an unclosed [
        raise SettingError("must be an http(s) URL with a valid host name, in ASCII", key) from None
    try:
        parts.port
    except ValueError:
        raise SettingError("has an invalid port", key) from None
    if not value.isascii() or " " in value or parts.scheme not in ("https", "http") \
            or not parts.hostname or not valid_url_host(parts.hostname):
        raise SettingError("must be an http(s) URL with a valid host name, in ASCII", key)
    return value


#: keys whose value is one line of text (custom keys are passed on as they are)
_KNOWN_KEYS = ("app_id", "app_type", "app_platform", "apple_certificate", "apple_key", "key_id", "team_id",
               "apple_push_url", "voip", "apple_apns_id", "firebase_push_url", "firebase_authorization_file",
               "firebase_authorization_key", "tls_ca_file", "log_remote_urls", "log_remote_timeout",
               "log_remote_key")


def _app_from_section(settings: Settings, section: str, values: Dict[str, str]) -> AppConfig:
    for key in _KNOWN_KEYS:
        if _CONTROL.search(values.get(key, "").strip()):
            raise SettingError("must be one line without control characters", key)

    def need(key: str) -> str:
        value = values.get(key, "").strip()
        if not value:
            raise SettingError("is missing", key)
        return value

    def credential(key: str) -> str:
        name = values.get(key, "").strip()
        if not name:
            return ""
        path = settings.credential(name)
        if not os.path.isfile(path):
            raise SettingError(f"file {path} does not exist", key)
        if not os.access(path, os.R_OK):
            raise SettingError(f"file {path} is not readable", key)
        return path

    app_id = need("app_id")
    app_type = need("app_type").lower()
    platform_name = need("app_platform").lower()
    platform = PLATFORM_ALIASES.get(platform_name, platform_name)
    host, port = ("api.push.apple.com", 443)
    if values.get("apple_push_url", "").strip():
        host, port = _split_host_port(values["apple_push_url"].strip())
    firebase_url = values.get("firebase_push_url", "").strip()
    if firebase_url:
        _http_url(firebase_url, "firebase_push_url")
    # accepted as the original accepts it; the event decides whether a push is VoIP
    _bool(values.get("voip", "false"), "voip")
    remote_urls = tuple(_http_url(u.strip(), "log_remote_urls")
                        for u in values.get("log_remote_urls", "").split(",") if u.strip())
    try:
        remote_timeout = _seconds(values.get("log_remote_timeout", "").strip() or "2")
    except SettingError as exc:
        raise SettingError(exc.rule, "log_remote_timeout") from None
    files = {"apple_certificate": credential("apple_certificate"), "apple_key": credential("apple_key"),
             "firebase_authorization_file": credential("firebase_authorization_file"),
             "tls_ca_file": credential("tls_ca_file")}
    apple_certificate = files["apple_certificate"]
    return AppConfig(
        section=section, app_id=app_id, app_type=app_type, platform=platform,
        apple_certificate=apple_certificate,
        apple_certificate_not_after=pem_file_not_after(apple_certificate) if apple_certificate else None,
        apple_key=files["apple_key"],
        key_id=values.get("key_id", "").strip(),
        team_id=values.get("team_id", "").strip(),
        apple_host=host, apple_port=port,
        apple_apns_id=_bool(values.get("apple_apns_id", "false"), "apple_apns_id"),
        firebase_push_url=firebase_url,
        firebase_authorization_file=files["firebase_authorization_file"],
        firebase_authorization_key=values.get("firebase_authorization_key", "").strip(),
        tls_ca_file=files["tls_ca_file"],
        log_remote_urls=remote_urls,
        log_remote_timeout=remote_timeout,
        log_remote_key=values.get("log_remote_key", "").strip(),
        options=tuple(sorted(values.items())),
        files_digest=files_digest(files_named(settings, values, files)),
    )


def files_named(settings: Settings, values: Dict[str, str], credentials: Dict[str, str]) -> List[str]:
    """The files a section names: its credentials, and any other ``*_file``
    key naming an existing file (custom push services read those)."""
    paths = [path for path in credentials.values() if path]
    for key, value in sorted(values.items()):
        if key.endswith("_file") and key not in credentials and value.strip():
            path = settings.credential(value.strip())
            if os.path.isfile(path):
                paths.append(path)
    return paths


def files_digest(paths: Sequence[str]) -> str:
    """SHA-256 over the names and contents of ``paths`` (a file that cannot
    be read counts as empty: the client that loads it says why)."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            with open(path, "rb") as stream:
                content = stream.read()
        except OSError:
            content = b""
        digest.update(f"{path}\0{len(content)}\0".encode("utf-8", "surrogateescape"))
        digest.update(content)
    return digest.hexdigest()


def load_applications(settings: Settings) -> Tuple[List[AppConfig], List[Tuple[str, str]]]:
    """Parse applications.ini.

    Returns the usable applications and ``(section, reason)`` for each section
    left out.  Raises :class:`ConfigError` when the file itself cannot be
    read or parsed (a reload then keeps the previous applications).
    """
    path = settings.path(settings.applications_file)
    parser, lines = read_ini(path)
    apps: List[AppConfig] = []
    problems: List[Tuple[str, str]] = []
    seen: Dict[Tuple[str, str], str] = {}
    for section in parser.sections():
        for warning in application_warnings(path, section, dict(parser.items(section))):
            log.warning("%s", warning)
        try:
            app = _app_from_section(settings, section, dict(parser.items(section)))
        except SettingError as exc:
            line = lines.get((section, exc.key))
            problems.append((section, f"line {line}: {exc}" if line else str(exc)))
            continue
        if app.key in seen:
            problems.append((section, f"{app.platform} {app.app_id} is already configured in section {seen[app.key]}"))
            continue
        seen[app.key] = section
        apps.append(app)
    return apps, problems
