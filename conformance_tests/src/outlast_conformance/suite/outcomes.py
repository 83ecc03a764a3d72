"""Every way a run ends, end to end through the executor with the store."""

from __future__ import annotations

import asyncio
import logging

import pytest

from outlast import (
    JSON,
    Agent,
    Executor,
    LeaseLost,
    Message,
    RunExists,
    RunFailed,
    RunStatus,
    ScriptedModel,
    Shutdown,
    StoreUnavailable,
    Tool,
)
from outlast.adapter import CheckpointerFactory, Claim
from outlast.messages import JSONObject
from outlast_conformance.fixtures import StoreFixtures
from outlast_conformance.flaky import FlakyStore
from outlast_conformance.scripts import StepTool, call, single_loop
from outlast_conformance.support import (
    interrupted_ids,
    must_load,
    start,
    unique,
    wait_interrupted,
)


def executor(factory: CheckpointerFactory, namespace: str, **options: bool) -> Executor:
    return Executor(factory, namespace=namespace, owner="worker-a", **options)


def saves_break_after_one_step(flaky: FlakyStore) -> Agent:
    """An agent whose one tool makes every later save of ``flaky`` fail."""

    def break_saves(arguments: JSONObject) -> JSON:
        flaky.saves_down = True
        return "the store is unreachable from now on"

    return Agent(
        model=ScriptedModel([call("break", "c1"), Message.assistant("never")]),
        tools=(Tool("break", "makes saves fail", break_saves),),
    )


