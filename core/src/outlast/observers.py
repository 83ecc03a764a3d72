"""Observing runs from inside an app: register a callback for every event.

Plugins observe through the ``outlast_event`` hook of an installed entry
point; an app registers a plain callable instead::

    import outlast

    def log_event(event: outlast.Event) -> None:
        print(event.kind, event.run_id, f"{event.duration * 1000:.1f} ms")

    observer = outlast.observe(log_event)
    ...
    observer.close()  # or: with outlast.observe(log_event): ...

A callback runs on the event loop of the run it observes, for every run of
the process: it must return quickly, and an exception in it is logged and
ignored (a run never fails because of an observer).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from types import TracebackType

from outlast.events import Event
from outlast.hookspecs import hookimpl
from outlast.messages import JSONObject
from outlast.plugins import log, plugin_manager

_names = itertools.count(1)


class _Callback:
    """A plugin object whose ``outlast_event`` calls one callback."""

    def __init__(self, callback: Callable[[Event], object]) -> None:
        self.callback = callback

    @hookimpl
    def outlast_event(self, event: Event) -> None:
        self.callback(event)


class Observer:
    """A registration made by :func:`observe`; :meth:`close` ends it."""

    def __init__(self, callback: Callable[[Event], object]) -> None:
        self.callback = callback
        self.name = f"outlast.observe-{next(_names)}"
        self._plugin: _Callback | None = _Callback(callback)
        plugin_manager().register(self._plugin, name=self.name)

    def __repr__(self) -> str:
        state = "closed" if self._plugin is None else "open"
        return f"Observer({self.callback!r}, {state})"

    def close(self) -> None:
        """Stop calling the callback; idempotent."""
        if self._plugin is not None:
            plugin_manager().unregister(self._plugin, name=self.name)
            self._plugin = None

    def __enter__(self) -> Observer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def observe(callback: Callable[[Event], object]) -> Observer:
    """Call ``callback(event)`` for every :class:`~outlast.Event` of every run
    in this process until the returned :class:`Observer` is closed."""
    if not callable(callback):
        raise TypeError(f"observe() needs a callable taking an Event, got {callback!r}")
    return Observer(callback)


def run_context(event: Event) -> JSONObject | None:
    """What an ``outlast_run_context`` hook wants stored with the run as its
    attempt starts (a trace context), or None. A failing hook is logged."""
    try:
        found = plugin_manager().hook.outlast_run_context(event=event)
    except Exception:  # noqa: BLE001 - a plugin must never break a run
        log.warning("an outlast_run_context hook raised", exc_info=True)
        return None
    return found if isinstance(found, dict) and found else None
