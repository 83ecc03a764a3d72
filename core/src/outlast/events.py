"""Events the executor reports to ``outlast_event`` hook implementations."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class EventKind(enum.StrEnum):
    BEGIN = "begin"
    SAVE = "save"
    COMPLETE = "complete"
    FAIL = "fail"
    RELEASE = "release"
    WAIT = "wait"
    CLAIM = "claim"
    LEASE_LOST = "lease_lost"


@dataclass(frozen=True, slots=True)
class Event:
    """One durable-run operation: what, for which run, how long, and whether it failed.

    ``duration`` is in seconds (monotonic clock); ``error`` is the text of the
    store error when the operation failed, else None.
    """

    kind: EventKind
    run_id: str
    namespace: str
    epoch: int
    duration: float
    error: str | None = None
