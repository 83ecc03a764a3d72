"""outlast's hook implementations for OpenTelemetry (entry point
``outlast: opentelemetry``): every event of every run goes to the
configured :class:`~outlast_opentelemetry.telemetry.Telemetry`.

Hooks run on the run's event loop and must never raise into the run: any
error here is logged (once at WARNING, then at DEBUG) and swallowed.
"""

from __future__ import annotations

import logging
from typing import Any

from outlast import Event, hookimpl
from outlast_opentelemetry.config import telemetry

log = logging.getLogger("outlast_opentelemetry")

_warned = False


@hookimpl
def outlast_event(event: Event) -> None:
    """One span (or the attempt's start or end) and its measurements."""
    try:
        telemetry().observe(event)
    except Exception:  # noqa: BLE001 - telemetry must never break a run
        _failed("outlast_event")


@hookimpl
def outlast_run_context(event: Event) -> dict[str, Any] | None:
    """The starting attempt's W3C trace context, stored with the run so its
    next attempt (on any worker) links to this one."""
    try:
        return telemetry().context_of(event)
    except Exception:  # noqa: BLE001 - telemetry must never break a run
        _failed("outlast_run_context")
        return None


def _failed(hook: str) -> None:
    global _warned
    level = logging.DEBUG if _warned else logging.WARNING
    _warned = True
    log.log(level, "outlast-opentelemetry: the %s hook failed", hook, exc_info=True)
