"""Observers: every event the executor knows, with its timing, and an app's
own callback registered with ``outlast.observe`` (issue 12)."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable, Callable, Iterator

import pytest

import outlast
from outlast import (
    Agent,
    Event,
    EventKind,
    Executor,
    Message,
    RecoveryReport,
    ScriptedModel,
    Shutdown,
    Tool,
    ToolCall,
)
from outlast.adapter import CheckpointerFactory, StoredRun
from outlast.messages import JSON, MARKER, JSONObject
from outlast.plugins import plugin_manager

pytestmark = pytest.mark.asyncio


@pytest.fixture
def seen() -> Iterator[list[Event]]:
    events: list[Event] = []
    with outlast.observe(events.append):
        yield events


def call(tool: str, call_id: str = "c1") -> Message:
    return Message.assistant(None, (ToolCall(call_id, tool, {}),), usage={"input_tokens": 5})


async def released_then_recovered(
    store: CheckpointerFactory,
    between: Callable[[StoredRun | None], Awaitable[None]] | None = None,
) -> RecoveryReport:
    """Run r1 until its tool, shut that executor down (the run is released),
    call ``between`` with what is stored, then recover it with a second executor."""
    stop = True

    async def slow(arguments: JSONObject) -> JSON:
        if stop:
            executor.shutdown()
            await asyncio.Event().wait()
        return "ok"

    def build() -> Agent:
        return Agent(
            ScriptedModel([call("slow"), Message.assistant("d")]), [Tool("slow", "", slow)]
        )

    executor = Executor(store)
    executor.register("k", build())
    with pytest.raises(Shutdown):
        await executor.run("k", "go", run_id="r1")
    if between is not None:
        await between(await store.load("r1"))
    stop = False
    executor = Executor(store)
    executor.register("k", build())
    return await executor.recover()


async def test_a_run_reports_its_attempt_model_and_tool_calls_and_store_writes(
    store: CheckpointerFactory, seen: list[Event]
) -> None:
    def look(arguments: JSONObject) -> JSON:
        return "found"

    executor = Executor(store)
    executor.register(
        "k",
        Agent(ScriptedModel([call("look"), Message.assistant("done")]), [Tool("look", "", look)]),
    )
    await executor.run("k", "go", run_id="r1")
    kinds = [e.kind.value for e in seen]
    assert kinds == [
        "begin",
        "attempt_start",
        "model_call",
        "save",
        "tool_call",
        "save",
        "model_call",
        "save",
        "complete",
        "attempt_end",
    ]
    assert all(e.run_id == "r1" and e.attempt == 1 and e.epoch == 1 for e in seen[1:])
    by_kind = {e.kind: e for e in seen}
    assert by_kind[EventKind.ATTEMPT_START].detail == {"kind": "k", "resumed": False}
    assert by_kind[EventKind.ATTEMPT_END].detail == {"kind": "k", "outcome": "completed"}
    tool = by_kind[EventKind.TOOL_CALL]
    assert tool.detail == {"tool": "look", "call_id": "c1", "outcome": "ok"}
    model = seen[2]
    assert model.detail == {
        "model": "ScriptedModel",
        "tool_calls": 1,
        "usage": {"input_tokens": 5},
    }
    for event in seen:
        assert event.duration >= 0 and event.started_at <= event.at


async def test_renewals_and_a_lease_lost_by_the_heartbeat_are_reported(
    store: CheckpointerFactory, seen: list[Event]
) -> None:
    """The heartbeat reports each renewal; once the run is gone (deleted
    here), its refused renewal is ``lease_lost`` and the attempt ends ``left``."""
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
        await lost.wait()  # the heartbeat's next renewal is refused; the run stops here
        return "never"

    executor = Executor(store, lease=30, renew_interval=0.02)
    executor.register(
        "k", Agent(ScriptedModel([call("hold"), Message.assistant("x")]), [Tool("hold", "", hold)])
    )
    with outlast.observe(on), pytest.raises(outlast.LeaseLost):
        await asyncio.wait_for(executor.run("k", "go", run_id="r1"), 30)
    renewals = [e for e in seen if e.kind is EventKind.RENEW]
    assert renewals and all(e.error is None and e.attempt == 1 for e in renewals)
    kinds = [e.kind for e in seen]
    # the heartbeat's refused renewal (the tool's late save is refused too)
    assert EventKind.LEASE_LOST in kinds[kinds.index(EventKind.RENEW) :]
    end = [e for e in seen if e.kind is EventKind.ATTEMPT_END]
    assert [e.detail["outcome"] for e in end] == ["left"]


async def test_a_claimed_run_reports_its_claim_and_attempt_number(
    store: CheckpointerFactory, seen: list[Event]
) -> None:
    await released_then_recovered(store)
    ends = [(e.attempt, e.detail["outcome"]) for e in seen if e.kind is EventKind.ATTEMPT_END]
    assert ends == [(1, "released"), (2, "completed")]
    claims = [e for e in seen if e.kind is EventKind.CLAIM]
    assert [(c.epoch, c.run_id) for c in claims] == [(2, "r1")]
    starts = [e.detail for e in seen if e.kind is EventKind.ATTEMPT_START]
    assert starts == [{"kind": "k", "resumed": False}, {"kind": "k", "resumed": True}]


async def test_observe_stops_at_close_and_a_failing_callback_never_breaks_a_run(
    store: CheckpointerFactory,
) -> None:
    got: list[EventKind] = []

    def broken(event: Event) -> None:
        got.append(event.kind)
        raise RuntimeError("observer bug")

    executor = Executor(store)
    executor.register("k", Agent(ScriptedModel([Message.assistant("done")])))
    observer = outlast.observe(broken)
    assert (await executor.run("k", run_id="r1")).output == "done"
    observer.close()
    observer.close()  # idempotent
    count = len(got)
    await executor.run("k", run_id="r2")
    assert count > 0 and len(got) == count
    with pytest.raises(TypeError, match="callable"):
        outlast.observe("not callable")  # type: ignore[arg-type]


async def test_a_run_context_hook_travels_with_the_run_to_its_next_attempt(
    store: CheckpointerFactory, seen: list[Event]
) -> None:
    """What ``outlast_run_context`` returns is saved with the progress; the
    next attempt (another executor here) gets it as ``previous``."""
    plugin = types.SimpleNamespace()
    counter = iter(range(1, 100))

    @outlast.hookimpl
    def outlast_run_context(event: Event) -> dict[str, JSON]:
        return {"trace": f"attempt-{event.attempt}-{next(counter)}"}

    plugin.outlast_run_context = outlast_run_context
    plugin_manager().register(plugin, name="test-context")
    try:
        notes: list[object] = []

        async def between(stored: StoredRun | None) -> None:
            assert stored is not None
            notes.extend(m.meta for m in stored.state.history if m.role == MARKER)

        report = await released_then_recovered(store, between)
        assert notes == [{"context": {"trace": "attempt-1-1"}}]
        assert [r.output for r in report.results] == ["d"]
        second = [e for e in seen if e.kind is EventKind.ATTEMPT_START][1]
        assert second.detail["previous"] == {"trace": "attempt-1-1"}
    finally:
        plugin_manager().unregister(plugin, name="test-context")
