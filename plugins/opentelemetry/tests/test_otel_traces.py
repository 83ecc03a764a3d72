"""Spans of real runs on the memory and SQLite stores: one per attempt, a
child per operation, errors, and a run's attempts linked across workers."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from otel_support import Otel, call, looking_agent, two_workers

import outlast
import outlast_opentelemetry
from outlast import (
    JSON,
    Agent,
    AwaitInput,
    Event,
    EventKind,
    Executor,
    Message,
    RunWaiting,
    ScriptedModel,
    Tool,
    ToolError,
)
from outlast.adapter import CheckpointerFactory
from outlast.messages import MARKER, JSONObject

pytestmark = pytest.mark.asyncio


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)


def traceparent(span: ReadableSpan) -> str:
    """The W3C ``traceparent`` header of ``span``."""
    assert span.context is not None
    context = span.context
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def children(otel: Otel, attempt: ReadableSpan) -> list[ReadableSpan]:
    """The attempt's child spans, by start time."""
    found = [s for s in otel.spans() if parent_id(s) == span_id(attempt)]
    return sorted(found, key=lambda s: s.start_time or 0)


async def test_a_run_is_an_attempt_span_with_a_child_per_operation(
    store: CheckpointerFactory, otel: Otel
) -> None:
    seen: list[Event] = []
    executor = Executor(store)
    executor.register("k", looking_agent())
    with outlast.observe(seen.append):
        await executor.run("k", "go", run_id="r1")

    [attempt] = otel.attempts()
    assert attempt.name == "outlast.attempt k"
    assert attempt.kind is SpanKind.INTERNAL
    assert attempt.parent is None  # no current span here: the root of its trace
    assert dict(attempt.attributes or {}) == {
        "outlast.run.id": "r1",
        "outlast.namespace": "default",
        "outlast.run.kind": "k",
        "outlast.epoch": 1,
        "outlast.attempt": 1,
        "outlast.resumed": False,
        "outlast.outcome": "completed",
    }
    assert attempt.status.status_code is StatusCode.UNSET
    assert attempt.instrumentation_scope is not None
    assert attempt.instrumentation_scope.name == "outlast"

    # every other event is one child, in order: the begin came before attempt_start
    kids = children(otel, attempt)
    assert [s.name for s in kids] == [
        "outlast.begin",
        "outlast.model_call ScriptedModel",
        "outlast.save",
        "outlast.tool_call look",
        "outlast.save",
        "outlast.model_call ScriptedModel",
        "outlast.save",
        "outlast.complete",
    ]
    assert len(otel.spans()) == len(kids) + 1
    assert {trace_id(s) for s in otel.spans()} == {trace_id(attempt)}
    for kid in kids:
        attributes = dict(kid.attributes or {})
        assert attributes["outlast.run.id"] == "r1"
        assert attributes["outlast.run.kind"] == "k"
        assert attributes["outlast.attempt"] == 1
        assert attributes["outlast.epoch"] == 1
        assert kid.status.status_code is StatusCode.UNSET

    # timed by the events: start = at - duration, end = at
    by_kind = {e.kind: e for e in seen}
    begin = kids[0]
    assert begin.start_time == round(by_kind[EventKind.BEGIN].started_at * 1e9)
    assert begin.end_time == round(by_kind[EventKind.BEGIN].at * 1e9)
    assert attempt.start_time == begin.start_time  # the attempt starts with its begin
    assert attempt.end_time == round(by_kind[EventKind.ATTEMPT_END].at * 1e9)
    assert attempt.end_time is not None
    for kid in kids:
        assert kid.start_time is not None and kid.end_time is not None
        assert kid.start_time <= kid.end_time <= attempt.end_time
    assert otel.telemetry.open_attempts == 0 and otel.telemetry.pending_attempts == 0


async def test_model_and_tool_call_spans_carry_their_details(
    store: CheckpointerFactory, otel: Otel
) -> None:
    executor = Executor(store)
    executor.register("k", looking_agent())
    await executor.run("k", "go", run_id="r1")

    model = otel.named("outlast.model_call")[0]
    assert model.kind is SpanKind.CLIENT
    assert _has(
        model,
        {
            "outlast.operation": "model_call",
            "outlast.model": "ScriptedModel",
            "outlast.model.tool_calls": 1,
            "outlast.usage.input_tokens": 5,
            "outlast.usage.output_tokens": 2,
            "gen_ai.usage.input_tokens": 5,
            "gen_ai.usage.output_tokens": 2,
        },
    )
    [tool] = otel.named("outlast.tool_call")
    assert tool.name == "outlast.tool_call look"
    assert tool.kind is SpanKind.INTERNAL
    assert _has(
        tool,
        {
            "outlast.operation": "tool_call",
            "outlast.tool.name": "look",
            "outlast.tool.call_id": "c1",
            "outlast.tool.outcome": "ok",
            "gen_ai.tool.name": "look",
            "gen_ai.tool.call.id": "c1",
        },
    )
    [save, *_] = otel.named("outlast.save")
    assert save.kind is SpanKind.CLIENT


