"""The configured applications: config, renderers and push client of each.

A registry is built from the parsed applications.ini and is never changed
afterwards; a reload builds a new one and swaps it in with one assignment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Type

from twisted.internet.defer import DeferredList, succeed

from sylkpush.config import AppConfig, Settings
from sylkpush.pns import builtin_client_class
from sylkpush.pns.base import ConfigError, PushClient

log = logging.getLogger(__name__)

BUILTIN_PLATFORMS = ("apple", "firebase")


@dataclass
class Application:
    """One configured application, ready to serve."""

    config: AppConfig
    headers_class: Type
    payload_class: Type
    #: None when the push-service client could not be loaded (answers 503)
    client: Optional[PushClient]
    client_problem: str = ""

    @property
    def label(self) -> str:
        """How error messages name the app, e.g. ``Apple com.example.app``."""
        return f"{self.config.platform.capitalize()} {self.config.app_id}"


class AppRegistry:
    """An immutable mapping of ``(app_id, platform)`` to :class:`Application`."""

    def __init__(self, applications: Iterable[Application] = ()) -> None:
        self._apps: Dict[Tuple[str, str], Application] = {a.config.key: a for a in applications}

    def get(self, app_id: str, platform: str) -> Optional[Application]:
        return self._apps.get((app_id, platform))

    def __iter__(self):
        return iter(self._apps.values())

    def __len__(self) -> int:
        return len(self._apps)

    @property
    def platforms(self) -> frozenset:
        return frozenset(key[1] for key in self._apps)

    def start(self) -> None:
        for app in self:
            if app.client is not None:
                app.client.start()

    def stop(self):
        """Stop every client; the Deferred fires when all have finished."""
        stops = [app.client.stop() for app in self if app.client is not None]
        return DeferredList(stops, consumeErrors=True) if stops else succeed(None)


ClientClassFinder = Callable[[str, Settings], Type[PushClient]]
RendererFinder = Callable[[str, str, str], Tuple[Type, Type]]


def default_client_class(platform: str, settings: Settings) -> Type[PushClient]:
    """The client class for ``platform``: built-in, or from extra_pns_dir."""
    if platform in BUILTIN_PLATFORMS:
        return builtin_client_class(platform)
    from sylkpush.plugins import custom_client_class
    return custom_client_class(platform, settings.path(settings.extra_pns_dir))


def default_renderers(app_type: str, platform: str, extra_dir: str) -> Tuple[Type, Type]:
    from sylkpush.applications.registry import renderer_classes
    return renderer_classes(app_type, platform, extra_dir)


def build_registry(settings: Settings, configs: Iterable[AppConfig], reactor: Any,
                   find_client: ClientClassFinder = default_client_class,
                   find_renderers: RendererFinder = default_renderers,
                   ) -> Tuple[AppRegistry, List[Tuple[str, str]]]:
    """Make an :class:`Application` of each config.

    Returns the registry and ``(section, reason)`` for each application left
    out.  An application whose push-service code cannot be loaded stays in,
    without a client, so its requests get a 503 that says why.
    """
    apps: List[Application] = []
    problems: List[Tuple[str, str]] = []
    for config in configs:
        try:
            headers_class, payload_class = find_renderers(
                config.app_type, config.platform, settings.path(settings.extra_applications_dir))
        except ConfigError as exc:
            problems.append((config.section, str(exc)))
            continue
        try:
            client_class = find_client(config.platform, settings)
        except ConfigError as exc:
            apps.append(Application(config, headers_class, payload_class, None, str(exc)))
            continue
        try:
            client = client_class(config, reactor)
        except ConfigError as exc:
            problems.append((config.section, str(exc)))
            continue
        apps.append(Application(config, headers_class, payload_class, client))
    return AppRegistry(apps), problems


def log_problems(problems: Iterable[Tuple[str, str]]) -> None:
    """One ERROR line per application left out, naming section and reason."""
    for section, reason in problems:
        log.error("application [%s] disabled: %s", section, reason)
