"""pluggy hook specifications of the ``outlast`` project.

A backend package implements these in a module and names that module in an
entry point of the group ``outlast``::

    [project.entry-points.outlast]
    postgres = "outlast_postgres.plugin"

The built-in memory and SQLite stores register through the same hooks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pluggy

from outlast.events import Event
from outlast.ports import CheckpointerFactory
from outlast.urls import BackendInfo

PROJECT = "outlast"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec(firstresult=True)
def outlast_open(url: str, options: Mapping[str, Any]) -> CheckpointerFactory | None:
    """Open a store for ``url`` when its scheme is yours; else return None.

    ``options`` are keyword options the caller passed to ``outlast.open``
    (they win over the same option in the URL's query). Validate them and
    raise :class:`~outlast.errors.ConfigurationError` naming a bad one. Do not
    connect here: connect lazily on first use, so opening never blocks. Never
    put the URL's password in an error or repr (``outlast.urls.redact``).
    """


@hookspec
def outlast_backends() -> list[BackendInfo]:  # type: ignore[empty-body]  # a spec has no body
    """Describe the backends you provide: name, URL schemes, package, version,
    capabilities. Used by ``outlast backends`` and by the unknown-scheme error."""


@hookspec
def outlast_event(event: Event) -> None:
    """Observe a run's event (:mod:`outlast.events`: attempts, model and tool
    calls, and every store operation, with its timing). Called on the event
    loop: return quickly and never raise (an exception is logged and
    otherwise ignored). An app registers a callback with :func:`outlast.observe`."""


@hookspec(firstresult=True)
def outlast_run_context(event: Event) -> dict[str, Any] | None:
    """Called as an attempt starts (``event.kind`` is ``attempt_start``,
    after ``outlast_event`` saw it): return a small JSON object to store with
    the run's progress (a trace context), or None. The run's next attempt,
    on whichever worker, gets it back as ``event.detail["previous"]`` of its
    ``attempt_start``: so a tracing plugin links a run across the workers
    that carried it."""