def _has(span: ReadableSpan, expected: dict[str, object]) -> bool:
    attributes = dict(span.attributes or {})
    return {k: attributes.get(k) for k in expected} == expected


async def test_a_failed_run_sets_error_status_with_the_error_text(
    store: CheckpointerFactory, otel: Otel
) -> None:
    def broken(arguments: JSONObject) -> JSON:
        raise RuntimeError("the tool blew up")

    executor = Executor(store)
    executor.register(
        "k",
        Agent(
            ScriptedModel([call("broken"), Message.assistant("x")]), [Tool("broken", "", broken)]
        ),
    )
    with pytest.raises(RuntimeError, match="blew up"):
        await executor.run("k", "go", run_id="r1")

    [attempt] = otel.attempts()
    assert attempt.status.status_code is StatusCode.ERROR
    assert attempt.status.description == "RuntimeError: the tool blew up"
    assert dict(attempt.attributes or {})["outlast.outcome"] == "failed"
    [tool] = otel.named("outlast.tool_call")
    assert tool.status.status_code is StatusCode.ERROR
    assert tool.status.description == "RuntimeError: the tool blew up"
    assert dict(tool.attributes or {})["outlast.tool.outcome"] == "error"
    [fail] = otel.named("outlast.fail")
    assert parent_id(fail) == span_id(attempt)
    assert fail.status.status_code is StatusCode.UNSET  # the failure was written fine


async def test_a_tool_error_told_to_the_model_is_an_error_span_in_a_run_that_completes(
    store: CheckpointerFactory, otel: Otel
) -> None:
    def picky(arguments: JSONObject) -> JSON:
        raise ToolError("no such order")

    executor = Executor(store)
    executor.register(
        "k",
        Agent(ScriptedModel([call("picky"), Message.assistant("ok")]), [Tool("picky", "", picky)]),
    )
    assert (await executor.run("k", "go", run_id="r1")).output == "ok"
    [tool] = otel.named("outlast.tool_call")
    assert tool.status.status_code is StatusCode.ERROR
    assert tool.status.description == "tool call outcome: tool_error"
    [attempt] = otel.attempts()
    assert attempt.status.status_code is StatusCode.UNSET


async def test_a_run_taken_over_by_another_worker_links_its_attempts(
    store: CheckpointerFactory, otel: Otel
) -> None:
    """Worker A releases the run at shutdown; worker B claims it: two attempt
    spans, B's a new trace linked to A's (and B's claim is B's child)."""
    result = await two_workers(store)

    first, second = otel.attempts()
    assert _has(first, {"outlast.attempt": 1, "outlast.epoch": 1, "outlast.outcome": "released"})
    assert first.status.status_code is StatusCode.UNSET  # a release is no error
    assert _has(
        second,
        {
            "outlast.attempt": 2,
            "outlast.epoch": 2,
            "outlast.resumed": True,
            "outlast.outcome": "completed",
        },
    )
    # a new trace, linked to the previous attempt's span
    assert trace_id(second) != trace_id(first) and second.parent is None
    [link] = second.links
    assert link.context.trace_id == trace_id(first)
    assert link.context.span_id == span_id(first)
    assert dict(link.attributes or {}) == {"outlast.link.type": "previous_attempt"}
    assert not first.links

    # the claim came before attempt_start: still the second attempt's child, and its start
    assert [s.name for s in children(otel, first)][-1] == "outlast.release"
    kids = children(otel, second)
    assert kids[0].name == "outlast.claim"
    assert _has(kids[0], {"outlast.run.kind": "k", "outlast.attempt": 2, "outlast.epoch": 2})
    assert second.start_time == kids[0].start_time
    assert [s.name for s in kids][-1] == "outlast.complete"

    # each attempt stored its W3C trace context with the run (the first one's
    # was what the second attempt linked to)
    contexts = [m.meta["context"] for m in result.transcript if m.role == MARKER]
    assert len(contexts) == 2  # one per attempt
    assert isinstance(contexts[0], dict)
    assert contexts[0]["traceparent"] == traceparent(first)
    assert isinstance(contexts[1], dict)
    assert contexts[1]["traceparent"] == traceparent(second)
    assert otel.telemetry.open_attempts == 0 and otel.telemetry.pending_attempts == 0


async def test_continue_trace_makes_the_next_attempt_a_child_of_the_previous(
    store: CheckpointerFactory, otel: Otel
) -> None:
    outlast_opentelemetry.configure(
        tracer_provider=otel.tracer_provider,
        continue_trace=True,
    )
    await two_workers(store)
    first, second = otel.attempts()
    assert trace_id(second) == trace_id(first)
    assert parent_id(second) == span_id(first)
    [link] = second.links
    assert link.context.span_id == span_id(first)


