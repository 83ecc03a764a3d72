"""Recovery end to end: interrupted runs continue where they stopped."""

from __future__ import annotations

import pytest

from outlast import (
    Executor,
    PhaseOutput,
    PoisonRun,
    ResumeMismatch,
    RunResult,
    RunStatus,
    ScriptedModel,
    Shutdown,
)
from outlast.adapter import CheckpointerFactory
from outlast_conformance.fixtures import Reopen, StoreFixtures
from outlast_conformance.scripts import StepTool, plan, single_loop
from outlast_conformance.support import (
    conversation,
    interrupted_ids,
    must_load,
    start,
    state,
    unique,
    wait_interrupted,
)


def worker(
    factory: CheckpointerFactory, namespace: str, name: str, *, max_crashes: int = 3
) -> Executor:
    """An executor as one worker process would have it."""
    return Executor(factory, namespace=namespace, owner=name, lease=3600, max_crashes=max_crashes)


async def interrupt(
    factory: CheckpointerFactory, namespace: str, kind: str, definition: str, at: object
) -> tuple[str, StepTool]:
    """Run ``kind`` on a first worker that shuts down at step ``at``."""
    first = worker(factory, namespace, "worker-a")
    steps = StepTool(executor=first, interrupt_at=at)  # type: ignore[arg-type]  # a JSON step
    first.register(kind, single_loop(steps) if definition == "loop" else plan(steps))
    run_id = unique("run")
    with pytest.raises(Shutdown):
        await first.run(kind, {"task": kind}, run_id=run_id)
    return run_id, steps


def only_result(results: list[RunResult], run_id: str) -> RunResult:
    assert [r.run_id for r in results] == [run_id], results
    return results[0]


