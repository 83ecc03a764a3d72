"""Store operations timed and reported to ``outlast_event`` observers."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import TypeVar

from outlast.errors import LeaseLost
from outlast.events import Event, EventKind
from outlast.plugins import emit, listening

T = TypeVar("T")


async def observed(
    kind: EventKind,
    run_id: str,
    namespace: str,
    epoch: int,
    operation: Awaitable[T],
    *,
    attempt: int = 0,
) -> T:
    """Await ``operation`` and emit one event with its duration (and error),
    when someone listens (else no event is made).

    A LeaseLost is reported as ``lease_lost``, whatever the operation was.
    """
    started = time.monotonic()
    try:
        result = await operation
    except LeaseLost as exc:
        _report(EventKind.LEASE_LOST, run_id, namespace, epoch, started, str(exc), attempt)
        raise
    except Exception as exc:
        _report(kind, run_id, namespace, epoch, started, str(exc), attempt)
        raise
    _report(kind, run_id, namespace, epoch, started, None, attempt)
    return result


def _report(
    kind: EventKind,
    run_id: str,
    namespace: str,
    epoch: int,
    started: float,
    error: str | None,
    attempt: int,
) -> None:
    if listening():
        duration = time.monotonic() - started
        ended = time.time()  # the event's ``at``
        emit(Event(kind, run_id, namespace, epoch, duration, error, ended, attempt))
