"""An attempt's own events: ``attempt_start`` and ``attempt_end``, and the
context a plugin stores with the run between attempts.

As an attempt starts, observers see ``attempt_start`` with the context the
previous attempt stored (``detail["previous"]``); an ``outlast_run_context``
hook may then return a new one (a trace context), which the loop saves with
the run's progress as a bookkeeping note (``Message`` of role ``outlast``,
``meta={"context": ...}``), so the next attempt on any worker finds it.
"""

from __future__ import annotations

from dataclasses import replace

from outlast.errors import LeaseLost, RunWaiting, Shutdown, StoreError
from outlast.events import Event, EventKind
from outlast.messages import JSON, MARKER, JSONObject, Message
from outlast.observers import run_context
from outlast.plugins import emit
from outlast.ports import ResumeState
from outlast.steps import RunScope


def previous_context(history: tuple[Message, ...]) -> JSONObject | None:
    """The context the last attempt stored in ``history`` (newest first), or None."""
    for message in reversed(history):
        if message.role == MARKER and isinstance(message.meta.get("context"), dict):
            context = message.meta["context"]
            assert isinstance(context, dict)
            return context
    return None


def attempt_started(scope: RunScope, resume: ResumeState | None) -> RunScope:
    """Emit ``attempt_start``; the scope with the context to store, if a hook gives one."""
    detail: dict[str, JSON] = {"kind": scope.kind, "resumed": resume is not None}
    previous = previous_context(resume.history) if resume is not None else None
    if previous is not None:
        detail["previous"] = previous
    event = Event(
        EventKind.ATTEMPT_START,
        scope.run_id,
        scope.namespace,
        scope.epoch,
        0.0,
        attempt=scope.attempt,
        detail=detail,
    )
    emit(event)
    context = run_context(event)
    return scope if context is None else replace(scope, context=context)


def attempt_ended(scope: RunScope, duration: float, error: BaseException | None) -> None:
    """Emit ``attempt_end`` with how the attempt ended."""
    emit(
        Event(
            EventKind.ATTEMPT_END,
            scope.run_id,
            scope.namespace,
            scope.epoch,
            duration,
            None if error is None else f"{type(error).__name__}: {error}",
            attempt=scope.attempt,
            detail={"kind": scope.kind, "outcome": outcome_of(error)},
        )
    )


def outcome_of(error: BaseException | None) -> str:
    """How an attempt that raised ``error`` (None: returned) ended, in one word."""
    if error is None:
        return "completed"
    if isinstance(error, Shutdown):
        return "released"
    if isinstance(error, RunWaiting):
        return "waiting"
    if isinstance(error, LeaseLost | StoreError | OSError):
        return "left"
    return "failed"  # the run's own error, or the caller's cancellation
