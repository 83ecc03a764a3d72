"""Events the executor reports to observers (``outlast_event`` hook
implementations, and callbacks registered with :func:`outlast.observe`).

Every event is one finished operation of one run, with its timing: ``at`` is
the wall-clock time it ended (``time.time()``), ``duration`` how long it took
(monotonic seconds), so it started at ``at - duration``. ``attempt`` is the
run's attempt (1 for its first, one more per claim; 0 when not known), and
``detail`` holds what is particular to the kind:

==================  ==========================================================
kind                detail
==================  ==========================================================
``attempt_start``   ``kind`` (the run's kind), ``resumed``, and ``previous``:
                    the context the previous attempt stored (see
                    ``outlast_run_context``), or absent. ``duration`` is 0.
``attempt_end``     ``kind``, ``outcome`` (completed, failed, released,
                    waiting, left), with the whole attempt as ``duration``
``model_call``      ``model`` (the client's class), ``tool_calls`` (how many
                    the reply asked for), ``usage`` (the reply's, if any)
``tool_call``       ``tool``, ``call_id``, ``outcome`` (ok, tool_error,
                    waiting, reconciled, unknown, no_such_tool)
``begin``,          the store operation of that name; ``lease_lost`` is any
``save``, ...       of them (or a renewal) refused because another worker
                    took the run
==================  ==========================================================

``error`` is the error's text when the operation failed, else None.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from outlast.messages import JSON


class EventKind(enum.StrEnum):
    ATTEMPT_START = "attempt_start"
    ATTEMPT_END = "attempt_end"
    BEGIN = "begin"
    CLAIM = "claim"
    SAVE = "save"
    RENEW = "renew"
    MODEL_CALL = "model_call"
    TOOL_CALL = "tool_call"
    COMPLETE = "complete"
    FAIL = "fail"
    RELEASE = "release"
    WAIT = "wait"
    LEASE_LOST = "lease_lost"


@dataclass(frozen=True, slots=True)
class Event:
    """One operation of one run: what, for which run, when, how long, and
    whether it failed (see the module docstring)."""

    kind: EventKind
    run_id: str
    namespace: str
    epoch: int
    duration: float
    error: str | None = None
    at: float = field(default_factory=time.time)
    attempt: int = 0
    detail: Mapping[str, JSON] = field(default_factory=dict)

    @property
    def started_at(self) -> float:
        """The wall-clock time the operation started."""
        return self.at - self.duration
