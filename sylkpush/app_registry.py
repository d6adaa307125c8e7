"""The live set of configured applications: config, renderers and push client of each.

A registry is built from the parsed applications.ini and is never changed
afterwards; a reload builds a new one and swaps it in with one assignment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Type

from twisted.internet.defer import DeferredList, succeed

from sylkpush.applications.renderer_classes import renderer_classes
from sylkpush.config import AppConfig, ConfigError, Settings
from sylkpush.pns.base import PushClient
from sylkpush.pns.client_classes import client_class

log = logging.getLogger(__name__)


@dataclass
class Application:
    """One configured application, ready to serve."""

    config: AppConfig
    headers_class: Type
    payload_class: Type
    #: None when the push-service client could not be loaded (answers 503)
    client: Optional[PushClient]
    client_problem: str = ""

    @cached_property
    def label(self) -> str:
        """How error messages name the app, e.g. ``Apple com.example.app`` (on every push's result line)."""
        return f"{self.config.platform.capitalize()} {self.config.app_id}"


class AppRegistry:
    """An immutable mapping of ``(app_id, platform)`` to :class:`Application`."""

    def __init__(self, applications: Iterable[Application] = ()) -> None:
        self._apps: Dict[Tuple[str, str], Application] = {a.config.key: a for a in applications}
        # asked for every request: made once (the registry never changes)
        self._platforms = frozenset(key[1] for key in self._apps)

    def get(self, app_id: str, platform: str) -> Optional[Application]:
        return self._apps.get((app_id, platform))

    def __iter__(self):
        return iter(self._apps.values())

    def __len__(self) -> int:
        return len(self._apps)

    @property
    def platforms(self) -> frozenset:
        """The platforms of the configured applications."""
        return self._platforms

    def stop(self):
        """Stop every client; the Deferred fires when all have finished."""
        stops = [app.client.stop() for app in self if app.client is not None]
        return DeferredList(stops, consumeErrors=True) if stops else succeed(None)


#: ``(platform, extra_pns_dir)`` to the client class (see :mod:`sylkpush.pns.client_classes`)
ClientClassFinder = Callable[[str, str], Type[PushClient]]
#: ``(app_type, platform, extra_applications_dir)`` to the renderer classes
#: (see :mod:`sylkpush.applications.renderer_classes`)
RendererFinder = Callable[[str, str, str], Tuple[Type, Type]]


def build_registry(settings: Settings, configs: Iterable[AppConfig], reactor: Any,
                   find_client: ClientClassFinder = client_class,
                   find_renderers: RendererFinder = renderer_classes,
                   previous: Optional[AppRegistry] = None,
                   ) -> Tuple[AppRegistry, List[Tuple[str, str]]]:
    """Make an :class:`Application` of each config (clients not started).

    Returns the registry and ``(section, reason)`` for each application left
    out: whatever goes wrong while one application is built leaves out that
    one only.  An application whose push-service code cannot be loaded stays
    in, without a client, so its requests get a 503 that says why.  With
    ``previous`` (a reload), an application whose settings are unchanged
    (the contents of the files it names included) keeps its running client,
    so its connections survive the reload.

    Building reads key files, parses keys and imports custom modules: a
    reload runs it in a thread (see :mod:`sylkpush.service`), so nothing here
    may schedule a timer or connect; ``start()`` does that, on the reactor
    thread.
    """
    apps: List[Application] = []
    problems: List[Tuple[str, str]] = []
    for config in configs:
        try:
            app, problem = _build_application(settings, config, reactor, find_client, find_renderers, previous)
        except ConfigError as exc:
            problems.append((config.section, str(exc)))
            continue
        except Exception as exc:
            problems.append((config.section, _unexpected(exc, config.section, "cannot be set up")))
            continue
        apps.append(app)
        if problem:
            problems.append((config.section, problem))
    return AppRegistry(apps), problems


def _build_application(settings: Settings, config: AppConfig, reactor: Any, find_client: ClientClassFinder,
                       find_renderers: RendererFinder, previous: Optional[AppRegistry],
                       ) -> Tuple[Application, str]:
    """The application of ``config`` and the problem it is kept with ("" for none)."""
    headers_class, payload_class = find_renderers(
        config.app_type, config.platform, settings.path(settings.extra_applications_dir))
    try:
        found = find_client(config.platform, settings.path(settings.extra_pns_dir))
    except ConfigError as exc:
        # kept, without a client: its callers learn why (503) instead of "not configured"
        return Application(config, headers_class, payload_class, None, str(exc)), str(exc)
    old = previous.get(*config.key) if previous is not None else None
    if (old is not None and old.config == config and old.client is not None
            and type(old.client) is found):
        return Application(config, headers_class, payload_class, old.client), ""
    return Application(config, headers_class, payload_class, found(config, reactor)), ""


def _unexpected(exc: Exception, section: str, what: str) -> str:
    """The reason given for an exception nobody expected; its traceback goes to the log."""
    log.error("application [%s] %s", section, what, exc_info=exc)
    return f"{what}: {type(exc).__name__}: {exc}"


def start_clients(registry: AppRegistry, previous: Optional[AppRegistry] = None,
                  ) -> Tuple[AppRegistry, List[Tuple[str, str]]]:
    """Start the clients of ``registry`` that ``previous`` does not run already.

    A client whose ``start()`` raises is stopped and its application left
    out, as if its settings were broken.  Returns the registry of what runs
    and ``(section, reason)`` for each application left out.
    """
    running = {id(app.client) for app in previous} if previous is not None else set()
    apps: List[Application] = []
    problems: List[Tuple[str, str]] = []
    for app in registry:
        client = app.client
        if client is not None and id(client) not in running:
            try:
                client.start()
            except Exception as exc:
                problems.append((app.config.section, _unexpected(exc, app.config.section, "cannot be started")))
                _stop_quietly(client)
                continue
        apps.append(app)
    return AppRegistry(apps), problems


def _stop_quietly(client: PushClient) -> None:
    """Stop a client that failed to start; whatever it says is only logged."""
    try:
        stopping = client.stop()
    except Exception:
        log.exception("stopping the client of [%s] after its failed start", client.app.section)
        return
    if hasattr(stopping, "addErrback"):
        stopping.addErrback(lambda failure: log.error("stopping the client of [%s] after its failed start: %s",
                                                      client.app.section, failure.getErrorMessage()))


@dataclass
class Rebuild:
    """The outcome of a reload: the registry to swap in and what changes."""

    registry: AppRegistry
    #: clients created (and started) by the reload
    added: List[PushClient]
    #: clients of the previous registry no longer used: stop them after the swap
    retired: List[PushClient]
    problems: List[Tuple[str, str]]
    #: sections whose new settings are broken and whose previous application stays
    kept: List[str]


def rebuild_registry(built: Tuple[AppRegistry, List[Tuple[str, str]]], problems: Iterable[Tuple[str, str]],
                     previous: AppRegistry) -> Rebuild:
    """The registry for a reloaded applications.ini, from what
    :func:`build_registry` made of it with ``previous``; its new clients are
    started here, on the reactor thread.

    Unchanged applications keep their clients; a section whose new settings
    are broken (or whose new client fails to start) keeps its previous
    application (the previous working settings stay active), unless another
    section now owns its key; a section that was removed from the file is
    removed.
    """
    registry, more = built
    registry, failed = start_clients(registry, previous)
    problems = list(problems) + more + failed
    apps = {app.config.key: app for app in registry}
    old_by_section = {app.config.section: app for app in previous}
    kept = []
    for section, _ in problems:
        old = old_by_section.get(section)
        if old is None or old.client is None:
            continue
        now = apps.get(old.config.key)
        if now is None or (now.client is None and now.config.section == section):
            apps[old.config.key] = old
            kept.append(section)
    registry = AppRegistry(apps.values())
    old_clients = {id(app.client) for app in previous if app.client is not None}
    new_clients = {id(app.client) for app in registry if app.client is not None}
    added = [app.client for app in registry if app.client is not None and id(app.client) not in old_clients]
    retired = [app.client for app in previous if app.client is not None and id(app.client) not in new_clients]
    return Rebuild(registry, added, retired, problems, kept)


def problem_states(problems: Iterable[Tuple[str, str]], kept: Iterable[str] = ()) -> Dict[str, Dict[str, str]]:
    """What ``/health`` shows of the sections with a problem: ``disabled``
    (left out) or ``previous-settings`` (one of ``kept``), and the reason."""
    kept = set(kept)
    return {section: {"state": "previous-settings" if section in kept else "disabled", "reason": reason}
            for section, reason in problems}


def log_problems(problems: Iterable[Tuple[str, str]], kept: Iterable[str] = ()) -> None:
    """One line per section with a problem, naming it and the reason: an
    ERROR for an application left out, a WARNING for one of ``kept``, whose
    previous working settings stay active."""
    kept = set(kept)
    for section, reason in problems:
        if section in kept:
            log.warning("application [%s]: new settings not applied, its previous working settings stay "
                        "active: %s", section, reason)
        else:
            log.error("application [%s] disabled: %s", section, reason)
