"""Events to spans and metrics: which span is whose parent, and the per-attempt
state that needs (bounded, and dropped as each attempt ends).

An attempt's span starts at ``attempt_start`` and ends at ``attempt_end``;
every other event of the same run at the same epoch becomes an ended child
span of it, timed by the event (``event.at - duration`` to ``event.at``).
``begin`` and ``claim`` come *before* ``attempt_start``: they wait in a
pending buffer (keyed like the attempt) and become children when the attempt
starts, the attempt span starting at the earliest of them. A claim that ends
before any attempt starts (a poison run failed, a cancel request, a shutdown
that hands the run back) still gets an attempt span, made from the pending
events and the ending one.

Nothing here may outgrow its limits for runs that never end: active attempts
and pending buffers are each capped at ``max_attempts`` (the oldest is ended
or exported first), and pending events older than ``pending_timeout`` are
exported as spans of their own when the next event comes.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import (
    Link,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TracerProvider,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from outlast import Event, EventKind
from outlast_opentelemetry import names
from outlast_opentelemetry.instruments import Instruments
from outlast_opentelemetry.spans import (
    attempt_name,
    nanoseconds,
    operation_span,
    run_attributes,
)

Key = tuple[str, str, int]
"""An attempt: (namespace, run id, epoch)."""

PRELUDE = frozenset({EventKind.BEGIN, EventKind.CLAIM})
"""What an attempt does before its ``attempt_start``."""

ENDINGS = {
    EventKind.COMPLETE: "completed",
    EventKind.FAIL: "failed",
    EventKind.RELEASE: "released",
    EventKind.WAIT: "waiting",
    EventKind.LEASE_LOST: "left",
}
"""Events that end a claimed run that never got to ``attempt_start``, and the
outcome its attempt span gets (the words of ``attempt_end``)."""

FAILED = frozenset({"failed", "left"})
"""Attempt outcomes that set the attempt span's status to ERROR."""

PROPAGATOR = TraceContextTextMapPropagator()
"""W3C trace context: what is stored with the run and read back by its next
attempt, whatever propagators the process configured globally."""

DEFAULT_MAX_ATTEMPTS = 10_000
DEFAULT_PENDING_TIMEOUT = 60.0


def key_of(event: Event) -> Key:
    return (event.namespace, event.run_id, event.epoch)


@dataclass(slots=True)
class Attempt:
    """An attempt whose span is open."""

    span: Span
    kind: str | None
    number: int


