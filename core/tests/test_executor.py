"""Every executor rule of DESIGN §4, on the memory and SQLite stores."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import pytest

from outlast import (
    Agent,
    CriticKilled,
    DeadlineExceeded,
    Executor,
    LeaseLost,
    Message,
    ModelError,
    Phase,
    Plan,
    PoisonRun,
    ResumeMismatch,
    RunExists,
    RunFailed,
    RunStatus,
    ScriptedModel,
    Shutdown,
    StepLimitExceeded,
    StoreUnavailable,
    Tool,
    ToolCall,
    ToolError,
)
from outlast.adapter import (
    Checkpointer,
    CheckpointerFactory,
    CheckpointState,
    Claim,
    PhaseOutput,
    ResumeState,
    RunStart,
)
from outlast.messages import JSON, JSONObject

Eventually = Callable[[Callable[[], Awaitable[bool]]], Awaitable[None]]

pytestmark = pytest.mark.asyncio


def call(call_id: str, tool: str = "step", **arguments: JSON) -> Message:
    return Message.assistant(None, (ToolCall(call_id, tool, dict(arguments)),))


class Recorder:
    """A tool that records its calls and can shut the executor down on one."""

    def __init__(self) -> None:
        self.calls: list[JSONObject] = []
        self.executor: Executor | None = None

    async def __call__(self, arguments: JSONObject) -> JSON:
        self.calls.append(arguments)
        if arguments.get("shutdown") and self.executor is not None:
            self.executor.shutdown()
        if arguments.get("explode"):
            raise RuntimeError("the tool broke")
        if arguments.get("report"):
            raise ToolError("bad argument")
        return {"ok": len(self.calls)}

    @property
    def tool(self) -> Tool:
        return Tool("step", "a step", self)


async def status_of(store: CheckpointerFactory, run_id: str) -> RunStatus:
    stored = await store.load(run_id)
    assert stored is not None
    return stored.record.status


def loop_agent(replies: Sequence[Message], recorder: Recorder, **options: object) -> Agent:
    return Agent(ScriptedModel(replies), tools=[recorder.tool], **options)  # type: ignore[arg-type]


# -- 1 & 2: finalize on every exit, and the outcome ---------------------------


async def test_success_completes_the_record_with_the_result(store: CheckpointerFactory) -> None:
    recorder = Recorder()
    executor = Executor(store)
    executor.register("k", loop_agent([call("c1"), Message.assistant("done")], recorder))
    result = await executor.run("k", "go", run_id="r1")
    stored = await store.load("r1")
    assert result.output == "done"
    assert result.durable
    assert result.epoch == 1
    assert stored is not None
    assert stored.record.status is RunStatus.COMPLETED
    assert stored.record.result == "done"
    assert stored.state == CheckpointState()


async def test_tool_exception_fails_the_record_and_reaches_the_caller(
    store: CheckpointerFactory,
) -> None:
    recorder = Recorder()
    executor = Executor(store)
    executor.register("k", loop_agent([call("c1", explode=True)], recorder))
    with pytest.raises(RuntimeError, match="the tool broke"):
        await executor.run("k", run_id="r1")
    stored = await store.load("r1")
    assert stored is not None
    assert stored.record.status is RunStatus.FAILED
    assert stored.record.error == "RuntimeError: the tool broke"


async def test_tool_error_is_reported_to_the_model_not_fatal(store: CheckpointerFactory) -> None:
    recorder = Recorder()
    executor = Executor(store)
    executor.register("k", loop_agent([call("c1", report=True), Message.assistant("ok")], recorder))
    result = await executor.run("k", run_id="r1")
    assert result.transcript[-2].content == "error: bad argument"
    assert await status_of(store, "r1") is RunStatus.COMPLETED


async def test_build_error_before_the_loop_still_fails_the_record(
    store: CheckpointerFactory,
) -> None:
    def builder(_input: JSON) -> Agent:
        raise ValueError("no such model configured")

    executor = Executor(store)
    executor.register("k", builder)
    with pytest.raises(ValueError, match="no such model"):
        await executor.run("k", run_id="r1")
    stored = await store.load("r1")
    assert stored is not None
    assert stored.record.status is RunStatus.FAILED
    assert "no such model configured" in (stored.record.error or "")


async def test_caller_cancellation_fails_the_record_shielded(store: CheckpointerFactory) -> None:
    started = asyncio.Event()

    async def hang(_arguments: JSONObject) -> JSON:
        started.set()
        await asyncio.Event().wait()
        return None

    executor = Executor(store)
    executor.register(
        "k", Agent(ScriptedModel([call("c1", "hang")]), tools=[Tool("hang", "", hang)])
    )
    task = asyncio.create_task(executor.run("k", run_id="r1"))
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stored = await store.load("r1")
    assert stored is not None
    assert stored.record.status is RunStatus.FAILED
    assert stored.record.error == "cancelled by the caller"


async def test_shutdown_releases_the_record_for_recovery(store: CheckpointerFactory) -> None:
    recorder = Recorder()
    executor = Executor(store)
    recorder.executor = executor
    executor.register(
        "k", loop_agent([call("c1"), call("c2", shutdown=True), Message.assistant("x")], recorder)
    )
    with pytest.raises(Shutdown):
        await executor.run("k", run_id="r1")
    stored = await store.load("r1")
    assert stored is not None
    assert stored.record.status is RunStatus.RUNNING
    assert stored.record.lease_expires_at is None
    assert len(stored.state.history) == 5  # user + two complete steps, each saved
    assert [r.run_id for r in await store.interrupted()] == ["r1"]


async def test_shutdown_refuses_new_runs(store: CheckpointerFactory) -> None:
    executor = Executor(store)
    executor.register("k", loop_agent([Message.assistant("x")], Recorder()))
    executor.shutdown()
    with pytest.raises(Shutdown):
        await executor.run("k", run_id="r1")
    assert await store.load("r1") is None


@pytest.mark.parametrize(
    ("replies", "options", "error"),
    [
        ([], {}, ModelError),
        ([call("c1"), call("c2"), call("c3")], {"max_steps": 2}, StepLimitExceeded),
        (
            [call("c1"), Message.assistant("x")],
            {"critic": lambda t: "looping" if len(t) > 2 else None},
            CriticKilled,
        ),
    ],
    ids=["model-error", "step-limit", "critic-kill"],
)
async def test_run_errors_fail_the_record(
    store: CheckpointerFactory,
    replies: list[Message],
    options: dict[str, object],
    error: type[Exception],
) -> None:
    executor = Executor(store)
    executor.register("k", loop_agent(replies, Recorder(), **options))
    with pytest.raises(error):
        await executor.run("k", run_id="r1")
    stored = await store.load("r1")
    assert stored is not None
    assert stored.record.status is RunStatus.FAILED
    assert (stored.record.error or "").startswith(error.__name__)


async def test_deadline_fails_the_record(store: CheckpointerFactory) -> None:
    async def hang(_arguments: JSONObject) -> JSON:
        await asyncio.Event().wait()
        return None

    executor = Executor(store)
    agent = Agent(
        ScriptedModel([call("c1", "hang")]), tools=[Tool("hang", "", hang)], deadline=0.05
    )
    executor.register("k", agent)
    with pytest.raises(DeadlineExceeded):
        await executor.run("k", run_id="r1")
    assert await status_of(store, "r1") is RunStatus.FAILED


# -- 3: begin failing, finalize errors -----------------------------------------


class BrokenBegin:
    """A store whose begin always fails (wraps a real store for the rest)."""

    def __init__(self, inner: CheckpointerFactory) -> None:
        self.inner = inner

    async def begin(self, start: RunStart) -> None:
        raise StoreUnavailable("the store is down")

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_unreachable_store_at_begin_warns_and_runs_without_durability(
    store: CheckpointerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    executor = Executor(BrokenBegin(store))  # type: ignore[arg-type]
    executor.register("k", loop_agent([Message.assistant("done")], Recorder()))
    with caplog.at_level(logging.WARNING, "outlast"):
        result = await executor.run("k", run_id="r1")
    assert result.output == "done"
    assert not result.durable
    assert any(
        "WITHOUT durability" in r.getMessage() and "the store is down" in r.getMessage()
        for r in caplog.records
    )


async def test_unreachable_store_at_begin_is_an_error_in_strict_mode(
    store: CheckpointerFactory,
) -> None:
    executor = Executor(BrokenBegin(store), strict=True)  # type: ignore[arg-type]
    executor.register("k", loop_agent([Message.assistant("done")], Recorder()))
    with pytest.raises(StoreUnavailable):
        await executor.run("k", run_id="r1")


async def test_complete_error_is_logged_and_never_masks_the_result(
    store: CheckpointerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    executor = Executor(store)
    recorder = Recorder()
    executor.register("k", loop_agent([call("c1"), Message.assistant("done")], recorder))
    original = store.begin

    async def begin(start: RunStart) -> Checkpointer:
        cp = await original(start)

        async def broken_complete(result: JSON, usage: JSON = None) -> None:
            raise StoreUnavailable("complete went nowhere")

        cp.complete = broken_complete  # type: ignore[method-assign]
        return cp

    store.begin = begin  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, "outlast"):
        result = await executor.run("k", run_id="r1")
    assert result.output == "done"
    assert any("complete went nowhere" in r.getMessage() for r in caplog.records)


async def test_fail_error_is_logged_and_never_masks_the_run_error(
    store: CheckpointerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    executor = Executor(store)
    executor.register("k", loop_agent([call("c1", explode=True)], Recorder()))
    original = store.begin

    async def begin(start: RunStart) -> Checkpointer:
        cp = await original(start)

        async def broken_fail(error: str) -> None:
            raise StoreUnavailable("fail went nowhere")

        cp.fail = broken_fail  # type: ignore[method-assign]
        return cp

    store.begin = begin  # type: ignore[method-assign]
    with (
        caplog.at_level(logging.WARNING, "outlast"),
        pytest.raises(RuntimeError, match="the tool broke"),
    ):
        await executor.run("k", run_id="r1")
    assert any("fail went nowhere" in r.getMessage() for r in caplog.records)


# -- 4 & 5: resume ---------------------------------------------------------------


async def claim(store: CheckpointerFactory, run_id: str) -> Claim:
    claimed = await store.claim(run_id, owner="w2", lease=30)
    assert claimed is not None
    return claimed


async def test_single_loop_resume_continues_its_transcript(store: CheckpointerFactory) -> None:
    recorder = Recorder()
    replies = [call("c1"), call("c2", shutdown=True), call("c3"), Message.assistant("done")]
    first = Executor(store)
    recorder.executor = first
    first.register("k", loop_agent(replies, recorder))
    with pytest.raises(Shutdown):
        await first.run("k", "go", run_id="r1")
    second = Executor(store)
    model = ScriptedModel(replies)
    second.register("k", Agent(model, tools=[recorder.tool]))
    claimed = await claim(store, "r1")
    assert len(claimed.resume.history) == 5
    result = await second.run("k", "go", resume=claimed.resume, checkpointer=claimed.checkpointer)
    assert result.output == "done"
    assert result.epoch == 2
    assert result.resumed
    assert [c.get("shutdown") for c in recorder.calls] == [None, True, None]  # c1, c2 not re-run
    assert model.calls == 2  # only the missing replies were asked for
    assert await status_of(store, "r1") is RunStatus.COMPLETED


def three_phase_plan(recorder: Recorder, model: ScriptedModel) -> Plan:
    return Plan(
        model,
        [
            Phase("gather", "Gather.", tools=[recorder.tool]),
            Phase("write", "Write.", tools=[recorder.tool]),
            Phase("check", "Check."),
        ],
    )


PLAN_SCRIPT: dict[str, Sequence[Message]] = {
    "gather": [call("g1"), Message.assistant("facts")],
    "write": [call("w1"), call("w2", shutdown=True), call("w3"), Message.assistant("draft")],
    "check": [Message.assistant("final")],
}


async def test_plan_resume_skips_completed_phases_and_continues_mid_phase(
    store: CheckpointerFactory,
) -> None:
    recorder = Recorder()
    first = Executor(store)
    recorder.executor = first
    first.register("p", three_phase_plan(recorder, ScriptedModel(PLAN_SCRIPT)))
    with pytest.raises(Shutdown):
        await first.run("p", run_id="r1")
    saved = await store.load("r1")
    assert saved is not None
    assert [p.name for p in saved.state.phases] == ["gather"]
    assert saved.state.history[0].meta == {"phase": "write"}
    assert len(saved.state.history) == 5

    resumed_model = ScriptedModel(PLAN_SCRIPT)
    second = Executor(store, owner="w2")
    second.register("p", three_phase_plan(recorder, resumed_model))
    report = await second.recover()
    (result,) = report.results
    assert result.run_id == "r1"
    assert result.epoch == 2
    assert result.skipped_phases == 1
    assert [p.name for p in result.phases] == ["gather", "write", "check"]
    assert result.output == "final"
    assert [c for c in recorder.calls if c.get("shutdown")] == [{"shutdown": True}]
    assert len(recorder.calls) == 4  # g1, w1, w2 before; only w3 after
    assert resumed_model.calls == 3  # w3, draft, final: nothing of gather is asked again


async def test_resumed_plan_finishes_like_an_uninterrupted_one(store: CheckpointerFactory) -> None:
    script = {
        **PLAN_SCRIPT,
        "write": [call("w1"), call("w2"), call("w3"), Message.assistant("draft")],
    }
    plain = Executor(store)
    plain.register("p", three_phase_plan(Recorder(), ScriptedModel(script)))
    uninterrupted = await plain.run("p", run_id="plain")

    recorder = Recorder()
    first = Executor(store)
    recorder.executor = first
    first.register("p", three_phase_plan(recorder, ScriptedModel(PLAN_SCRIPT)))
    with pytest.raises(Shutdown):
        await first.run("p", run_id="r1")
    second = Executor(store)
    second.register("p", three_phase_plan(Recorder(), ScriptedModel(PLAN_SCRIPT)))
    (resumed,) = (await second.recover()).results
    assert resumed.output == uninterrupted.output
    assert [p.name for p in resumed.phases] == [p.name for p in uninterrupted.phases]
    assert [p.output for p in resumed.phases] == [p.output for p in uninterrupted.phases]


async def test_interrupted_phase_without_saved_transcript_reruns_from_its_start(
    store: CheckpointerFactory,
) -> None:
    cp = await store.begin(RunStart("r1", "p", None, owner="w1", lease=30))
    await cp.save(CheckpointState((), (PhaseOutput("gather", "facts"),)))
    await cp.release()
    recorder = Recorder()
    model = ScriptedModel(
        {"write": [call("w1"), Message.assistant("draft")], "check": [Message.assistant("final")]}
    )
    executor = Executor(store)
    executor.register("p", three_phase_plan(recorder, model))
    (result,) = (await executor.recover()).results
    assert result.output == "final"
    assert result.skipped_phases == 1
    assert model.calls == 3
    assert len(recorder.calls) == 1


async def test_resume_mismatch_fails_the_run(store: CheckpointerFactory) -> None:
    cp = await store.begin(RunStart("r1", "p", None, owner="w1", lease=30))
    await cp.save(CheckpointState((), (PhaseOutput("a-phase-not-in-the-plan", 1),)))
    await cp.release()
    executor = Executor(store)
    executor.register("p", three_phase_plan(Recorder(), ScriptedModel(PLAN_SCRIPT)))
    report = await executor.recover()
    assert isinstance(report.errors["r1"], ResumeMismatch)
    stored = await store.load("r1")
    assert stored is not None
    assert stored.record.status is RunStatus.FAILED
    assert "not a prefix" in (stored.record.error or "")


async def test_fresh_run_with_duplicate_phase_names_runs_both(store: CheckpointerFactory) -> None:
    model = ScriptedModel({"draft": [Message.assistant("v1")]})
    plan = Plan(model, [Phase("draft", "first"), Phase("draft", "second")])
    executor = Executor(store)
    executor.register("p", plan)
    result = await executor.run("p", run_id="r1")
    assert [p.name for p in result.phases] == ["draft", "draft"]
    assert model.calls == 2


async def test_resume_passed_explicitly_reuses_the_same_record(store: CheckpointerFactory) -> None:
    cp = await store.begin(RunStart("r1", "k", "go", owner="w1", lease=30))
    await cp.save(
        CheckpointState((Message.user("go"), call("c1"), Message.tool("c1", "step", "{}")))
    )
    await cp.release()
    claimed = await claim(store, "r1")
    executor = Executor(store)
    executor.register("k", loop_agent([call("c1"), Message.assistant("done")], Recorder()))
    result = await executor.run("k", "go", resume=claimed.resume, checkpointer=claimed.checkpointer)
    assert result.run_id == "r1"
    assert result.epoch == 2
    page = await store.list()
    assert [r.run_id for r in page.records] == ["r1"]  # no second record was begun


# -- 6: poison runs ------------------------------------------------------------------


async def crash(store: CheckpointerFactory, run_id: str, eventually: Eventually) -> None:
    """A worker claims ``run_id`` and dies: its short lease expires unreleased."""
    await eventually(lambda: _interrupted(store, run_id))
    claimed = await store.claim(run_id, owner="doomed", lease=0.01)
    assert claimed is not None


async def _interrupted(store: CheckpointerFactory, run_id: str) -> bool:
    return run_id in {r.run_id for r in await store.interrupted()}


async def test_a_run_that_crashed_more_than_max_crashes_is_failed(
    store: CheckpointerFactory, eventually: Eventually
) -> None:
    await store.begin(RunStart("r1", "k", None, owner="w1", lease=0.01))
    for _ in range(2):
        await crash(store, "r1", eventually)
    await eventually(lambda: _interrupted(store, "r1"))
    recorder = Recorder()
    last = Executor(store, max_crashes=2)
    last.register("k", loop_agent([Message.assistant("never")], recorder))
    report = await last.recover()
    assert isinstance(report.errors["r1"], PoisonRun)
    assert recorder.calls == []
    stored = await store.load("r1")
    assert stored is not None
    assert stored.record.status is RunStatus.FAILED
    assert (stored.record.attempts, stored.record.crashes) == (4, 3)
    assert "crashed its workers 3 times" in (stored.record.error or "")


async def test_releases_by_shutdowns_never_make_a_poison_run(store: CheckpointerFactory) -> None:
    """Three deploys in a row each release the run: no crash, so even
    max_crashes=0 recovers it."""
    recorder = Recorder()
    replies = [call("c1", shutdown=True), Message.assistant("done")]
    first = Executor(store, max_crashes=0)
    recorder.executor = first
    first.register("k", loop_agent(replies, recorder))
    with pytest.raises(Shutdown):
        await first.run("k", run_id="r1")
    for _ in range(3):  # three deploys: claimed, then released by a shutdown
        worker = Executor(store, max_crashes=0)
        worker.register("k", loop_agent(replies, Recorder()))
        worker.shutdown()
        claimed = await claim(store, "r1")
        with pytest.raises(Shutdown):
            await worker.run("k", resume=claimed.resume, checkpointer=claimed.checkpointer)
    last = Executor(store, max_crashes=0)
    last.register("k", loop_agent(replies, Recorder()))
    report = await last.recover()
    assert [r.output for r in report.results] == ["done"]
    stored = await store.load("r1")
    assert stored is not None
    assert (stored.record.status, stored.record.attempts, stored.record.crashes) == (
        RunStatus.COMPLETED,
        5,
        0,
    )


# -- run ids are idempotency keys ------------------------------------------------------


async def test_a_completed_run_id_returns_its_stored_result_and_runs_nothing(
    store: CheckpointerFactory,
) -> None:
    recorder = Recorder()
    executor = Executor(store)
    executor.register("k", loop_agent([call("c1"), Message.assistant("done")], recorder))
    first = await executor.run("k", "go", run_id="r1")
    again = await executor.run("k", "go", run_id="r1")
    assert len(recorder.calls) == 1
    assert (first.ran, again.ran) == (True, False)
    assert (again.output, again.durable, again.epoch, again.transcript) == ("done", True, 1, ())


async def test_a_failed_run_id_raises_run_failed_with_the_stored_error(
    store: CheckpointerFactory,
) -> None:
    recorder = Recorder()
    executor = Executor(store)
    executor.register("k", loop_agent([call("c1", explode=True)], recorder))
    with pytest.raises(RuntimeError):
        await executor.run("k", run_id="r1")
    with pytest.raises(RunFailed, match="the tool broke") as caught:
        await executor.run("k", run_id="r1")
    assert caught.value.error == "RuntimeError: the tool broke"
    assert len(recorder.calls) == 1


async def test_a_running_run_id_raises_run_exists_in_strict_and_lenient_mode(
    store: CheckpointerFactory,
) -> None:
    await store.begin(RunStart("r1", "k", None, owner="elsewhere", lease=30))
    recorder = Recorder()
    for strict in (False, True):
        executor = Executor(store, strict=strict)
        executor.register("k", loop_agent([call("c1"), Message.assistant("x")], recorder))
        with pytest.raises(RunExists, match="owned by 'elsewhere'"):
            await executor.run("k", run_id="r1")
    assert recorder.calls == []


async def test_an_invalid_run_id_is_a_value_error_not_a_non_durable_run(
    store: CheckpointerFactory,
) -> None:
    executor = Executor(store)
    recorder = Recorder()
    executor.register("k", loop_agent([Message.assistant("x")], recorder))
    for bad in ("", "nul\x00byte", "lone\ud800surrogate", "x" * 300):
        with pytest.raises(ValueError, match="run id"):
            await executor.run("k", run_id=bad)
    assert recorder.calls == []


async def test_input_that_is_not_json_is_a_value_error_not_a_non_durable_run(
    store: CheckpointerFactory,
) -> None:
    executor = Executor(store)
    recorder = Recorder()
    executor.register("k", loop_agent([Message.assistant("x")], recorder))
    with pytest.raises(ValueError, match="not JSON"):
        await executor.run("k", {"a": {1, 2}}, run_id="r1")  # type: ignore[dict-item]
    assert await store.load("r1") is None


# -- saves that cannot reach the store ------------------------------------------------


class FlakySaves:
    """Wraps a store so a checkpointer's next ``failures`` saves raise StoreUnavailable."""

    def __init__(self, inner: CheckpointerFactory, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.attempts = 0

    async def begin(self, start: RunStart) -> Checkpointer:
        cp = await self.inner.begin(start)
        original = cp.save

        async def save(state: CheckpointState) -> None:
            self.attempts += 1
            if self.failures:
                self.failures -= 1
                raise StoreUnavailable("the store blinked")
            await original(state)

        cp.save = save  # type: ignore[method-assign]
        return cp

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_a_transient_save_error_is_retried_and_the_run_completes(
    store: CheckpointerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = FlakySaves(store, failures=2)
    executor = Executor(flaky, lease=30)  # type: ignore[arg-type]
    executor.register("k", loop_agent([call("c1"), Message.assistant("done")], Recorder()))
    with caplog.at_level(logging.WARNING, "outlast"):
        result = await executor.run("k", run_id="r1")
    assert result.output == "done"
    # two failures, then the run's three saves: the reply (ahead of its tool), the
    # tool's result, the final reply
    assert flaky.attempts == 5
    assert sum("retrying" in r.getMessage() for r in caplog.records) == 2
    assert await status_of(store, "r1") is RunStatus.COMPLETED


async def test_a_store_timeout_during_a_deadline_run_is_not_the_deadline(
    store: CheckpointerFactory,
) -> None:
    """A TimeoutError raised by a tool is the tool's error, not DeadlineExceeded."""

    async def slow(_arguments: JSONObject) -> JSON:
        raise TimeoutError("the upstream API timed out")

    executor = Executor(store)
    executor.register(
        "k", Agent(ScriptedModel([call("c1", "slow")]), tools=[Tool("slow", "", slow)], deadline=60)
    )
    with pytest.raises(TimeoutError, match="upstream"):
        await executor.run("k", run_id="r1")
    stored = await store.load("r1")
    assert stored is not None and "TimeoutError" in (stored.record.error or "")


# -- leases ---------------------------------------------------------------------------


async def test_the_lease_is_renewed_in_the_background(
    store: CheckpointerFactory, eventually: Eventually
) -> None:
    release_tool = asyncio.Event()

    async def wait(_arguments: JSONObject) -> JSON:
        await release_tool.wait()
        return None

    executor = Executor(store, lease=30, renew_interval=0.01)
    executor.register(
        "k",
        Agent(
            ScriptedModel([call("c1", "wait"), Message.assistant("ok")]),
            tools=[Tool("wait", "", wait)],
        ),
    )
    task = asyncio.create_task(executor.run("k", run_id="r1"))

    async def lease_moved() -> bool:
        stored = await store.load("r1")
        if stored is None or stored.record.lease_expires_at is None:
            return False
        return stored.record.updated_at > stored.record.created_at

    await eventually(lease_moved)
    release_tool.set()
    assert (await task).output == "ok"


async def test_a_running_run_cannot_be_claimed_while_its_lease_is_live(
    store: CheckpointerFactory,
) -> None:
    claims: list[Claim | None] = []

    async def try_to_steal(_arguments: JSONObject) -> JSON:
        claims.append(await store.claim("r1", owner="thief", lease=30))
        return None

    executor = Executor(store)
    agent = Agent(
        ScriptedModel([call("c1", "steal"), Message.assistant("ok")]),
        tools=[Tool("steal", "", try_to_steal)],
    )
    executor.register("k", agent)
    result = await executor.run("k", run_id="r1")
    assert claims == [None]
    assert result.output == "ok"
    assert result.epoch == 1


async def test_save_after_a_claim_raises_lease_lost_and_the_run_leaves_the_new_owner_alone(
    store: CheckpointerFactory,
) -> None:
    async def steal(_arguments: JSONObject) -> JSON:
        run_cp = current["cp"]
        await run_cp.release()  # simulate an expired lease, then a claim by another worker
        stolen = await store.claim("r1", owner="thief", lease=30)
        assert stolen is not None
        return None

    current: dict[str, Checkpointer] = {}
    original = store.begin

    async def begin(start: RunStart) -> Checkpointer:
        current["cp"] = await original(start)
        return current["cp"]

    store.begin = begin  # type: ignore[method-assign]
    executor = Executor(store)
    executor.register(
        "k",
        Agent(
            ScriptedModel([call("c1", "steal"), Message.assistant("ok")]),
            tools=[Tool("steal", "", steal)],
        ),
    )
    with pytest.raises(LeaseLost):
        await executor.run("k", run_id="r1")
    stored = await store.load("r1")
    assert stored is not None
    assert stored.record.status is RunStatus.RUNNING
    assert stored.record.owner == "thief"
    assert stored.record.epoch == 2
    # the reply was saved ahead of its tool; the fenced save of the result wrote nothing
    assert [m.role for m in stored.state.history] == ["user", "assistant"]


async def test_resume_state_object_is_what_claim_returns(store: CheckpointerFactory) -> None:
    cp = await store.begin(RunStart("r1", "k", {"x": 1}, owner="w1", lease=30))
    history = (Message.user("go"),)
    await cp.save(CheckpointState(history))
    await cp.release()
    claimed = await claim(store, "r1")
    assert claimed.resume == ResumeState(history, ())
    assert claimed.record.kind == "k"
    assert claimed.record.input == {"x": 1}


async def test_a_claimed_run_handed_to_a_shutting_down_executor_is_released(
    store: CheckpointerFactory,
) -> None:
    cp = await store.begin(RunStart("r1", "k", None, owner="w1", lease=30))
    await cp.release()
    claimed = await claim(store, "r1")
    executor = Executor(store)
    executor.register("k", loop_agent([Message.assistant("x")], Recorder()))
    executor.shutdown()
    with pytest.raises(Shutdown):
        await executor.run("k", resume=claimed.resume, checkpointer=claimed.checkpointer)
    assert [r.run_id for r in await store.interrupted()] == ["r1"]


async def test_caller_cancellation_during_begin_still_fails_the_begun_record(
    store: CheckpointerFactory,
) -> None:
    entered = asyncio.Event()
    proceed = asyncio.Event()
    original = store.begin

    async def slow_begin(start: RunStart) -> Checkpointer:
        entered.set()
        await proceed.wait()
        return await original(start)

    store.begin = slow_begin  # type: ignore[method-assign]
    executor = Executor(store)
    executor.register("k", loop_agent([Message.assistant("x")], Recorder()))
    task = asyncio.create_task(executor.run("k", run_id="r1"))
    await asyncio.wait_for(entered.wait(), 10)
    task.cancel()
    proceed.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await status_of(store, "r1") is RunStatus.FAILED


async def test_shutdown_during_begin_releases_the_run(store: CheckpointerFactory) -> None:
    executor = Executor(store)
    original = store.begin

    async def begin_then_shutdown(start: RunStart) -> Checkpointer:
        cp = await original(start)
        executor.shutdown()
        return cp

    store.begin = begin_then_shutdown  # type: ignore[method-assign]
    model = ScriptedModel([Message.assistant("x")])
    executor.register("k", Agent(model))
    with pytest.raises(Shutdown):
        await executor.run("k", run_id="r1")
    assert model.calls == 0
    assert [r.run_id for r in await store.interrupted()] == ["r1"]


async def test_the_heartbeat_ends_with_its_attempt_even_if_a_renewal_swallows_the_cancel(
    store: CheckpointerFactory,
) -> None:
    """A driver may swallow the heartbeat's cancellation (asyncio.wait_for on
    Python 3.11 drops one that lands as a send completes). The heartbeat must
    still end with the attempt: else, with complete failing, it would renew a
    run nobody runs forever and no worker could recover it."""
    from outlast.attempt import RunAttempt

    cp = await store.begin(RunStart("r1", "k", None, owner="me", lease=1.0))
    real_renew, in_renew, swallowed = cp.renew, asyncio.Event(), []

    async def renew() -> bool:
        in_renew.set()
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed.append(True)  # once, as the driver does
        return await real_renew()

    async def complete(result: JSON, usage: JSON = None) -> None:
        raise StoreUnavailable("the store restarted just now")

    cp.renew = renew  # type: ignore[method-assign]
    cp.complete = complete  # type: ignore[method-assign]
    attempt = RunAttempt(cp, lease=1.0, renew_interval=0.01)

    async def body() -> tuple[JSON, list[Message], tuple[PhaseOutput, ...], dict[str, int]]:
        await in_renew.wait()  # end the run while a renewal is in flight
        return "out", [], (), {}

    await attempt.run(body())
    assert swallowed == [True]
    beating = [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "") == "RunAttempt._heartbeat"
    ]
    assert beating == []
