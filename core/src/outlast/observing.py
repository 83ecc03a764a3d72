"""Store operations timed and reported to ``outlast_event`` observers."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import TypeVar

from outlast.errors import LeaseLost
from outlast.events import Event, EventKind
from outlast.plugins import emit

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
    """Await ``operation`` and emit one event with its duration (and error).

    A LeaseLost is reported as ``lease_lost``, whatever the operation was.
    """
    started = time.monotonic()

    def event(kind: EventKind, error: str | None = None) -> Event:
        return Event(
            kind, run_id, namespace, epoch, time.monotonic() - started, error, attempt=attempt
        )

    try:
        result = await operation
    except LeaseLost as exc:
        emit(event(EventKind.LEASE_LOST, str(exc)))
        raise
    except Exception as exc:
        emit(event(kind, str(exc)))
        raise
    emit(event(kind))
    return result