class ExecutorOutcomeTests(StoreFixtures):
    """complete on success, release on shutdown, fail on everything else."""

    @pytest.mark.asyncio
    async def test_executor_success_completes_the_record(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A run that finishes is ``completed`` with its output as the result,
        its progress cleared, and is never interrupted."""
        ex = executor(factory, namespace)
        steps = StepTool()
        ex.register("steps", single_loop(steps))
        result = await ex.run("steps", {"job": 1})
        assert (result.output, result.durable, result.epoch) == ("all three steps done", True, 1)
        assert steps.seen == [1, 2, 3]
        stored = await must_load(factory, result.run_id, namespace)
        assert stored.record.status is RunStatus.COMPLETED
        assert stored.record.result == "all three steps done"
        assert (stored.record.kind, stored.record.input) == ("steps", {"job": 1})
        assert stored.state.history == ()
        assert result.run_id not in await interrupted_ids(factory, namespace)

    @pytest.mark.asyncio
    async def test_executor_tool_exception_fails_the_record(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A tool raising ends the run: the caller gets the exception, the
        record is ``failed`` with its text, and the steps before it are kept,
        with the reply that called the tool (saved before the tool ran)."""

        def explode(arguments: JSONObject) -> JSON:
            raise RuntimeError("disk on fire")

        agent = Agent(
            model=ScriptedModel([call("step", "c1", n=1), call("explode", "c2")]),
            tools=(StepTool().tool, Tool("explode", "fails", explode)),
        )
        ex = executor(factory, namespace)
        ex.register("fragile", agent)
        run_id = unique("run")
        with pytest.raises(RuntimeError, match="disk on fire"):
            await ex.run("fragile", "go", run_id=run_id)
        stored = await must_load(factory, run_id, namespace)
        assert stored.record.status is RunStatus.FAILED
        assert stored.record.error is not None and "disk on fire" in stored.record.error
        roles = [m.role for m in stored.state.history]
        assert roles == ["user", "assistant", "tool", "assistant"]
        assert run_id not in await interrupted_ids(factory, namespace)

    @pytest.mark.asyncio
    async def test_executor_model_error_fails_the_record(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """The model failing (here: running out of scripted replies) fails the
        record with a ModelError text."""
        ex = executor(factory, namespace)
        ex.register("short", single_loop(StepTool(), script=[call("step", "c1", n=1)]))
        run_id = unique("run")
        with pytest.raises(Exception, match="replies"):
            await ex.run("short", None, run_id=run_id)
        stored = await must_load(factory, run_id, namespace)
        assert stored.record.status is RunStatus.FAILED
        assert stored.record.error is not None and "ModelError" in stored.record.error

    @pytest.mark.asyncio
    async def test_executor_build_error_fails_the_record(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A registered builder raising (before any loop starts) still
        finalizes: the record is ``failed`` with the builder's error."""

        def build(run_input: JSON) -> Agent:
            raise ValueError(f"cannot build an agent for {run_input!r}")

        ex = executor(factory, namespace)
        ex.register("unbuildable", build)
        run_id = unique("run")
        with pytest.raises(ValueError, match="cannot build"):
            await ex.run("unbuildable", "bad input", run_id=run_id)
        stored = await must_load(factory, run_id, namespace)
        assert stored.record.status is RunStatus.FAILED
        assert stored.record.error is not None and "cannot build" in stored.record.error

    @pytest.mark.asyncio
    async def test_executor_caller_cancellation_fails_the_record(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """Cancelling the caller's task mid-run re-raises CancelledError and
        the record still ends ``failed`` (finalize is shielded), never
        left running for recovery."""
        entered = asyncio.Event()
        never = asyncio.Event()

        async def wait_forever(arguments: JSONObject) -> JSON:
            entered.set()
            await never.wait()
            return None

        agent = Agent(
            model=ScriptedModel([call("step", "c1", n=1), call("wait", "c2")]),
            tools=(StepTool().tool, Tool("wait", "blocks", wait_forever)),
        )
        ex = executor(factory, namespace)
        ex.register("blocking", agent)
        run_id = unique("run")
        task = asyncio.create_task(ex.run("blocking", None, run_id=run_id))
        await asyncio.wait_for(entered.wait(), self.capabilities.wait_timeout)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stored = await must_load(factory, run_id, namespace)
        assert stored.record.status is RunStatus.FAILED
        assert stored.record.error is not None and "cancel" in stored.record.error.lower()
        assert run_id not in await interrupted_ids(factory, namespace)

    @pytest.mark.asyncio
    async def test_executor_shutdown_releases_the_record(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """Host shutdown mid-run raises Shutdown; the record stays ``running``
        with the progress up to the interrupted step, and is interrupted at
        once (no lease to wait out)."""
        ex = Executor(factory, namespace=namespace, owner="worker-a", lease=3600)
        steps = StepTool(executor=ex, interrupt_at=2)
        ex.register("steps", single_loop(steps))
        run_id = unique("run")
        with pytest.raises(Shutdown):
            await ex.run("steps", None, run_id=run_id)
        assert steps.seen == [1, 2]
        stored = await must_load(factory, run_id, namespace)
        assert (stored.record.status, stored.record.lease_expires_at) == (RunStatus.RUNNING, None)
        roles = [m.role for m in stored.state.history]
        assert roles == ["system", "user", "assistant", "tool", "assistant", "tool"]
        assert run_id in await interrupted_ids(factory, namespace)

    @pytest.mark.asyncio
    async def test_executor_unreachable_store_at_begin_warns_and_runs_without_durability(
        self, factory: CheckpointerFactory, namespace: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """When begin cannot reach the store (StoreUnavailable), the executor
        logs a WARNING naming the error and the run still finishes,
        non-durably: nothing is stored."""
        flaky = FlakyStore(factory)
        flaky.begin_down = True
        ex = Executor(flaky, namespace=namespace, owner="worker-a")
        ex.register("steps", single_loop(StepTool()))
        run_id = unique("run")
        with caplog.at_level(logging.WARNING, logger="outlast"):
            result = await ex.run("steps", None, run_id=run_id)
        assert (result.output, result.durable) == ("all three steps done", False)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert any("StoreUnavailable" in r.getMessage() for r in warnings), warnings
        assert await factory.load(run_id, namespace) is None

    @pytest.mark.asyncio
    async def test_executor_strict_unreachable_store_at_begin_fails_the_run(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """With strict=True an unreachable store at begin is the caller's
        error: the run does not start."""
        flaky = FlakyStore(factory)
        flaky.begin_down = True
        steps = StepTool()
        ex = Executor(flaky, namespace=namespace, owner="worker-a", strict=True)
        ex.register("steps", single_loop(steps))
        with pytest.raises(StoreUnavailable):
            await ex.run("steps", None, run_id=unique("run"))
        assert steps.seen == []

    @pytest.mark.asyncio
    async def test_executor_completed_run_id_returns_its_result_and_runs_nothing(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """Running a run id that completed returns its stored result
        (``ran`` False) and never runs a tool again: a run id is an
        idempotency key."""
        steps = StepTool()
        ex = executor(factory, namespace)
        ex.register("steps", single_loop(steps))
        run_id = unique("run")
        first = await ex.run("steps", {"job": 1}, run_id=run_id)
        again = await ex.run("steps", {"job": 1}, run_id=run_id)
        assert steps.seen == [1, 2, 3], "a tool ran again for a completed run id"
        assert (again.output, again.ran, again.durable) == (first.output, False, True)
        assert first.ran is True
        record = (await must_load(factory, run_id, namespace)).record
        assert (record.status, record.epoch) == (RunStatus.COMPLETED, 1)

    @pytest.mark.asyncio
    async def test_executor_failed_run_id_raises_run_failed_with_its_stored_error(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """Running a run id that failed raises RunFailed carrying the stored
        error text, and runs nothing."""
        ex = executor(factory, namespace)
        steps = StepTool()
        ex.register("short", single_loop(steps, script=[call("step", "c1", n=1)]))
        run_id = unique("run")
        with pytest.raises(Exception, match="replies"):
            await ex.run("short", None, run_id=run_id)
        stored_error = (await must_load(factory, run_id, namespace)).record.error
        with pytest.raises(RunFailed) as caught:
            await ex.run("short", None, run_id=run_id)
        assert caught.value.error == stored_error and stored_error is not None
        assert steps.seen == [1]

    @pytest.mark.asyncio
    async def test_executor_running_or_other_kind_run_id_raises_run_exists(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """Running a run id that is still running (owned, or interrupted)
        raises RunExists naming its status; a run id of another kind raises
        RunExists naming the kinds. Nothing runs; the record is untouched."""
        owned = await factory.begin(start(namespace, kind="steps", lease=3600))
        released = await factory.begin(start(namespace, kind="steps", lease=3600))
        await released.release()
        steps = StepTool()
        ex = executor(factory, namespace, strict=True)
        ex.register("steps", single_loop(steps))
        ex.register("other", single_loop(steps))
        with pytest.raises(RunExists, match="running"):
            await ex.run("steps", None, run_id=owned.run_id)
        with pytest.raises(RunExists, match="interrupted"):
            await ex.run("steps", None, run_id=released.run_id)
        with pytest.raises(RunExists, match="kind"):
            await ex.run("other", None, run_id=owned.run_id)
        assert steps.seen == []
        record = (await must_load(factory, owned.run_id, namespace)).record
        assert (record.kind, record.epoch, record.status) == ("steps", 1, RunStatus.RUNNING)

    @pytest.mark.asyncio
    async def test_executor_shutdown_during_failing_saves_releases_the_run(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A shutdown that lands while a save keeps failing (the store
        unreachable for saves) releases the run: Shutdown is raised, the
        record stays ``running`` with its lease dropped, and is not failed."""
        flaky = FlakyStore(factory)
        ex = Executor(flaky, namespace=namespace, owner="worker-a", lease=3600)

        ex.register("doomed", saves_break_after_one_step(flaky))
        run_id = unique("run")
        task = asyncio.create_task(ex.run("doomed", None, run_id=run_id))
        await asyncio.wait_for(flaky.save_failed.wait(), self.capabilities.wait_timeout)
        ex.shutdown()
        with pytest.raises(Shutdown):
            await asyncio.wait_for(task, self.capabilities.wait_timeout)
        record = (await must_load(factory, run_id, namespace)).record
        assert (record.status, record.lease_expires_at) == (RunStatus.RUNNING, None), (
            f"the record is {record.status} (error {record.error!r}); a shutdown releases it"
        )
        assert record.error is None
        assert run_id in await interrupted_ids(factory, namespace)

    @pytest.mark.asyncio
    async def test_executor_saves_failing_for_the_whole_lease_leave_the_run_running(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """When saves cannot reach the store for as long as the lease lasts,
        the run stops locally with the store error and the record is left
        ``running`` (not failed), recoverable once its lease expires."""
        flaky = FlakyStore(factory)
        lease = max(0.5, self.capabilities.lease_resolution)
        ex = Executor(
            flaky, namespace=namespace, owner="worker-a", lease=lease, renew_interval=3600
        )

        ex.register("stranded", saves_break_after_one_step(flaky))
        run_id = unique("run")
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(ex.run("stranded", None, run_id=run_id), 10 * lease + 10)
        assert flaky.failed_saves >= 2, "a save that cannot reach the store must be retried"
        record = (await must_load(factory, run_id, namespace)).record
        assert (record.status, record.error) == (RunStatus.RUNNING, None)
        await wait_interrupted(factory, run_id, namespace, within=self.capabilities.wait_timeout)

    @pytest.mark.asyncio
    async def test_executor_state_that_is_not_json_fails_the_run(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A step that cannot be encoded (a model reply whose meta holds a
        value that is not JSON) is the run's own error: the run fails with
        it, and is not left running."""
        bad_reply = Message.assistant("hi", when={1, 2})  # type: ignore[arg-type]  # a set
        ex = executor(factory, namespace)
        ex.register("bad", Agent(model=ScriptedModel([bad_reply])))
        run_id = unique("run")
        with pytest.raises(ValueError, match="JSON"):
            await ex.run("bad", None, run_id=run_id)
        record = (await must_load(factory, run_id, namespace)).record
        assert record.status is RunStatus.FAILED
        assert record.error is not None and "JSON" in record.error

    @pytest.mark.asyncio
    async def test_executor_throttled_saves_are_flushed_before_release(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """With ``save_interval`` (saves coalesced by ThrottledCheckpointer), a
        run interrupted by shutdown still leaves its latest step durable:
        release flushes it first."""
        ex = Executor(
            factory, namespace=namespace, owner="worker-a", lease=3600, save_interval=3600
        )
        steps = StepTool(executor=ex, interrupt_at=2)
        ex.register("steps", single_loop(steps))
        run_id = unique("run")
        with pytest.raises(Shutdown):
            await ex.run("steps", None, run_id=run_id)
        stored = await must_load(factory, run_id, namespace)
        roles = [m.role for m in stored.state.history]
        assert roles == ["system", "user", "assistant", "tool", "assistant", "tool"]
        assert run_id in await interrupted_ids(factory, namespace)

    @pytest.mark.asyncio
    async def test_executor_run_claimed_by_another_worker_stops_with_lease_lost(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A run whose lease expired and was claimed by another worker mid-run
        stops with LeaseLost at its next save and leaves the new owner's
        record alone: epoch, owner, live lease, transcript, status."""
        run_id = unique("run")
        claims: list[Claim] = []

        async def steal(arguments: JSONObject) -> JSON:
            await wait_interrupted(
                factory, run_id, namespace, within=self.capabilities.wait_timeout
            )
            claim = await factory.claim(run_id, owner="worker-b", lease=3600, namespace=namespace)
            assert claim is not None, "the expired run could not be claimed"
            claims.append(claim)
            return "stolen"

        agent = Agent(
            model=ScriptedModel(
                [call("step", "c1", n=1), call("steal", "c2"), Message.assistant("never")]
            ),
            tools=(StepTool().tool, Tool("steal", "lets another worker claim the run", steal)),
        )
        # A lease that expires at once and is never renewed: the run looks abandoned.
        ex = Executor(
            factory,
            namespace=namespace,
            owner="worker-a",
            lease=self.capabilities.lease_resolution,
            renew_interval=3600,
        )
        ex.register("victim", agent)
        with pytest.raises(LeaseLost):
            await ex.run("victim", None, run_id=run_id)
        stored = await must_load(factory, run_id, namespace)
        record = stored.record
        assert (record.status, record.epoch, record.owner) == (RunStatus.RUNNING, 2, "worker-b")
        assert record.lease_expires_at is not None and record.error is None
        assert stored.state.history == claims[0].resume.history
        roles = [m.role for m in stored.state.history]  # the steal's reply was saved ahead
        assert roles == ["user", "assistant", "tool", "assistant"]
