"""A fleet end to end through the executor: submit, serve, wait, cancel."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from outlast import (
    JSON,
    Agent,
    Executor,
    Message,
    ResultTimeout,
    RunExists,
    RunFailed,
    RunNotFound,
    RunStatus,
    ScriptedModel,
    Tool,
)
from outlast.adapter import CheckpointerFactory, transitions
from outlast.messages import JSONObject
from outlast_conformance.fixtures import StoreFixtures
from outlast_conformance.flaky import FlakyStore
from outlast_conformance.scripts import StepTool, call, single_loop
from outlast_conformance.support import interrupted_ids, must_load, unique, wait_for


@contextlib.asynccontextmanager
async def serving(executor: Executor, concurrency: int = 2) -> AsyncIterator[asyncio.Task[object]]:
    """``executor.serve()`` in a task for the block; shut down (and awaited) after it."""
    task: asyncio.Task[object] = asyncio.create_task(
        executor.serve(concurrency=concurrency, poll_interval=0.05, drain_timeout=10)
    )
    try:
        yield task
    finally:
        executor.shutdown()
        await asyncio.wait_for(task, 30)


class Gate:
    """A tool that waits, inside a run, until the test opens it."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.opened = asyncio.Event()

    async def handle(self, arguments: JSONObject) -> JSON:
        self.entered.set()
        await self.opened.wait()
        return "through the gate"

    def agent(self) -> Agent:
        return Agent(
            model=ScriptedModel(
                [call("gate", "g1"), call("gate", "g2"), Message.assistant("past the gates")]
            ),
            tools=(Tool("gate", "waits for the test", self.handle),),
        )


