"""The plugin manager: loads backends from the ``outlast`` entry-point group
and opens stores by URL.

Entry points are loaded defensively: a plugin that fails to import or
register is reported by name (:func:`broken_plugins`, ``outlast backends``, a
WARNING log) and the host keeps working with the others.
"""

from __future__ import annotations

import difflib
import functools
import importlib.metadata
import logging
import os
from dataclasses import dataclass
from typing import Any

import pluggy

from outlast import hookspecs
from outlast.errors import ConfigurationError, UnknownBackend
from outlast.ports import CheckpointerFactory
from outlast.retention import RetentionSchedule, take_retention
from outlast.store import Store
from outlast.urls import DEFAULT_URL, KNOWN_PACKAGES, URL_ENV, BackendInfo, scheme_of

log = logging.getLogger("outlast.plugins")

ENTRY_POINT_GROUP = "outlast"


@dataclass(frozen=True, slots=True)
class BrokenPlugin:
    """An entry point that could not be loaded or registered, and why."""

    name: str
    value: str
    error: str


class _Manager:
    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.broken: list[BrokenPlugin] = []


@functools.cache
def _manager() -> _Manager:
    from outlast.stores import builtin

    manager = _Manager()
    manager.pm.register(builtin, name="outlast.builtin")
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if manager.pm.has_plugin(entry_point.name):
            continue
        try:
            manager.pm.register(entry_point.load(), name=entry_point.name)
            manager.pm.check_pending()
        except Exception as exc:  # noqa: BLE001 - any plugin bug must not take the host down
            plugin = manager.pm.get_plugin(entry_point.name)
            if plugin is not None:
                manager.pm.unregister(plugin)
            broken = BrokenPlugin(
                entry_point.name, entry_point.value, f"{type(exc).__name__}: {exc}"
            )
            manager.broken.append(broken)
            log.warning(
                "outlast plugin %r (%s) could not be loaded: %s",
                broken.name,
                broken.value,
                broken.error,
            )
    return manager


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, entry points loaded on first use."""
    return _manager().pm


def reset_plugins() -> None:
    """Forget the loaded plugins so the next use loads entry points again (tests)."""
    _manager.cache_clear()


def broken_plugins() -> list[BrokenPlugin]:
    """Entry points that failed to load, each with its error."""
    return list(_manager().broken)


def backends() -> list[BackendInfo]:
    """Every installed backend, sorted by name."""
    found = [info for infos in plugin_manager().hook.outlast_backends() for info in infos]
    return sorted(found, key=lambda info: info.name)


def open(url: str | None = None, **options: Any) -> Store:
    """Open the store at ``url`` (default: ``$OUTLAST_URL``, else the local SQLite file).

    Keyword ``options`` override options of the URL's query. Every store
    takes ``retention`` (see :mod:`outlast.retention`); it is taken out
    before the backend sees the options. Returns a :class:`~outlast.store.Store`
    in front of the backend's factory. Raises UnknownBackend naming the
    scheme, the installed backends and the package to install;
    ConfigurationError for a malformed URL or bad option.
    """
    url = url or os.environ.get(URL_ENV) or DEFAULT_URL
    scheme = scheme_of(url)
    url, retention = take_retention(url, options)
    factory: CheckpointerFactory | None = plugin_manager().hook.outlast_open(
        url=url, options=options
    )
    if factory is None:
        broken = [b for b in broken_plugins() if KNOWN_PACKAGES.get(scheme, "").endswith(b.name)]
        if broken:
            raise ConfigurationError(
                f"the backend for {scheme!r} is installed but broken: {broken[0].error}"
            )
        raise unknown_backend(scheme)
    schedule = None if retention is None else RetentionSchedule(retention)
    return Store(factory, retention=schedule)


def unknown_backend(scheme: str) -> UnknownBackend:
    """The error for a scheme no installed backend serves: the installed
    schemes, the package to install, and the closest scheme to a typo."""
    installed = sorted({s for info in backends() for s in info.schemes})
    known = sorted({*installed, *KNOWN_PACKAGES})
    close = difflib.get_close_matches(scheme, [s for s in known if s != scheme], n=1, cutoff=0.75)
    return UnknownBackend(
        scheme, installed, KNOWN_PACKAGES.get(scheme), suggestion=close[0] if close else None
    )


def listening() -> bool:
    """Whether any ``outlast_event`` hook is registered (else events need not be made)."""
    return bool(plugin_manager().hook.outlast_event.get_hookimpls())


def emit(event: Any) -> None:
    """Hand ``event`` to every ``outlast_event`` hook; a failing observer is logged."""
    for impl in plugin_manager().hook.outlast_event.get_hookimpls():
        try:
            impl.function(event=event)
        except Exception:  # an observer must never break a run
            log.warning("outlast_event observer %r raised", impl.plugin_name, exc_info=True)
