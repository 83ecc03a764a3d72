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
    kind: EventKind, run_id: str, namespace: str, epoch: int, operation: Awaitable[T]
) -> T:
    """Await ``operation`` and emit one event with its duration (and error).

    A LeaseLost is reported as ``lease_lost``, whatever the operation was.
    """
    started = time.monotonic()
    try:
        result = await operation
    except LeaseLost as exc:
        emit(
            Event(
                EventKind.LEASE_LOST, run_id, namespace, epoch, time.monotonic() - started, str(exc)
            )
        )
        raise
    except Exception as exc:
        emit(Event(kind, run_id, namespace, epoch, time.monotonic() - started, str(exc)))
        raise
    emit(Event(kind, run_id, namespace, epoch, time.monotonic() - started))
    return result