class ServingTests(StoreFixtures):
    """Executor.submit/serve/result/cancel on the store under test."""

    def _executor(
        self, factory: CheckpointerFactory, namespace: str, lease: float = 30.0
    ) -> Executor:
        return Executor(factory, namespace=namespace, owner=unique("worker"), lease=lease)

    @pytest.mark.asyncio
    async def test_submitted_runs_are_run_by_a_worker_and_their_results_awaited(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """Runs submitted by one executor are started by another's serve(),
        and result() returns each one's output once it completes."""
        submitter = self._executor(factory, namespace)
        run_ids = [await submitter.submit("steps", {"job": i}) for i in range(3)]
        for run_id in run_ids:
            assert (await must_load(factory, run_id, namespace)).record.queued
        worker = self._executor(factory, namespace)
        worker.register("steps", single_loop(StepTool()))
        async with serving(worker):
            results = [
                await submitter.result(run_id, timeout=self.capabilities.wait_timeout)
                for run_id in run_ids
            ]
        assert [r.output for r in results] == ["all three steps done"] * 3
        for run_id in run_ids:
            record = (await must_load(factory, run_id, namespace)).record
            assert (record.status, record.epoch, record.crashes) == (RunStatus.COMPLETED, 1, 0)

    @pytest.mark.asyncio
    async def test_submit_is_idempotent_by_run_id(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """Submitting a run id again with the same kind is the same run;
        with another kind it is RunExists."""
        ex = self._executor(factory, namespace)
        run_id = await ex.submit("steps", {"job": 1}, run_id=unique("run"))
        assert await ex.submit("steps", {"job": 1}, run_id=run_id) == run_id
        with pytest.raises(RunExists, match="kind"):
            await ex.submit("other", None, run_id=run_id)
        listed = [r.run_id for r in (await factory.list(namespace)).records]
        assert listed == [run_id]

    @pytest.mark.asyncio
    async def test_result_raises_for_failed_unknown_and_slow_runs(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """result() of a failed run raises RunFailed with its stored error;
        of an unknown id RunNotFound; of a run still queued after the
        timeout ResultTimeout (the run is left as it was)."""
        ex = self._executor(factory, namespace)
        ex.register("short", single_loop(StepTool(), script=[call("step", "c1", n=1)]))
        failing = unique("run")
        with pytest.raises(Exception, match="replies"):
            await ex.run("short", None, run_id=failing)
        with pytest.raises(RunFailed, match="ModelError"):
            await ex.result(failing, timeout=1)
        with pytest.raises(RunNotFound):
            await ex.result("no-such-run", timeout=1)
        queued = await ex.submit("nobody-serves-this", None)
        with pytest.raises(ResultTimeout):
            await ex.result(queued, timeout=0.2)
        assert (await must_load(factory, queued, namespace)).record.queued

    @pytest.mark.asyncio
    async def test_a_worker_never_claims_a_kind_it_has_not_registered(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A worker serving kind "steps" runs those and leaves a queued run of
        another kind alone, for a worker that knows it."""
        ex = self._executor(factory, namespace)
        foreign = await ex.submit("someone-elses", None)
        mine = await ex.submit("steps", None)
        worker = self._executor(factory, namespace)
        worker.register("steps", single_loop(StepTool()))
        async with serving(worker):
            await ex.result(mine, timeout=self.capabilities.wait_timeout)
        record = (await must_load(factory, foreign, namespace)).record
        assert (record.queued, record.attempts) == (True, 0)

    @pytest.mark.asyncio
    async def test_cancel_stops_a_served_run_at_its_next_save(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """cancel() of a run a worker is running: the worker fails it with
        Cancelled once the running step is saved; result() raises RunFailed
        saying so; the step after it never starts."""
        gate = Gate()
        worker = self._executor(factory, namespace, lease=3600)
        worker.register("gated", gate.agent())
        submitter = self._executor(factory, namespace)
        run_id = await submitter.submit("gated", None)
        async with serving(worker):
            await asyncio.wait_for(gate.entered.wait(), self.capabilities.wait_timeout)
            requested = await submitter.cancel(run_id)
            assert (requested.status, requested.cancel_requested) == (RunStatus.RUNNING, True)
            gate.entered.clear()
            gate.opened.set()
            with pytest.raises(RunFailed, match="Cancelled"):
                await submitter.result(run_id, timeout=self.capabilities.wait_timeout)
        record = (await must_load(factory, run_id, namespace)).record
        assert (record.status, record.error) == (RunStatus.FAILED, transitions.CANCELLED)
        stored = await factory.list(namespace, RunStatus.FAILED)
        assert [r.run_id for r in stored.records] == [run_id]
        assert not gate.entered.is_set(), "the step after the cancel started"

    @pytest.mark.asyncio
    async def test_worker_shutdown_releases_its_running_runs(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """On shutdown, serve() stops claiming, releases the runs it is
        running (claimable at once by others) and returns."""
        gate = Gate()
        worker = self._executor(factory, namespace, lease=3600)
        worker.register("gated", gate.agent())
        run_id = await worker.submit("gated", None)
        async with serving(worker) as task:
            await asyncio.wait_for(gate.entered.wait(), self.capabilities.wait_timeout)
            worker.shutdown()
            await asyncio.wait_for(asyncio.shield(task), self.capabilities.wait_timeout)
        record = (await must_load(factory, run_id, namespace)).record
        assert (record.status, record.lease_expires_at, record.crashes) == (
            RunStatus.RUNNING,
            None,
            0,
        )
        assert run_id in await interrupted_ids(factory, namespace)

    @pytest.mark.asyncio
    async def test_a_worker_keeps_going_through_a_store_outage(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """While claims cannot reach the store the worker backs off and
        retries; once the store is back it runs what was submitted."""
        flaky = FlakyStore(factory)
        flaky.claims_down = True
        worker = Executor(flaky, namespace=namespace, owner=unique("worker"))
        worker.register("steps", single_loop(StepTool()))
        submitter = self._executor(factory, namespace)
        run_id = await submitter.submit("steps", None)
        async with serving(worker):
            await asyncio.wait_for(flaky.claim_failed.wait(), self.capabilities.wait_timeout)

            async def failed_twice() -> bool:
                return flaky.failed_claims >= 2

            await wait_for(failed_twice, within=self.capabilities.wait_timeout, what="a retry")
            flaky.claims_down = False
            result = await submitter.result(run_id, timeout=self.capabilities.wait_timeout + 5)
        assert result.output == "all three steps done"
