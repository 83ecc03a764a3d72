"""What one event's span is called and carries: its name, kind, attributes
and status (the bookkeeping of which span is whose parent is in
:mod:`outlast_opentelemetry.telemetry`)."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from outlast import JSON, Event, EventKind
from outlast_opentelemetry import names

AttributeMap = dict[str, str | bool | int]

_CLIENT = frozenset(
    {
        EventKind.BEGIN,
        EventKind.CLAIM,
        EventKind.SAVE,
        EventKind.RENEW,
        EventKind.COMPLETE,
        EventKind.FAIL,
        EventKind.RELEASE,
        EventKind.WAIT,
        EventKind.LEASE_LOST,
        EventKind.MODEL_CALL,
    }
)
"""Calls out of the process (the store, the model's API): CLIENT spans."""

FAILED_TOOL = frozenset({"tool_error", "no_such_tool"})
"""Tool call outcomes that are errors although the run goes on (the model is told)."""


def nanoseconds(seconds: float) -> int:
    """An OpenTelemetry timestamp: nanoseconds since the epoch."""
    return round(seconds * 1e9)


def run_attributes(event: Event, kind: str | None, attempt: int) -> AttributeMap:
    """Which run, which attempt: on every span."""
    attributes: AttributeMap = {
        names.RUN_ID: event.run_id,
        names.NAMESPACE: event.namespace,
        names.EPOCH: event.epoch,
        names.ATTEMPT: attempt,
    }
    if kind is not None:
        attributes[names.RUN_KIND] = kind
    return attributes


def attempt_name(kind: str | None) -> str:
    return names.ATTEMPT_SPAN if kind is None else f"{names.ATTEMPT_SPAN} {kind}"


def operation_name(event: Event) -> str:
    """``outlast.<event kind>``, with the tool's or the model's name for those calls."""
    name = f"outlast.{event.kind.value}"
    if event.kind is EventKind.TOOL_CALL:
        tool = event.detail.get("tool")
        return f"{name} {tool}" if isinstance(tool, str) and tool else name
    if event.kind is EventKind.MODEL_CALL:
        model = event.detail.get("model")
        return f"{name} {model}" if isinstance(model, str) and model else name
    return name


def operation_attributes(event: Event) -> AttributeMap:
    """What is particular to an operation's kind (see :mod:`outlast.events`)."""
    attributes: AttributeMap = {names.OPERATION: event.kind.value}
    detail = event.detail
    if event.kind is EventKind.MODEL_CALL:
        _put_str(attributes, names.MODEL, detail.get("model"))
        _put_int(attributes, names.MODEL_TOOL_CALLS, detail.get("tool_calls"))
        usage = detail.get("usage")
        if isinstance(usage, Mapping):
            for key, value in usage.items():
                _put_int(attributes, names.USAGE_PREFIX + key, value)
                if key in names.GEN_AI_USAGE:
                    _put_int(attributes, names.GEN_AI_USAGE[key], value)
    elif event.kind is EventKind.TOOL_CALL:
        _put_str(attributes, names.TOOL_NAME, detail.get("tool"))
        _put_str(attributes, names.GEN_AI_TOOL_NAME, detail.get("tool"))
        _put_str(attributes, names.TOOL_CALL_ID, detail.get("call_id"))
        _put_str(attributes, names.GEN_AI_TOOL_CALL_ID, detail.get("call_id"))
        _put_str(attributes, names.TOOL_OUTCOME, detail.get("outcome"))
    return attributes


def operation_status(event: Event) -> Status | None:
    """ERROR with the error's text for a failed operation (a tool's error too)."""
    if event.error is not None:
        return Status(StatusCode.ERROR, event.error)
    outcome = event.detail.get("outcome")
    if event.kind is EventKind.TOOL_CALL and outcome in FAILED_TOOL:
        return Status(StatusCode.ERROR, f"tool call outcome: {outcome}")
    return None


def operation_span(
    tracer: Tracer, event: Event, parent: Context, kind: str | None, attempt: int
) -> Span:
    """The ended span of one operation, from ``event.started_at`` to ``event.at``."""
    span = tracer.start_span(
        operation_name(event),
        context=parent,
        kind=SpanKind.CLIENT if event.kind in _CLIENT else SpanKind.INTERNAL,
        attributes={**run_attributes(event, kind, attempt), **operation_attributes(event)},
        start_time=nanoseconds(event.started_at),
    )
    status = operation_status(event)
    if status is not None:
        span.set_status(status)
    span.end(end_time=nanoseconds(event.at))
    return span


def _put_str(attributes: AttributeMap, key: str, value: JSON) -> None:
    if isinstance(value, str):
        attributes[key] = value


def _put_int(attributes: AttributeMap, key: str, value: object) -> None:
    if isinstance(value, int) and not isinstance(value, bool):
        attributes[key] = value