class Telemetry:
    """Spans and metrics of outlast events, for one tracer and one meter.

    ``tracer_provider`` and ``meter_provider`` default to the global ones
    (looked up lazily: a provider set after this is made is still used).
    ``continue_trace``: a resumed attempt is a child of the previous
    attempt's span (one trace for the whole run) instead of the root of a new
    trace linked to it (the default; see the README for why).
    Thread-safe; every method may be called from any event loop.
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        pending_timeout: float = DEFAULT_PENDING_TIMEOUT,
        continue_trace: bool = False,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts!r}")
        if not pending_timeout > 0:
            raise ValueError(f"pending_timeout must be positive, got {pending_timeout!r}")
        self.max_attempts = max_attempts
        self.pending_timeout = pending_timeout
        self.continue_trace = continue_trace
        self.tracer = trace.get_tracer(
            names.SCOPE, names.SCOPE_VERSION, tracer_provider=tracer_provider
        )
        self.instruments = Instruments(
            metrics.get_meter(names.SCOPE, names.SCOPE_VERSION or "", meter_provider=meter_provider)
        )
        self._lock = threading.Lock()
        self._attempts: OrderedDict[Key, Attempt] = OrderedDict()
        self._pending: OrderedDict[Key, list[Event]] = OrderedDict()

    def __repr__(self) -> str:
        return (
            f"Telemetry(attempts={len(self._attempts)}, pending={len(self._pending)}, "
            f"continue_trace={self.continue_trace})"
        )

    @property
    def open_attempts(self) -> int:
        """Attempts whose span is open (started, not ended)."""
        return len(self._attempts)

    @property
    def pending_attempts(self) -> int:
        """Attempts with begins or claims waiting for their ``attempt_start``."""
        return len(self._pending)

    # -- the hooks -------------------------------------------------------------------

    def observe(self, event: Event) -> None:
        """Turn one event into spans and measurements (the ``outlast_event`` hook)."""
        with self._lock:
            self._expire(time.time())
            if event.kind is EventKind.ATTEMPT_START:
                self._start(event)
            elif event.kind is EventKind.ATTEMPT_END:
                self._end(event)
            else:
                self._operation(event)

    def context_of(self, event: Event) -> dict[str, str] | None:
        """The W3C trace context (``traceparent``, ``tracestate``) of the attempt
        ``event`` started, to store with the run; None without a valid span
        (no SDK configured: nothing is stored). The ``outlast_run_context`` hook."""
        if event.kind is not EventKind.ATTEMPT_START:
            return None
        with self._lock:
            attempt = self._attempts.get(key_of(event))
        if attempt is None or not attempt.span.get_span_context().is_valid:
            return None
        carrier: dict[str, str] = {}
        PROPAGATOR.inject(carrier, context=trace.set_span_in_context(attempt.span))
        return carrier or None

    def close(self) -> None:
        """End every open attempt span (marked unfinished) and export every
        pending event: :func:`~outlast_opentelemetry.configure` does so with
        the telemetry it replaces."""
        with self._lock:
            while self._attempts:
                self._abandon(self._attempts.popitem(last=False)[1])
            while self._pending:
                self._orphans(self._pending.popitem(last=False)[1])

    # -- attempts --------------------------------------------------------------------

    def _start(self, event: Event) -> None:
        key = key_of(event)
        superseded = self._attempts.pop(key, None)
        if superseded is not None:  # the same (namespace, run id, epoch) again: not durable
            self._abandon(superseded)
        prelude = self._pending.pop(key, [])
        kind = _str(event.detail.get("kind"))
        previous = _previous(event)
        parent: Context | None = None  # the caller's current span, if any
        if self.continue_trace and previous is not None:
            parent = trace.set_span_in_context(trace.NonRecordingSpan(previous))
        attributes = run_attributes(event, kind, event.attempt)
        resumed = event.detail.get("resumed")
        if isinstance(resumed, bool):
            attributes[names.RESUMED] = resumed
        span = self.tracer.start_span(
            attempt_name(kind),
            context=parent,
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            links=[]
            if previous is None
            else [Link(previous, {names.LINK_TYPE: names.PREVIOUS_ATTEMPT})],
            start_time=nanoseconds(min([event.at, *(e.started_at for e in prelude)])),
        )
        attempt = Attempt(span, kind, event.attempt)
        self._attempts[key] = attempt
        for earlier in prelude:
            self._child(attempt, earlier)
        self.instruments.record(event, kind)
        while len(self._attempts) > self.max_attempts:
            self._abandon(self._attempts.popitem(last=False)[1])

    def _end(self, event: Event) -> None:
        attempt = self._attempts.pop(key_of(event), None)
        kind = _str(event.detail.get("kind"))
        self.instruments.record(event, kind if attempt is None else attempt.kind or kind)
        if attempt is None:  # ended unfinished already (over the limit)
            return
        outcome = _str(event.detail.get("outcome"))
        if outcome is not None:
            attempt.span.set_attribute(names.OUTCOME, outcome)
        if outcome in FAILED:
            attempt.span.set_status(Status(StatusCode.ERROR, event.error or outcome))
        attempt.span.end(end_time=nanoseconds(event.at))

    def _abandon(self, attempt: Attempt) -> None:
        """End an attempt's span whose ``attempt_end`` did not come (yet)."""
        attempt.span.set_attribute(names.UNFINISHED, True)
        attempt.span.end()

    # -- operations ------------------------------------------------------------------

    def _operation(self, event: Event) -> None:
        key = key_of(event)
        attempt = self._attempts.get(key)
        if attempt is not None:
            self._child(attempt, event)
        elif event.kind in PRELUDE and event.error is None:
            self._pending.setdefault(key, []).append(event)
            while len(self._pending) > self.max_attempts:
                self._orphans(self._pending.popitem(last=False)[1])
        elif event.kind in ENDINGS and key in self._pending:
            self._ended_before_start(self._pending.pop(key), event)
        else:
            # a failed begin (the run exists; or the store is down and the run
            # goes on without a record, at epoch 0), or an attempt already ended
            self._orphans([event])

    def _child(self, attempt: Attempt, event: Event) -> None:
        operation_span(
            self.tracer,
            event,
            trace.set_span_in_context(attempt.span),
            attempt.kind,
            event.attempt or attempt.number,
        )
        self.instruments.record(event, attempt.kind)

    def _ended_before_start(self, prelude: list[Event], ending: Event) -> None:
        """A claimed (or begun) run that ended before its attempt started: an
        attempt span of its pending events and the ending one."""
        outcome = ENDINGS[ending.kind]
        attributes = run_attributes(ending, None, ending.attempt)
        attributes[names.OUTCOME] = outcome
        span = self.tracer.start_span(
            attempt_name(None),
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            start_time=nanoseconds(min(e.started_at for e in [*prelude, ending])),
        )
        attempt = Attempt(span, None, ending.attempt)
        for event in [*prelude, ending]:
            self._child(attempt, event)
        if outcome in FAILED:
            description = ending.error or f"the run {outcome} before its attempt started"
            span.set_status(Status(StatusCode.ERROR, description))
        span.end(end_time=nanoseconds(ending.at))

    def _orphans(self, events: list[Event]) -> None:
        """Spans of their own (roots) for events of no open attempt."""
        for event in events:
            operation_span(self.tracer, event, Context(), None, event.attempt)
            self.instruments.record(event, None)

    def _expire(self, now: float) -> None:
        """Export pending events whose attempt did not start in time."""
        while self._pending:
            key, events = next(iter(self._pending.items()))
            if events[0].at > now - self.pending_timeout:
                return
            del self._pending[key]
            self._orphans(events)


def _previous(event: Event) -> SpanContext | None:
    """The previous attempt's span context, from ``detail["previous"]``."""
    previous = event.detail.get("previous")
    if not isinstance(previous, dict):
        return None
    carrier = {k: v for k, v in previous.items() if isinstance(v, str)}
    context = trace.get_current_span(PROPAGATOR.extract(carrier)).get_span_context()
    return context if context.is_valid else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