async def test_a_run_waiting_for_input_is_resumed_in_a_linked_attempt(
    store: CheckpointerFactory, otel: Otel
) -> None:
    def approve(arguments: JSONObject) -> JSON:
        raise AwaitInput("approve the refund?")

    def build() -> Agent:
        return Agent(
            ScriptedModel([call("approve"), Message.assistant("refunded")]),
            [Tool("approve", "", approve)],
        )

    executor = Executor(store)
    executor.register("k", build())
    with pytest.raises(RunWaiting):
        await executor.run("k", "go", run_id="r1")
    await executor.send("r1", "yes")
    other = Executor(store)
    other.register("k", build())
    report = await other.recover()
    assert [r.output for r in report.results] == ["refunded"]

    first, second = otel.attempts()
    assert _has(first, {"outlast.outcome": "waiting"})
    assert first.status.status_code is StatusCode.UNSET
    assert [s.name for s in children(otel, first)][-2:] == [
        "outlast.tool_call approve",
        "outlast.wait",
    ]
    assert _has(children(otel, first)[-2], {"outlast.tool.outcome": "waiting"})
    assert [link.context.span_id for link in second.links] == [span_id(first)]


async def test_a_claimed_run_handed_back_before_its_attempt_starts_still_gets_an_attempt_span(
    store: CheckpointerFactory, otel: Otel
) -> None:
    """Worker B shuts down right after its claim: the run is released at
    once, with no attempt_start: an attempt span of the claim and the release."""
    executor = Executor(store)

    async def hang(arguments: JSONObject) -> JSON:
        executor.shutdown()
        await asyncio.Event().wait()
        return "never"

    executor.register(
        "k", Agent(ScriptedModel([call("hang"), Message.assistant("x")]), [Tool("hang", "", hang)])
    )
    with pytest.raises(outlast.Shutdown):
        await executor.run("k", "go", run_id="r1")
    other = Executor(store)
    other.register("k", looking_agent())

    def stop_at_claim(event: Event) -> None:
        if event.kind is EventKind.CLAIM:
            other.shutdown()

    with outlast.observe(stop_at_claim):
        report = await other.recover()
    assert report.released == ["r1"]

    _, handed_back = otel.attempts()
    assert handed_back.name == "outlast.attempt"  # the kind is not in the claim's event
    assert handed_back.status.status_code is StatusCode.UNSET
    assert _has(
        handed_back, {"outlast.run.id": "r1", "outlast.epoch": 2, "outlast.outcome": "released"}
    )
    assert [s.name for s in children(otel, handed_back)] == ["outlast.claim", "outlast.release"]
    assert otel.telemetry.open_attempts == 0 and otel.telemetry.pending_attempts == 0


async def test_an_attempt_span_joins_the_callers_current_span(
    store: CheckpointerFactory, otel: Otel
) -> None:
    executor = Executor(store)
    executor.register("k", looking_agent())
    tracer = otel.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("POST /refunds") as request:
        await executor.run("k", "go", run_id="r1")
    [attempt] = otel.attempts()
    assert parent_id(attempt) == request.get_span_context().span_id
    assert trace_id(attempt) == request.get_span_context().trace_id


async def test_a_lost_lease_is_an_error_span_and_the_attempt_is_left(
    store: CheckpointerFactory, otel: Otel
) -> None:
    """The run is deleted under its worker: the heartbeat's refused renewal is
    ``lease_lost`` and the attempt ends ``left`` (ERROR)."""
    renewed = asyncio.Event()
    lost = asyncio.Event()

    def on(event: Event) -> None:
        if event.kind is EventKind.RENEW:
            renewed.set()
        if event.kind is EventKind.LEASE_LOST:
            lost.set()

    async def hold(arguments: JSONObject) -> JSON:
        await renewed.wait()
        await store.delete("r1")
        await lost.wait()
        return "never"

    executor = Executor(store, lease=30, renew_interval=0.02)
    executor.register(
        "k", Agent(ScriptedModel([call("hold"), Message.assistant("x")]), [Tool("hold", "", hold)])
    )
    with outlast.observe(on), pytest.raises(outlast.LeaseLost):
        await asyncio.wait_for(executor.run("k", "go", run_id="r1"), 30)

    [attempt] = otel.attempts()
    assert _has(attempt, {"outlast.outcome": "left"})
    assert attempt.status.status_code is StatusCode.ERROR
    lost_spans = otel.named("outlast.lease_lost")
    assert lost_spans and all(s.status.status_code is StatusCode.ERROR for s in lost_spans)
    assert all(parent_id(s) == span_id(attempt) for s in lost_spans)
    renewals = otel.named("outlast.renew")
    assert renewals and all(parent_id(s) == span_id(attempt) for s in renewals)


async def test_the_stored_context_is_the_w3c_trace_context_of_the_attempt(
    store: CheckpointerFactory, otel: Otel
) -> None:
    executor = Executor(store)
    executor.register("k", looking_agent())
    result = await executor.run("k", "go", run_id="r1")
    [context] = [m.meta["context"] for m in result.transcript if m.role == MARKER]
    assert isinstance(context, dict)
    extracted = TraceContextTextMapPropagator().extract(context)
    got = trace.get_current_span(extracted).get_span_context()
    [attempt] = otel.attempts()
    assert (got.trace_id, got.span_id) == (trace_id(attempt), span_id(attempt))
