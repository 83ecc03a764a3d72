"""begin, and the three ways a run's record ends: complete, fail, release."""

from __future__ import annotations

import pytest

from outlast.adapter import (
    CheckpointerFactory,
    LeaseLost,
    PhaseOutput,
    RunExists,
    RunStatus,
)
from outlast_conformance.fixtures import StoreFixtures
from outlast_conformance.support import (
    clock_moves,
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
        assert (record.crashes, record.lease) == (0, run.lease)
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

    @pytest.mark.asyncio
    async def test_every_write_moves_updated_at(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """begin, save, an empty save, renew, release, a claim and complete
        each set ``updated_at`` later than the write before."""
        cp = await factory.begin(start(namespace, lease=3600))
        stamps = [(await must_load(factory, cp.run_id, namespace)).record.updated_at]
        writes = {
            "save": lambda: cp.save(state(conversation(2))),
            "an empty save": lambda: cp.save(state(conversation(2))),
            "renew": cp.renew,
            "release": cp.release,
        }
        for what, write in writes.items():
            await clock_moves()
            await write()
            stamps.append((await must_load(factory, cp.run_id, namespace)).record.updated_at)
            assert stamps[-1] > stamps[-2], f"{what} did not move updated_at"
        await clock_moves()
        claim = await factory.claim(cp.run_id, owner="b", lease=3600, namespace=namespace)
        assert claim is not None
        stamps.append((await must_load(factory, cp.run_id, namespace)).record.updated_at)
        assert stamps[-1] > stamps[-2], "claim did not move updated_at"
        await clock_moves()
        await claim.checkpointer.complete("done")
        stamps.append((await must_load(factory, cp.run_id, namespace)).record.updated_at)
        assert stamps[-1] > stamps[-2], "complete did not move updated_at"

    @pytest.mark.asyncio
    async def test_writes_of_a_deleted_run_raise_lease_lost(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """After delete, every write of the run's checkpointer (an empty save
        too) raises LeaseLost and nothing comes back."""
        cp = await factory.begin(start(namespace, lease=3600))
        await cp.save(state(conversation(2)))
        assert await factory.delete(cp.run_id, namespace) is True
        with pytest.raises(LeaseLost):
            await cp.save(state(conversation(2)))  # nothing new: still checked
        assert await writes_not_fenced(cp, state(conversation(4))) == []
        assert await factory.load(cp.run_id, namespace) is None
        assert cp.run_id not in {r.run_id for r in (await factory.list(namespace)).records}

    @pytest.mark.asyncio
    async def test_a_run_deleted_and_begun_again_fences_the_old_writer(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A checkpointer of a deleted run cannot write into a new run begun
        under the same id (same epoch 1): each write raises LeaseLost and the
        new run's record and transcript stay the new owner's."""
        old = await factory.begin(start(namespace, lease=3600, input="old"))
        await old.save(state(conversation(2, tag="old-")))
        await factory.delete(old.run_id, namespace)
        new = await factory.begin(start(namespace, run_id=old.run_id, lease=3600, input="new"))
        await new.save(state(conversation(1, tag="new-")))
        assert await writes_not_fenced(old, state(conversation(3, tag="old-"))) == []
        stored = await must_load(factory, old.run_id, namespace)
        assert (stored.record.input, stored.record.status) == ("new", RunStatus.RUNNING)
        assert stored.state.history == conversation(1, tag="new-")
        await new.complete("the new run's result")

    @pytest.mark.asyncio
    async def test_input_or_result_that_is_not_json_raises_value_error(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """begin with an input that is not JSON raises ValueError and creates
        nothing; complete with such a result raises ValueError and the run
        stays running, unchanged."""
        bad_input = start(namespace, input={"when": {1, 2}})  # type: ignore[dict-item]  # a set
        with pytest.raises(ValueError, match="JSON"):
            await factory.begin(bad_input)
        assert await factory.load(bad_input.run_id, namespace) is None
        cp = await factory.begin(start(namespace, lease=3600))
        with pytest.raises(ValueError, match="JSON"):
            await cp.complete(float("nan"))
        stored = await must_load(factory, cp.run_id, namespace)
        assert (stored.record.status, stored.record.result) == (RunStatus.RUNNING, None)
