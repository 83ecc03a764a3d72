"""Claims: taking over an interrupted run, racing for it, and fencing."""

from __future__ import annotations

import asyncio

import pytest

from outlast.adapter import JSON, CheckpointerFactory, Claim, LeaseLost, PhaseOutput, RunStatus
from outlast_conformance.fixtures import Reopen, StoreFixtures
from outlast_conformance.support import (
    conversation,
    interrupted_ids,
    must_load,
    start,
    state,
    tool_exchange,
    wait_interrupted,
    writes_not_fenced,
)


class ClaimTests(StoreFixtures):
    """claim() resumes, bumps epoch and attempts, has one winner, and fences."""

    @pytest.mark.asyncio
    async def test_claim_returns_resume_state_kind_and_input(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A claim of a released run returns a checkpointer for the same run,
        the saved phases and current transcript, and the kind and input."""
        run_input: JSON = {"question": "why?", "n": [1, 2]}
        cp = await factory.begin(start(namespace, kind="qa", input=run_input))
        phases = (PhaseOutput("gather", ["x"]),)
        history = (*conversation(2), *tool_exchange())
        await cp.save(state(history, phases))
        await cp.release()
        claim = await factory.claim(cp.run_id, owner="worker-b", lease=30, namespace=namespace)
        assert claim is not None
        assert (claim.checkpointer.run_id, claim.checkpointer.namespace) == (cp.run_id, namespace)
        assert claim.resume.completed_phases == phases
        assert claim.resume.history == history
        assert (claim.record.kind, claim.record.input) == ("qa", run_input)

    @pytest.mark.asyncio
    async def test_claim_raises_epoch_and_attempts(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """Each claim raises epoch and attempts by one, records the new owner
        and a live lease, and the run leaves interrupted()."""
        cp = await factory.begin(start(namespace))
        await cp.release()
        first = await factory.claim(cp.run_id, owner="worker-b", lease=3600, namespace=namespace)
        assert first is not None
        assert (first.checkpointer.epoch, first.record.epoch, first.record.attempts) == (2, 2, 2)
        assert first.record.owner == "worker-b" and first.record.lease_expires_at is not None
        assert cp.run_id not in await interrupted_ids(factory, namespace)
        await first.checkpointer.release()
        second = await factory.claim(cp.run_id, owner="worker-c", lease=3600, namespace=namespace)
        assert second is not None
        assert (second.checkpointer.epoch, second.record.attempts) == (3, 3)
        record = (await must_load(factory, cp.run_id, namespace)).record
        assert (record.epoch, record.attempts, record.owner) == (3, 3, "worker-c")
        assert record.status is RunStatus.RUNNING

    @pytest.mark.asyncio
    async def test_claim_after_expiry_counts_a_crash_and_after_release_does_not(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A claim of a lease that expired without a release counts a crash
        (``crashes`` + 1); a claim of a released run does not. Both count an
        attempt."""
        lease = self.capabilities.lease_resolution
        cp = await factory.begin(start(namespace, lease=lease))
        await wait_interrupted(factory, cp.run_id, namespace, within=self.capabilities.wait_timeout)
        crashed = await factory.claim(cp.run_id, owner="b", lease=3600, namespace=namespace)
        assert crashed is not None
        assert (crashed.record.attempts, crashed.record.crashes) == (2, 1)
        await crashed.checkpointer.release()
        released = await factory.claim(cp.run_id, owner="c", lease=3600, namespace=namespace)
        assert released is not None
        assert (released.record.attempts, released.record.crashes) == (3, 1)
        record = (await must_load(factory, cp.run_id, namespace)).record
        assert (record.attempts, record.crashes) == (3, 1)

    @pytest.mark.asyncio
    async def test_empty_save_of_a_fenced_checkpointer_raises_lease_lost(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A save with nothing new is still checked: after a claim by another
        worker, the old checkpointer's save of what it already saved raises
        LeaseLost."""
        old = await factory.begin(start(namespace))
        await old.save(state(conversation(2)))
        await old.release()
        assert await factory.claim(old.run_id, owner="b", lease=3600, namespace=namespace)
        with pytest.raises(LeaseLost):
            await old.save(state(conversation(2)))

    @pytest.mark.asyncio
    async def test_claim_of_unclaimable_run_returns_none(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """claim() returns None, changing nothing, for an unknown run id, a
        completed run and a failed run."""
        done = await factory.begin(start(namespace))
        await done.complete(1)
        failed = await factory.begin(start(namespace))
        await failed.fail("x")
        for run_id in ("no-such-run", done.run_id, failed.run_id):
            assert await factory.claim(run_id, owner="w", lease=30, namespace=namespace) is None
        for run_id in (done.run_id, failed.run_id):
            assert (await must_load(factory, run_id, namespace)).record.epoch == 1

    @pytest.mark.asyncio
    async def test_concurrent_claimers_exactly_one_wins(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """N claimers of one interrupted run at once (asyncio.gather on one
        factory): exactly one gets a Claim, the run is at epoch 2."""
        cp = await factory.begin(start(namespace))
        await cp.release()
        n = self.capabilities.concurrency
        claims = await asyncio.gather(
            *(
                factory.claim(cp.run_id, owner=f"w{i}", lease=3600, namespace=namespace)
                for i in range(n)
            )
        )
        winners = [c for c in claims if c is not None]
        assert len(winners) == 1, f"{len(winners)} of {n} concurrent claimers won"
        record = (await must_load(factory, cp.run_id, namespace)).record
        assert (record.epoch, record.attempts, record.owner) == (2, 2, winners[0].record.owner)

    @pytest.mark.outlast_requires("durable")
    @pytest.mark.asyncio
    async def test_claimers_on_separate_factories_exactly_one_wins(
        self, factory: CheckpointerFactory, namespace: str, reopened: Reopen
    ) -> None:
        """N workers, each with its own factory on the same storage (as N
        processes would be), claim one run at once: exactly one wins."""
        cp = await factory.begin(start(namespace))
        await cp.save(state(conversation(2)))
        await cp.release()
        n = self.capabilities.concurrency
        workers = [await reopened() for _ in range(n)]
        claims: list[Claim | None] = list(
            await asyncio.gather(
                *(
                    worker.claim(cp.run_id, owner=f"w{i}", lease=3600, namespace=namespace)
                    for i, worker in enumerate(workers)
                )
            )
        )
        winners = [c for c in claims if c is not None]
        assert len(winners) == 1, f"{len(winners)} of {n} claimers on separate factories won"
        assert winners[0].resume.history == conversation(2)
        record = (await must_load(factory, cp.run_id, namespace)).record
        assert (record.epoch, record.owner) == (2, winners[0].record.owner)

    @pytest.mark.asyncio
    async def test_stale_checkpointer_is_fenced_after_claim(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """After a claim, the old owner's save, complete, fail, release and
        renew each raise LeaseLost and leave the new owner's record alone."""
        old = await factory.begin(start(namespace))
        await old.save(state(conversation(2)))
        await old.release()
        claim = await factory.claim(old.run_id, owner="new", lease=3600, namespace=namespace)
        assert claim is not None
        await claim.checkpointer.save(state((*conversation(2), *tool_exchange())))
        before = await must_load(factory, old.run_id, namespace)
        stale = state(conversation(6), (PhaseOutput("stale", 1),))
        assert await writes_not_fenced(old, stale) == []
        after = await must_load(factory, old.run_id, namespace)
        assert after.state == before.state
        assert after.record.status is RunStatus.RUNNING
        assert (after.record.epoch, after.record.owner) == (2, "new")
        assert after.record.lease_expires_at is not None  # the stale release did not drop it
        assert old.run_id not in await interrupted_ids(factory, namespace)

    @pytest.mark.asyncio
    async def test_claimed_checkpointer_continues_the_transcript(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """The claim's checkpointer takes the full state (resumed history plus
        new messages) and appends only the new part: no duplicates."""
        cp = await factory.begin(start(namespace))
        saved = conversation(3, tag="before-")
        await cp.save(state(saved))
        await cp.release()
        claim = await factory.claim(cp.run_id, owner="b", lease=3600, namespace=namespace)
        assert claim is not None
        await claim.checkpointer.save(state(claim.resume.history))
        more = (*claim.resume.history, *conversation(2, tag="after-"))
        await claim.checkpointer.save(state(more))
        stored = await must_load(factory, cp.run_id, namespace)
        assert stored.state.history == more
        await claim.checkpointer.complete("resumed")
        final = (await must_load(factory, cp.run_id, namespace)).record
        assert (final.status, final.result, final.epoch) == (RunStatus.COMPLETED, "resumed", 2)

    @pytest.mark.asyncio
    async def test_claimed_plan_resumes_its_current_phase(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A plan interrupted mid-phase is claimed with its completed phases and
        only the interrupted phase's transcript; the new owner finishes the
        phase and starts the next."""
        cp = await factory.begin(start(namespace))
        await cp.save(state(conversation(4, tag="p1-")))
        done = (PhaseOutput("p1", "one"),)
        await cp.save(state(conversation(2, tag="p2-"), done))
        await cp.release()
        claim = await factory.claim(cp.run_id, owner="b", lease=3600, namespace=namespace)
        assert claim is not None
        assert claim.resume.completed_phases == done
        assert claim.resume.history == conversation(2, tag="p2-")
        both = (*done, PhaseOutput("p2", "two"))
        await claim.checkpointer.save(state(conversation(3, tag="p2-"), done))
        await claim.checkpointer.save(state((), both))
        await claim.checkpointer.save(state(conversation(1, tag="p3-"), both))
        stored = await must_load(factory, cp.run_id, namespace)
        assert (stored.state.phases, stored.state.history) == (both, conversation(1, tag="p3-"))
