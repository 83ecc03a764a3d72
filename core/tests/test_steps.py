"""Write-ahead steps, tool context, retry=False, waiting for input, usage (issue 11).

Each test runs on memory and SQLite (the ``store`` fixture). Crashes here are
simulated in-process by resuming from what the store holds (a claim after a
release); the conformance suite kills real processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import pytest

from outlast import (
    Agent,
    AwaitInput,
    Executor,
    Message,
    NotWaiting,
    Phase,
    Plan,
    RunStatus,
    RunWaiting,
    ScriptedModel,
    Tool,
    ToolCall,
    ToolContext,
    ToolError,
    WaitTimedOut,
)
from outlast.adapter import CheckpointerFactory, CheckpointState, RunStart
from outlast.messages import JSON, MARKER, JSONObject
from outlast.steps import UNKNOWN_OUTCOME, unfinished_step, with_call_ids
from outlast.tools import idempotency_key

Eventually = Callable[[Callable[[], Awaitable[bool]]], Awaitable[None]]

pytestmark = pytest.mark.asyncio


def calls(*names: str, ids: Sequence[str] | None = None, **usage: int) -> Message:
    chosen = ids or [f"c-{name}" for name in names]
    pairs = enumerate(zip(chosen, names, strict=True))
    return Message.assistant(
        None,
        tuple(ToolCall(i, name, {"n": k}) for k, (i, name) in pairs),
        usage=dict(usage) or None,
    )


class Counting(ScriptedModel):
    """A scripted model that keeps every transcript it was shown."""

    def __init__(self, script: Sequence[Message]) -> None:
        super().__init__(script)
        self.shown: list[tuple[Message, ...]] = []

    async def complete(self, messages: Sequence[Message], tools: Sequence[JSONObject]) -> Message:
        self.shown.append(tuple(messages))
        return await super().complete(messages, tools)


async def history(store: CheckpointerFactory, run_id: str) -> tuple[Message, ...]:
    stored = await store.load(run_id)
    assert stored is not None
    return stored.state.history


# -- write-ahead ----------------------------------------------------------------------


async def test_the_reply_is_durable_before_its_tool_runs(store: CheckpointerFactory) -> None:
    seen: list[tuple[str, ...]] = []

    async def look(arguments: JSONObject) -> JSON:
        seen.append(tuple(m.role for m in await history(store, "r1")))
        return "ok"

    executor = Executor(store)
    executor.register(
        "k",
        Agent(ScriptedModel([calls("look"), Message.assistant("done")]), [Tool("look", "", look)]),
    )
    await executor.run("k", "go", run_id="r1")
    assert seen == [("user", "assistant")]


async def test_a_resumed_step_runs_only_the_missing_calls_and_never_asks_the_model_again(
    store: CheckpointerFactory,
) -> None:
    """A transcript cut after the reply and one of its two results: the other
    call runs, the model is asked only for the next step."""
    ran: list[str] = []

    def tool(name: str) -> Tool:
        def handler(arguments: JSONObject) -> JSON:
            ran.append(name)
            return name

        return Tool(name, "", handler)

    reply = calls("a", "b")
    cp = await store.begin(RunStart("r1", "k", "go", owner="dead", lease=30))
    await cp.save(CheckpointState((Message.user("go"), reply, Message.tool("c-a", "a", "a"))))
    await cp.release()
    model = Counting([reply, Message.assistant("done")])
    executor = Executor(store)
    executor.register("k", Agent(model, [tool("a"), tool("b")]))
    report = await executor.recover()
    assert [r.output for r in report.results] == ["done"]
    assert ran == ["b"]
    assert len(model.shown) == 1 and len(model.shown[0]) == 4  # only the final reply was asked


async def test_each_tool_result_is_saved_as_it_completes(
    store: CheckpointerFactory, eventually: Eventually
) -> None:
    """Two calls run at once; the fast one's result is durable while the
    slow one still runs."""
    seen_while_slow: list[list[str | None]] = []

    async def fast(arguments: JSONObject) -> JSON:
        return "fast"

    async def fast_result_saved() -> bool:
        return any(m.role == "tool" for m in await history(store, "r1"))

    async def slow(arguments: JSONObject) -> JSON:
        await eventually(fast_result_saved)
        saved = await history(store, "r1")
        seen_while_slow.append([m.tool_call_id for m in saved if m.role == "tool"])
        return "slow"

    executor = Executor(store)
    executor.register(
        "k",
        Agent(
            ScriptedModel([calls("slow", "fast"), Message.assistant("done")]),
            [Tool("slow", "", slow), Tool("fast", "", fast)],
        ),
    )
    await executor.run("k", "go", run_id="r1")
    assert seen_while_slow == [["c-fast"]]


async def test_tool_concurrency_bounds_the_calls_in_flight(store: CheckpointerFactory) -> None:
    in_flight = 0
    most = 0

    async def work(arguments: JSONObject) -> JSON:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        in_flight -= 1
        return "ok"

    names = ["w"] * 6
    reply = calls(*names, ids=[f"c{i}" for i in range(6)])
    executor = Executor(store)
    executor.register(
        "k",
        Agent(
            ScriptedModel([reply, Message.assistant("done")]),
            [Tool("w", "", work)],
            tool_concurrency=2,
        ),
    )
    result = await executor.run("k", "go", run_id="r1")
    assert most == 2
    assert sorted(m.tool_call_id or "" for m in result.transcript if m.role == "tool") == [
        f"c{i}" for i in range(6)
    ]


async def test_missing_or_repeated_call_ids_get_deterministic_ones() -> None:
    reply = calls("a", "b", "c", ids=["", "x", "x"])
    fixed = with_call_ids(reply, {"used"}, 2, 5)
    assert [c.id for c in fixed.tool_calls] == ["call_2_5_0", "x", "call_2_5_2"]
    assert with_call_ids(reply, {"used"}, 2, 5) == fixed  # the same on every worker
    clash = with_call_ids(calls("a", ids=["used"]), {"used"}, 0, 1)
    assert [c.id for c in clash.tool_calls] == ["call_0_1_0"]
    untouched = calls("a", ids=["fine"])
    assert with_call_ids(untouched, set(), 0, 1) is untouched


async def test_unfinished_step_looks_back_only_to_the_last_reply() -> None:
    reply = calls("a", "b")
    done = Message.tool("c-a", "a", "x")
    assert unfinished_step([Message.user("u"), reply, done]) == 1
    assert unfinished_step([Message.user("u"), reply, done, Message.tool("c-b", "b", "y")]) is None
    assert unfinished_step([Message.user("u"), Message.assistant("final")]) is None
    assert unfinished_step([Message.user("u")]) is None


# -- tool context and idempotency keys -----------------------------------------------


async def test_a_tool_taking_a_context_gets_a_key_that_survives_a_crash(
    store: CheckpointerFactory,
) -> None:
    """The first attempt dies during the tool (a release stands in for the
    crash); the retried call gets the same idempotency key, the next attempt
    number, and its own call id."""
    contexts: list[ToolContext] = []
    stop = True

    async def charge(arguments: JSONObject, context: ToolContext) -> JSON:
        contexts.append(context)
        if stop:
            executor.shutdown()
            await asyncio.Event().wait()  # cancelled by the shutdown
        return "charged"

    def agent() -> Agent:
        return Agent(
            ScriptedModel([calls("charge"), Message.assistant("done")]),
            [Tool("charge", "", charge)],
        )

    executor = Executor(store, namespace="shop")
    executor.register("k", agent())
    with pytest.raises(outlast_shutdown()):
        await executor.run("k", "go", run_id="r1")
    stop = False
    executor = Executor(store, namespace="shop")
    executor.register("k", agent())
    report = await executor.recover()
    assert [r.output for r in report.results] == ["done"]
    first, second = contexts
    assert first.idempotency_key == second.idempotency_key == idempotency_key("shop", "r1", 0, 1, 0)
    assert (first.attempt, second.attempt) == (1, 2)
    assert (first.run_id, first.namespace, first.kind, first.tool_call_id) == (
        "r1",
        "shop",
        "k",
        "c-charge",
    )


def outlast_shutdown() -> type[Exception]:
    from outlast import Shutdown

    return Shutdown


async def test_idempotency_keys_differ_by_run_and_position() -> None:
    keys = {
        idempotency_key("ns", "r1", 0, 1, 0),
        idempotency_key("ns", "r1", 0, 1, 1),
        idempotency_key("ns", "r1", 0, 3, 0),
        idempotency_key("ns", "r1", 1, 1, 0),
        idempotency_key("ns", "r2", 0, 1, 0),
        idempotency_key("other", "r1", 0, 1, 0),
    }
    assert len(keys) == 6
    assert all(key.startswith("outlast-") and len(key) == 40 for key in keys)


# -- retry=False ------------------------------------------------------------------------


async def _in_flight(store: CheckpointerFactory, tool: str, noted: bool) -> None:
    """A run whose worker died while ``tool`` was in flight (with its start
    noted, as the executor notes a retry=False call, or not)."""
    reply = calls(tool)
    saved = [Message.user("go"), reply]
    if noted:
        saved.append(Message.started(f"c-{tool}", tool))
    cp = await store.begin(RunStart("r1", "k", "go", owner="dead", lease=30))
    await cp.save(CheckpointState(tuple(saved)))
    await cp.release()


async def test_a_never_retry_call_in_flight_is_reconciled_not_called_again(
    store: CheckpointerFactory,
) -> None:
    called: list[str] = []
    asked: list[ToolContext] = []

    def pay(arguments: JSONObject, context: ToolContext) -> JSON:
        called.append(context.idempotency_key)
        return "paid"

    def look_up(arguments: JSONObject, context: ToolContext) -> JSON:
        asked.append(context)
        return {"paid": True, "found_by": context.idempotency_key}

    await _in_flight(store, "pay", noted=True)
    model = Counting([calls("pay"), Message.assistant("done")])
    executor = Executor(store)
    executor.register("k", Agent(model, [Tool("pay", "", pay, retry=False, reconcile=look_up)]))
    report = await executor.recover()
    assert [r.output for r in report.results] == ["done"]
    assert called == []
    assert [c.reconciling for c in asked] == [True]
    key = idempotency_key("default", "r1", 0, 1, 0)
    result = [m for m in model.shown[0] if m.role == "tool"]
    assert [m.content for m in result] == [f'{{"paid":true,"found_by":"{key}"}}']
    assert all(m.role != MARKER for m in model.shown[0])  # notes are never shown


async def test_a_never_retry_call_in_flight_without_reconcile_reports_an_unknown_outcome(
    store: CheckpointerFactory,
) -> None:
    called: list[str] = []

    def pay(arguments: JSONObject) -> JSON:
        called.append("pay")
        return "paid"

    await _in_flight(store, "pay", noted=True)
    model = Counting([calls("pay"), Message.assistant("done")])
    executor = Executor(store)
    executor.register("k", Agent(model, [Tool("pay", "", pay, retry=False)]))
    await executor.recover()
    assert called == []
    assert [m.content for m in model.shown[0] if m.role == "tool"] == [UNKNOWN_OUTCOME]


async def test_a_never_retry_call_that_never_started_runs(store: CheckpointerFactory) -> None:
    """No start note: the worker died before the call began, so it runs
    (once), and its start is noted durably before it does."""
    notes: list[tuple[str, ...]] = []

    async def pay(arguments: JSONObject) -> JSON:
        notes.append(tuple(m.role for m in await history(store, "r1")))
        return "paid"

    await _in_flight(store, "pay", noted=False)
    executor = Executor(store)
    executor.register(
        "k",
        Agent(
            ScriptedModel([calls("pay"), Message.assistant("done")]),
            [Tool("pay", "", pay, retry=False)],
        ),
    )
    await executor.recover()
    assert notes == [("user", "assistant", MARKER)]


# -- a worker that lost its run starts no tool ----------------------------------------


async def test_a_worker_whose_lease_ran_out_and_was_taken_over_starts_no_tool(
    store: CheckpointerFactory, eventually: Eventually
) -> None:
    """Stop-the-world: the worker stalls after its reply is saved until its
    lease expired and another worker claimed the run; it must not start the
    tool afterwards."""
    tool_calls: list[str] = []
    taken = asyncio.Event()

    class Stalling(ScriptedModel):
        async def complete(
            self, messages: Sequence[Message], tools: Sequence[JSONObject]
        ) -> Message:
            reply = await super().complete(messages, tools)

            async def stolen() -> bool:  # once the 0.2 s lease has expired
                return await store.claim("r1", owner="thief", lease=3600) is not None

            await eventually(stolen)
            taken.set()
            return reply

    def work(arguments: JSONObject) -> JSON:
        tool_calls.append("work")
        return "done"

    executor = Executor(store, lease=0.2, renew_interval=3600)
    executor.register(
        "k", Agent(Stalling([calls("work"), Message.assistant("x")]), [Tool("work", "", work)])
    )
    with pytest.raises(Exception, match=r"epoch|lease|owns") as caught:
        await executor.run("k", "go", run_id="r1")
    assert taken.is_set()
    assert tool_calls == []
    assert type(caught.value).__name__ == "LeaseLost"


# -- waiting for input ----------------------------------------------------------------


def approval_agent(model: ScriptedModel, ran: list[str], **asked: object) -> Agent:
    def approve(arguments: JSONObject) -> JSON:
        ran.append("approve")
        raise AwaitInput({"refund": arguments.get("n")}, **asked)  # type: ignore[arg-type]

    def note(arguments: JSONObject) -> JSON:
        ran.append("note")
        return "noted"

    return Agent(model, [Tool("approve", "", approve), Tool("note", "", note)])


async def test_a_tool_awaiting_input_parks_the_run_and_a_send_resumes_it(
    store: CheckpointerFactory,
) -> None:
    ran: list[str] = []
    model = Counting([calls("approve", "note"), Message.assistant("refunded")])
    executor = Executor(store)
    executor.register("k", approval_agent(model, ran))
    with pytest.raises(RunWaiting) as caught:
        await executor.run("k", "go", run_id="r1")
    assert caught.value.request == {"refund": 0}
    stored = await store.load("r1")
    assert stored is not None
    record = stored.record
    assert (record.status, record.lease_expires_at) == (RunStatus.WAITING, None)
    assert isinstance(record.wait, dict) and record.wait["call"] == "c-approve"
    assert [m.tool_call_id for m in stored.state.history if m.role == "tool"] == ["c-note"]
    assert await store.interrupted() == []

    await executor.send("r1", {"approved": True})
    with pytest.raises(NotWaiting):
        await executor.send("r1", {"approved": False})
    report = await executor.recover()
    assert [r.output for r in report.results] == ["refunded"]
    assert ran == ["approve", "note"]  # the approving tool is not asked again
    assert len(model.shown) == 2
    results = {m.tool_call_id: m.content for m in model.shown[1] if m.role == "tool"}
    assert results == {"c-note": "noted", "c-approve": '{"approved":true}'}
    assert (await executor.result("r1")).output == "refunded"


async def test_a_wait_that_times_out_fails_the_run_or_continues_as_the_tool_chose(
    store: CheckpointerFactory, eventually: Eventually
) -> None:
    for choice, expected in ((None, "fail"), ("no answer in time", "continue")):
        ran: list[str] = []
        run_id = f"r-{expected}"
        asked: dict[str, object] = {"timeout": 0.05}
        if choice is not None:
            asked["timeout_result"] = choice
        executor = Executor(store)
        executor.register(
            "k",
            approval_agent(
                ScriptedModel([calls("approve"), Message.assistant("end")]), ran, **asked
            ),
        )
        with pytest.raises(RunWaiting):
            await executor.run("k", "go", run_id=run_id)

        async def timed_out(run_id: str = run_id) -> bool:
            return any(r.run_id == run_id for r in await store.interrupted())

        await eventually(timed_out)
        report = await executor.recover()
        if expected == "fail":
            assert isinstance(report.errors.get(run_id), WaitTimedOut)
        else:
            assert [r.output for r in report.results] == ["end"]
        assert ran == ["approve"]


async def test_a_run_without_a_store_cannot_wait() -> None:
    executor = Executor(None)
    ran: list[str] = []
    executor.register("k", approval_agent(ScriptedModel([calls("approve")]), ran))
    with pytest.raises(Exception, match="no store to wait in"):
        await executor.run("k", "go")


async def test_an_await_input_that_is_not_json_is_the_tools_error() -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the codec's message
        AwaitInput({"x": object()})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="timeout"):
        AwaitInput("ok?", timeout=0)


async def test_running_a_waiting_run_id_again_says_it_waits(store: CheckpointerFactory) -> None:
    from outlast import RunExists

    executor = Executor(store)
    executor.register("k", approval_agent(ScriptedModel([calls("approve")]), []))
    with pytest.raises(RunWaiting):
        await executor.run("k", "go", run_id="r1")
    with pytest.raises(RunExists, match="waiting for input"):
        await executor.run("k", "go", run_id="r1")


# -- usage ---------------------------------------------------------------------------


async def test_usage_is_summed_once_per_reply_across_a_recovery(
    store: CheckpointerFactory,
) -> None:
    """The first attempt's reply is saved with its usage; the recovered run
    adds only the replies it asked for; the record keeps the sum."""

    def work(arguments: JSONObject) -> JSON:
        return "ok"

    first = calls("work", input_tokens=100, output_tokens=10)
    cp = await store.begin(RunStart("r1", "k", "go", owner="dead", lease=30))
    await cp.save(CheckpointState((Message.user("go"), first)))
    await cp.release()
    final = Message.assistant("done", usage={"input_tokens": 150, "output_tokens": 5})
    executor = Executor(store)
    executor.register("k", Agent(ScriptedModel([first, final]), [Tool("work", "", work)]))
    report = await executor.recover()
    assert report.results[0].usage == {"input_tokens": 250, "output_tokens": 15}
    stored = await store.load("r1")
    assert stored is not None and stored.record.usage == {"input_tokens": 250, "output_tokens": 15}
    assert (await executor.result("r1")).usage == {"input_tokens": 250, "output_tokens": 15}


async def test_a_plan_sums_usage_over_its_phases(store: CheckpointerFactory) -> None:
    model = ScriptedModel(
        {
            "a": [Message.assistant("A", usage={"input_tokens": 3})],
            "b": [Message.assistant("B", usage={"input_tokens": 4, "output_tokens": 1})],
        }
    )
    executor = Executor(store)
    executor.register("p", Plan(model, [Phase("a", "do a"), Phase("b", "do b")]))
    result = await executor.run("p", None, run_id="r1")
    assert [p.usage for p in result.phases] == [
        {"input_tokens": 3},
        {"input_tokens": 4, "output_tokens": 1},
    ]
    assert result.usage == {"input_tokens": 7, "output_tokens": 1}


async def test_a_tool_error_still_reaches_the_model() -> None:
    assert ToolError("x").args == ("x",)


# -- a step's cost ----------------------------------------------------------------------


class Watched(Message):
    """A message that counts every read of its fields (in ``reads``)."""

    __slots__ = ()
    reads = 0

    def __getattribute__(self, name: str) -> object:
        Watched.reads += 1
        return super().__getattribute__(name)


async def test_a_step_looks_at_no_message_of_the_earlier_steps(
    store: CheckpointerFactory,
) -> None:
    """The per-step work does not depend on the transcript's length: once the
    first step has seen the opening, no later step reads any of it again."""
    steps = 20
    opening = [Watched("user", f"note {n}") for n in range(500)]
    read_at_step_two: list[int] = []

    class Looping:
        calls = 0

        async def complete(
            self, messages: Sequence[Message], tools: Sequence[JSONObject]
        ) -> Message:
            self.calls += 1
            if self.calls == 2:
                read_at_step_two.append(Watched.reads)
            if self.calls > steps:
                return Message.assistant("done")
            return Message.assistant(None, (ToolCall(f"c{self.calls}", "echo", {}),))

    agent = Agent(
        Looping(),
        [Tool("echo", "", lambda arguments: "ok")],
        prompt=lambda _input: opening,
        max_steps=steps + 1,
    )
    executor = Executor(store)
    executor.register("watched", agent)
    result = await executor.run("watched", None)
    assert len(result.transcript) == len(opening) + 2 * steps + 1
    assert read_at_step_two and Watched.reads == read_at_step_two[0]
