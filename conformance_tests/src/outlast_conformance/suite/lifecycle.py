"""begin, and the three ways a run's record ends: complete, fail, release."""

from __future__ import annotations

import pytest

from outlast import (
    CheckpointerFactory,
    PhaseOutput,
    RunExists,
    RunStatus,
)
from outlast_conformance.fixtures import StoreFixtures
from outlast_conformance.support import (
    conversation,
    interrupted_ids,
    must_load,
    start,
    state,
    wait_interrupted,
    writes_not_fenced,
)


class LifecycleTests(StoreFixtures):
    """A record is begun once, and ends completed, failed or released."""

    @pytest.mark.asyncio
    async def test_begin_creates_running_record_at_epoch_one(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A new run is ``running`` at epoch 1 with one attempt, its owner,
        kind, input and a live lease, and an empty saved state."""
        run = start(namespace, kind="summarise", input={"doc": 7}, owner="worker-7")
        cp = await factory.begin(run)
        assert (cp.run_id, cp.namespace, cp.epoch) == (run.run_id, namespace, 1)
        stored = await must_load(factory, run.run_id, namespace)
        record = stored.record
        assert (record.run_id, record.namespace) == (run.run_id, namespace)
        assert (record.status, record.epoch, record.attempts) == (RunStatus.RUNNING, 1, 1)
        assert (record.kind, record.input, record.owner) == ("summarise", {"doc": 7}, "worker-7")
        assert record.lease_expires_at is not None
        assert record.result is None and record.error is None
        assert (stored.state.history, stored.state.phases) == ((), ())
        assert run.run_id not in await interrupted_ids(factory, namespace)

    @pytest.mark.asyncio
    async def test_begin_of_existing_run_id_raises_run_exists(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """Beginning a run id that exists raises RunExists naming it, and the
        existing record (epoch, progress) is untouched."""
        run = start(namespace, kind="first")
        cp = await factory.begin(run)
        await cp.save(state(conversation(2)))
        with pytest.raises(RunExists) as caught:
            await factory.begin(start(namespace, run_id=run.run_id, kind="second"))
        assert caught.value.run_id == run.run_id
        stored = await must_load(factory, run.run_id, namespace)
        assert (stored.record.kind, stored.record.epoch) == ("first", 1)
        assert stored.state.history == conversation(2)

    @pytest.mark.asyncio
    async def test_finished_run_id_cannot_be_begun_again(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A completed run's id (and a failed one's) stays taken: begin raises
        RunExists, so a finished run is never started again by mistake."""
        done = await factory.begin(start(namespace))
        await done.complete("ok")
        failed = await factory.begin(start(namespace))
        await failed.fail("boom")
        for run_id in (done.run_id, failed.run_id):
            with pytest.raises(RunExists):
                await factory.begin(start(namespace, run_id=run_id))

    @pytest.mark.asyncio
    async def test_complete_records_result_and_clears_progress(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """complete(result) makes the run ``completed`` with the result, no
        lease, and an empty saved state (transcript and phases cleared)."""
        cp = await factory.begin(start(namespace))
        await cp.save(state(conversation(5), (PhaseOutput("p", 1),)))
        await cp.complete({"answer": "done"})
        stored = await must_load(factory, cp.run_id, namespace)
        assert stored.record.status is RunStatus.COMPLETED
        assert stored.record.result == {"answer": "done"}
        assert stored.record.lease_expires_at is None
        assert (stored.state.history, stored.state.phases) == ((), ())

    @pytest.mark.asyncio
    async def test_fail_keeps_error_text_and_transcript(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """fail(error) makes the run ``failed`` with the exact error text, and
        keeps its transcript and phases for post-mortems."""
        cp = await factory.begin(start(namespace))
        phases = (PhaseOutput("p", 1),)
        await cp.save(state(conversation(3), phases))
        error = "ModelError: the model raised TimeoutError: upstream 504 ✗"
        await cp.fail(error)
        stored = await must_load(factory, cp.run_id, namespace)
        assert stored.record.status is RunStatus.FAILED
        assert stored.record.error == error
        assert stored.record.lease_expires_at is None
        assert (stored.state.history, stored.state.phases) == (conversation(3), phases)

    @pytest.mark.asyncio
    async def test_release_is_interrupted_at_once(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """release() keeps the run ``running`` with its progress, drops the
        lease, and the run is in interrupted() immediately (long lease)."""
        cp = await factory.begin(start(namespace, lease=3600))
        await cp.save(state(conversation(2)))
        assert cp.run_id not in await interrupted_ids(factory, namespace)
        await cp.release()
        assert cp.run_id in await interrupted_ids(factory, namespace)
        stored = await must_load(factory, cp.run_id, namespace)
        assert (stored.record.status, stored.record.lease_expires_at) == (RunStatus.RUNNING, None)
        assert stored.state.history == conversation(2)

    @pytest.mark.asyncio
    async def test_completed_and_failed_runs_are_never_interrupted(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """Finished runs with leases long expired never appear in
        interrupted(), and cannot be claimed."""
        lease = self.capabilities.lease_resolution
        done = await factory.begin(start(namespace, lease=lease))
        await done.complete(None)
        failed = await factory.begin(start(namespace, lease=lease))
        await failed.fail("x")
        # A control run begun after them, with the same lease: once it counts
        # as interrupted, the finished runs' leases have expired too.
        control = await factory.begin(start(namespace, lease=lease))
        await wait_interrupted(
            factory, control.run_id, namespace, within=self.capabilities.wait_timeout
        )
        found = await interrupted_ids(factory, namespace)
        assert done.run_id not in found and failed.run_id not in found
        for run_id in (done.run_id, failed.run_id):
            assert await factory.claim(run_id, owner="w", lease=30, namespace=namespace) is None

    @pytest.mark.asyncio
    async def test_finished_run_refuses_further_writes(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """After complete (or fail), the same checkpointer's save, complete,
        fail, release and renew raise LeaseLost and change nothing."""
        for finish in ("complete", "fail"):
            cp = await factory.begin(start(namespace))
            await cp.save(state(conversation(2)))
            await (cp.complete("first") if finish == "complete" else cp.fail("first"))
            before = await must_load(factory, cp.run_id, namespace)
            assert await writes_not_fenced(cp, state(conversation(4))) == []
            after = await must_load(factory, cp.run_id, namespace)
            assert after.state == before.state
            assert (after.record.status, after.record.result, after.record.error) == (
                before.record.status,
                before.record.result,
                before.record.error,
            )
