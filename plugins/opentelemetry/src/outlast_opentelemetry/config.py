"""The process's telemetry: global providers by default, or the ones given
to :func:`configure`."""

from __future__ import annotations

import threading

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from outlast_opentelemetry.telemetry import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_PENDING_TIMEOUT,
    Telemetry,
)

_lock = threading.Lock()
_current: Telemetry | None = None


def configure(
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    continue_trace: bool = False,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    pending_timeout: float = DEFAULT_PENDING_TIMEOUT,
) -> Telemetry:
    """Use these providers and settings from now on (no argument: the global
    providers and the defaults again); returns the new telemetry.

    Needed only to bypass the global providers (tests, or a process with a
    provider of its own for outlast) or to change a setting:
    ``continue_trace=True`` makes a resumed attempt a child of the previous
    attempt's span instead of a new trace linked to it; ``max_attempts``
    bounds the attempts tracked at once; ``pending_timeout`` is how long (in
    seconds) a begin or claim waits for its attempt to start. Spans the
    previous configuration had open are ended (marked
    ``outlast.attempt.unfinished``). Raises ValueError for a bad setting.
    """
    new = Telemetry(
        tracer_provider,
        meter_provider,
        continue_trace=continue_trace,
        max_attempts=max_attempts,
        pending_timeout=pending_timeout,
    )
    global _current
    with _lock:
        old, _current = _current, new
    if old is not None:
        old.close()
    return new


def telemetry() -> Telemetry:
    """The telemetry in use: made with the global providers on first use."""
    global _current
    current = _current
    if current is not None:
        return current
    with _lock:
        if _current is None:
            _current = Telemetry()
        return _current