class ExecutorResumeTests(StoreFixtures):
    """Single loops and plans resume from the store; poison runs stop."""

    @pytest.mark.asyncio
    async def test_recovered_single_loop_continues_its_transcript(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A loop interrupted after step 2 is recovered by another worker: only
        step 3 runs there, the transcript continues the saved one, and the
        same record completes at epoch 2 with the uninterrupted answer."""
        run_id, first_steps = await interrupt(factory, namespace, "steps", "loop", 2)
        saved = (await must_load(factory, run_id, namespace)).state.history
        second = worker(factory, namespace, "worker-b")
        steps = StepTool()
        agent = single_loop(steps)
        second.register("steps", agent)
        report = await second.recover()
        result = only_result(report.results, run_id)
        assert (first_steps.seen, steps.seen) == ([1, 2], [3])
        assert isinstance(agent.model, ScriptedModel) and agent.model.calls == 2
        assert result.transcript[: len(saved)] == saved
        assert (result.output, result.resumed, result.epoch) == ("all three steps done", True, 2)
        record = (await must_load(factory, run_id, namespace)).record
        assert (record.status, record.result, record.owner) == (
            RunStatus.COMPLETED,
            "all three steps done",
            "worker-b",
        )
        fresh = worker(factory, namespace, "worker-c")
        fresh.register("steps", single_loop(StepTool()))
        uninterrupted = await fresh.run("steps", {"task": "steps"})
        assert result.transcript == uninterrupted.transcript
        assert result.output == uninterrupted.output

    @pytest.mark.outlast_requires("durable")
    @pytest.mark.asyncio
    async def test_run_interrupted_in_one_process_is_recovered_by_another(
        self, factory: CheckpointerFactory, namespace: str, reopened: Reopen
    ) -> None:
        """A worker on a brand-new factory (another process) recovers a run the
        first worker released, continues it, and the first factory sees it
        completed."""
        run_id, _ = await interrupt(factory, namespace, "steps", "loop", 1)
        other_process = worker(await reopened(), namespace, "worker-b")
        steps = StepTool()
        other_process.register("steps", single_loop(steps))
        result = only_result((await other_process.recover()).results, run_id)
        assert steps.seen == [2, 3]
        assert (result.output, result.epoch) == ("all three steps done", 2)
        record = (await must_load(factory, run_id, namespace)).record
        assert (record.status, record.result) == (RunStatus.COMPLETED, "all three steps done")

    @pytest.mark.asyncio
    async def test_recovered_plan_skips_completed_phases_and_continues_mid_phase(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A plan interrupted inside its second phase resumes there: the first
        phase is not re-run, the second continues after its saved step, and
        the run finishes with the same phases and answer as an
        uninterrupted run."""
        run_id, first_steps = await interrupt(factory, namespace, "report", "plan", "draft-1")
        assert first_steps.seen == ["research", "draft-1"]
        stored = await must_load(factory, run_id, namespace)
        assert [p.name for p in stored.state.phases] == ["research"]
        second = worker(factory, namespace, "worker-b")
        steps = StepTool()
        second.register("report", plan(steps))
        result = only_result((await second.recover()).results, run_id)
        assert steps.seen == ["draft-2"]
        assert (result.skipped_phases, result.resumed) == (1, True)
        fresh = worker(factory, namespace, "worker-c")
        fresh.register("report", plan(StepTool()))
        uninterrupted = await fresh.run("report", {"task": "report"})
        assert result.phases == uninterrupted.phases
        assert result.output == uninterrupted.output == "approved: a draft citing three facts"
        record = (await must_load(factory, run_id, namespace)).record
        assert (record.status, record.result) == (RunStatus.COMPLETED, result.output)

    @pytest.mark.asyncio
    async def test_fresh_plan_runs_phases_with_the_same_name(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A fresh run never skips anything: two phases named alike both run,
        and both outputs are recorded."""
        ex = worker(factory, namespace, "worker-a")
        steps = StepTool()
        ex.register("twice", plan(steps, names=("research", "research")))
        result = await ex.run("twice", None)
        assert steps.seen == ["research", "research"]
        assert result.phases == (PhaseOutput("research", "three facts"),) * 2
        assert result.skipped_phases == 0

    @pytest.mark.asyncio
    async def test_recovered_plan_skips_repeated_phase_names_by_position(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """Interrupted in the second of two phases with one name, recovery
        skips exactly the first (by position) and runs the second (no
        transcript was saved for it) from its start."""
        run_id = unique("run")
        cp = await factory.begin(start(namespace, run_id=run_id, kind="twice"))
        await cp.save(state((), (PhaseOutput("research", "three facts"),)))
        await cp.release()
        second = worker(factory, namespace, "worker-b")
        steps = StepTool()
        second.register("twice", plan(steps, names=("research", "research", "review")))
        result = only_result((await second.recover()).results, run_id)
        assert steps.seen == ["research"]
        assert [p.name for p in result.phases] == ["research", "research", "review"]
        assert result.skipped_phases == 1

    @pytest.mark.asyncio
    async def test_resume_mismatch_fails_the_run(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """Saved phases that are not a prefix of the registered plan make
        recovery fail the run with ResumeMismatch instead of guessing."""
        run_id = unique("run")
        cp = await factory.begin(start(namespace, run_id=run_id, kind="report"))
        await cp.save(state((), (PhaseOutput("outline", "old plan"),)))
        await cp.release()
        ex = worker(factory, namespace, "worker-b")
        steps = StepTool()
        ex.register("report", plan(steps))
        report = await ex.recover()
        assert isinstance(report.errors.get(run_id), ResumeMismatch), report
        assert steps.seen == []
        record = (await must_load(factory, run_id, namespace)).record
        assert record.status is RunStatus.FAILED
        assert record.error is not None and "ResumeMismatch" in record.error

    @pytest.mark.asyncio
    async def test_run_that_crashed_more_than_max_crashes_is_failed_as_poison(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A run whose workers keep dying (leases that expire without a
        release) is recovered at most ``max_crashes`` times; the next
        recovery fails it as a PoisonRun without running it, and it is never
        interrupted again."""
        within = self.capabilities.wait_timeout
        short = self.capabilities.lease_resolution
        run_id = unique("run")
        await factory.begin(start(namespace, run_id=run_id, kind="steps", lease=short))
        for owner in ("crashy-1", "crashy-2"):
            await wait_interrupted(factory, run_id, namespace, within=within)
            claim = await factory.claim(run_id, owner=owner, lease=short, namespace=namespace)
            assert claim is not None  # ... and this worker dies too: its lease expires
        await wait_interrupted(factory, run_id, namespace, within=within)
        ex = worker(factory, namespace, "worker-z", max_crashes=2)
        steps = StepTool()
        ex.register("steps", single_loop(steps))
        report = await ex.recover()
        assert isinstance(report.errors.get(run_id), PoisonRun), report
        assert steps.seen == []
        record = (await must_load(factory, run_id, namespace)).record
        assert (record.status, record.attempts, record.crashes) == (RunStatus.FAILED, 4, 3)
        assert record.error is not None and "PoisonRun" in record.error
        assert run_id not in await interrupted_ids(factory, namespace)

    @pytest.mark.asyncio
    async def test_releases_never_make_a_poison_run(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A run handed back by clean shutdowns again and again (a deploy
        every time) is no crash: with max_crashes=0 it is still recovered and
        completes."""
        run_id, _ = await interrupt(factory, namespace, "steps", "loop", 1)
        for deploy in range(4):
            claim = await factory.claim(
                run_id, owner=f"deploy-{deploy}", lease=3600, namespace=namespace
            )
            assert claim is not None
            await claim.checkpointer.release()
        ex = worker(factory, namespace, "worker-z", max_crashes=0)
        ex.register("steps", single_loop(StepTool()))
        result = only_result((await ex.recover()).results, run_id)
        assert result.output == "all three steps done"
        record = (await must_load(factory, run_id, namespace)).record
        assert (record.status, record.attempts, record.crashes) == (RunStatus.COMPLETED, 6, 0)

    @pytest.mark.asyncio
    async def test_recovery_quarantines_corrupt_runs_and_recovers_the_rest(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """recover() among a run whose transcript is damaged and one whose
        record is damaged recovers every healthy run, quarantines both
        damaged ones (failed, out of the work list), and raises nothing."""
        healthy = [
            (await interrupt(factory, namespace, f"steps-{i}", "loop", 2))[0] for i in range(2)
        ]
        broken_message = await factory.begin(start(namespace, kind="steps-0", lease=3600))
        await broken_message.save(state(conversation(2)))
        await broken_message.release()
        await self.corrupt_message(factory, broken_message.run_id, namespace)
        broken_record = await factory.begin(start(namespace, kind="steps-0", lease=3600))
        await broken_record.release()
        await self.corrupt_record(factory, broken_record.run_id, namespace)
        ex = worker(factory, namespace, "worker-b")
        for i in range(2):
            ex.register(f"steps-{i}", single_loop(StepTool()))
        report = await ex.recover()
        assert sorted(r.run_id for r in report.results) == sorted(healthy)
        failed = {r.run_id: r for r in (await factory.list(namespace, RunStatus.FAILED)).records}
        quarantined = failed.get(broken_message.run_id)
        assert quarantined is not None and (quarantined.error or "").startswith(
            "CorruptCheckpoint: "
        ), f"the run whose transcript is damaged was not quarantined: {report}"
        for run_id in healthy:
            record = (await must_load(factory, run_id, namespace)).record
            assert record.status is RunStatus.COMPLETED
        for broken in (broken_message.run_id, broken_record.run_id):
            assert await factory.claim(broken, owner="w", lease=30, namespace=namespace) is None
        again = await ex.recover()
        assert (again.results, again.errors) == ([], {})
