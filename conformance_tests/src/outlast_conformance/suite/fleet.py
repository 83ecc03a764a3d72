"""A fleet's store side: queued runs, claiming the next runnable run, cancels."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from outlast.adapter import (
    CheckpointerFactory,
    CorruptCheckpoint,
    RunExists,
    RunFinished,
    RunNotFound,
    RunStatus,
    transitions,
)
from outlast_conformance.fixtures import Reopen, StoreFixtures
from outlast_conformance.processes import Racers
from outlast_conformance.support import (
    conversation,
    interrupted_ids,
    must_load,
    start,
    state,
    unique,
    wait_interrupted,
    writes_not_fenced,
)


class FleetStoreTests(StoreFixtures):
    """submit, claim_next and cancel, on the store itself."""

    @pytest.mark.asyncio
    async def test_submit_records_a_queued_run_claimable_at_once(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A submitted run is ``running`` but unowned: epoch 0, attempts 0, no
        owner, no lease, listed as interrupted at once. Its first claim is a
        start: epoch 1, attempts 1, no crash."""
        run = start(namespace, kind="report", input={"topic": "x"}, lease=30)
        await factory.submit(run)
        record = (await must_load(factory, run.run_id, namespace)).record
        assert (record.status, record.epoch, record.attempts, record.crashes) == (
            RunStatus.RUNNING,
            0,
            0,
            0,
        )
        assert (record.owner, record.lease_expires_at, record.queued) == ("", None, True)
        assert (record.kind, record.input) == ("report", {"topic": "x"})
        assert run.run_id in await interrupted_ids(factory, namespace)
        claim = await factory.claim(run.run_id, owner="w", lease=3600, namespace=namespace)
        assert claim is not None
        assert (claim.record.epoch, claim.record.attempts, claim.record.crashes) == (1, 1, 0)
        assert (claim.resume.history, claim.resume.completed_phases) == ((), ())

    @pytest.mark.asyncio
    async def test_submit_of_an_existing_id_raises_run_exists(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A run id is submitted (or begun) once: submit after begin, begin
        after submit and a second submit each raise RunExists."""
        begun = await factory.begin(start(namespace))
        with pytest.raises(RunExists):
            await factory.submit(start(namespace, run_id=begun.run_id))
        queued = start(namespace)
        await factory.submit(queued)
        with pytest.raises(RunExists):
            await factory.submit(queued)
        with pytest.raises(RunExists):
            await factory.begin(queued)
        assert (await must_load(factory, queued.run_id, namespace)).record.epoch == 0

    @pytest.mark.asyncio
    async def test_claim_next_takes_the_oldest_claimable_run_of_the_given_kinds(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """claim_next hands out claimable runs (queued, released, expired)
        oldest first, only of the kinds asked for, never a live one; None
        when nothing is left."""
        within = self.capabilities.wait_timeout
        await factory.submit(start(namespace, run_id="z-queued", kind="a"))
        other = await factory.begin(start(namespace, run_id="y-other-kind", kind="b"))
        await other.release()
        await factory.begin(start(namespace, run_id="x-live", kind="a", lease=3600))
        expired = await factory.begin(
            start(namespace, run_id="w-expired", kind="a", lease=self.capabilities.lease_resolution)
        )
        await wait_interrupted(factory, expired.run_id, namespace, within=within)
        order = []
        while claim := await factory.claim_next(["a"], owner="w", lease=3600, namespace=namespace):
            order.append(claim.record.run_id)
            assert len(order) < 10, "claim_next keeps handing out runs"
        assert order == ["z-queued", "w-expired"], (
            f"claim_next(['a']) took {order}; expected the queued run, then the expired one"
        )
        taken = await factory.claim_next(["b", "c"], owner="w", lease=3600, namespace=namespace)
        assert taken is not None and taken.record.run_id == "y-other-kind"
        assert (
            await factory.claim_next(["a", "b"], owner="w", lease=3600, namespace=namespace) is None
        )

    @pytest.mark.asyncio
    async def test_claim_next_keeps_to_its_namespace(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """claim_next never takes a run of another namespace."""
        other = unique("ns-other")
        await factory.submit(start(other, kind="a"))
        assert await factory.claim_next(["a"], owner="w", lease=30, namespace=namespace) is None
        assert await factory.claim_next(["a"], owner="w", lease=30, namespace=other) is not None

    @pytest.mark.asyncio
    async def test_concurrent_claim_next_never_hands_out_a_run_twice(
        self, factory: CheckpointerFactory, namespace: str, reopened: Reopen
    ) -> None:
        """N workers (each on its own factory when the store is durable)
        call claim_next until nothing is left, all at once: every queued run
        is claimed exactly once."""
        n = self.capabilities.concurrency
        run_ids = [f"q-{i:03d}" for i in range(n * 3)]
        for run_id in run_ids:
            await factory.submit(start(namespace, run_id=run_id, kind="a"))
        workers = (
            [await reopened() for _ in range(n)] if self.capabilities.durable else [factory] * n
        )

        async def drain(worker: CheckpointerFactory, index: int) -> list[str]:
            taken = []
            while claim := await worker.claim_next(
                ["a"], owner=f"w{index}", lease=3600, namespace=namespace
            ):
                taken.append(claim.record.run_id)
            return taken

        claimed = [
            r
            for taken in await asyncio.gather(*(drain(w, i) for i, w in enumerate(workers)))
            for r in taken
        ]
        twice = sorted(run_id for run_id, count in Counter(claimed).items() if count > 1)
        assert twice == [], f"{len(twice)} runs were handed out more than once: {twice[:5]}"
        assert sorted(claimed) == run_ids, "some queued runs were never claimed"

    @pytest.mark.outlast_requires("multi_process")
    @pytest.mark.asyncio
    async def test_processes_draining_with_claim_next_take_each_run_once(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """N OS processes call claim_next at the same moment until nothing
        is left: each queued run goes to exactly one process."""
        n = self.capabilities.concurrency
        run_ids = [f"p-{i:03d}" for i in range(n * 5)]
        for run_id in run_ids:
            await factory.submit(start(namespace, run_id=run_id, kind="race"))
        async with Racers(
            self.url(factory), namespace, n, self.capabilities.wait_timeout
        ) as racers:
            replies = await racers.replies_to([{"op": "drain"}] * n)
        claimed = [str(r) for reply in replies for r in reply["claimed"]]  # type: ignore[attr-defined]
        twice = sorted(run_id for run_id, count in Counter(claimed).items() if count > 1)
        assert twice == [], f"{len(twice)} runs went to more than one process: {twice[:5]}"
        assert sorted(claimed) == run_ids, "some queued runs were never claimed"

    @pytest.mark.asyncio
    async def test_claim_next_quarantines_a_damaged_run_and_takes_the_next(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """The oldest claimable run's transcript is damaged: claim_next does
        not raise, quarantines it (failed, CorruptCheckpoint) and hands out
        the next one."""
        broken = await factory.begin(start(namespace, run_id="a-broken", kind="a"))
        await broken.save(state(conversation(2)))
        await broken.release()
        await self.corrupt_message(factory, broken.run_id, namespace)
        healthy = await factory.begin(start(namespace, run_id="b-healthy", kind="a"))
        await healthy.release()
        claim = await factory.claim_next(["a"], owner="w", lease=3600, namespace=namespace)
        assert claim is not None and claim.record.run_id == "b-healthy"
        failed = {r.run_id: r for r in (await factory.list(namespace, RunStatus.FAILED)).records}
        assert (failed["a-broken"].error or "").startswith("CorruptCheckpoint: ")
        with pytest.raises(CorruptCheckpoint):
            await factory.load("a-broken", namespace)  # kept for forensics

    @pytest.mark.asyncio
    async def test_claim_next_skips_a_run_whose_record_is_damaged(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """The oldest claimable run's record is damaged: claim_next does not
        raise, never hands it out (it is quarantined) and claims the next."""
        broken = await factory.begin(start(namespace, run_id="a-broken", kind="a"))
        await broken.release()
        await self.corrupt_record(factory, broken.run_id, namespace)
        healthy = await factory.begin(start(namespace, run_id="b-healthy", kind="a"))
        await healthy.release()
        claim = await factory.claim_next(["a"], owner="w", lease=3600, namespace=namespace)
        assert claim is not None and claim.record.run_id == "b-healthy"
        assert await factory.claim_next(["a"], owner="w", lease=3600, namespace=namespace) is None
        assert await factory.claim("a-broken", owner="w", lease=30, namespace=namespace) is None

    @pytest.mark.asyncio
    async def test_cancel_of_a_run_nobody_owns_fails_it_at_once(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A queued, a released and an expired run are failed by cancel at
        once (``Cancelled: ...``), leave the work list, and a writer still
        holding one is fenced."""
        queued = start(namespace)
        await factory.submit(queued)
        released = await factory.begin(start(namespace))
        await released.save(state(conversation(2)))
        await released.release()
        expired = await factory.begin(start(namespace, lease=self.capabilities.lease_resolution))
        await wait_interrupted(
            factory, expired.run_id, namespace, within=self.capabilities.wait_timeout
        )
        for run_id in (queued.run_id, released.run_id, expired.run_id):
            after = await factory.cancel(run_id, namespace)
            assert (after.status, after.error) == (RunStatus.FAILED, transitions.CANCELLED)
            record = (await must_load(factory, run_id, namespace)).record
            assert (record.status, record.error) == (RunStatus.FAILED, transitions.CANCELLED)
        assert await interrupted_ids(factory, namespace) == set()
        assert await writes_not_fenced(released, state(conversation(3))) == []
        kept = await must_load(factory, released.run_id, namespace)
        assert kept.state.history == conversation(2)

    @pytest.mark.asyncio
    async def test_concurrent_cancels_fail_a_queued_run_once(
        self, factory: CheckpointerFactory, namespace: str, reopened: Reopen
    ) -> None:
        """N cancels of one queued run at once (separate factories when the
        store is durable): exactly one fails it, the others raise
        RunFinished, and the record is failed once (epoch 1)."""
        n = self.capabilities.concurrency
        queued = start(namespace)
        await factory.submit(queued)
        workers = (
            [await reopened() for _ in range(n)] if self.capabilities.durable else [factory] * n
        )
        outcomes = await asyncio.gather(
            *(worker.cancel(queued.run_id, namespace) for worker in workers),
            return_exceptions=True,
        )
        failed = [o for o in outcomes if not isinstance(o, BaseException)]
        others = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(failed) == 1, (
            f"{len(failed)} of {n} concurrent cancels failed the run; exactly one must"
        )
        assert all(isinstance(e, RunFinished) for e in others), others
        record = (await must_load(factory, queued.run_id, namespace)).record
        assert (record.status, record.epoch, record.error) == (
            RunStatus.FAILED,
            1,
            transitions.CANCELLED,
        )

    @pytest.mark.asyncio
    async def test_cancel_of_an_owned_run_asks_its_owner(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """cancel of a run with a live lease leaves it running with
        ``cancel_requested``; its owner's save and renew report the request
        (True), and did not before it."""
        cp = await factory.begin(start(namespace, lease=3600))
        assert await cp.save(state(conversation(1))) is False
        assert await cp.renew() is False
        after = await factory.cancel(cp.run_id, namespace)
        assert (after.status, after.cancel_requested, after.epoch) == (RunStatus.RUNNING, True, 1)
        assert await cp.save(state(conversation(2))) is True
        assert await cp.renew() is True
        record = (await must_load(factory, cp.run_id, namespace)).record
        assert (record.status, record.cancel_requested) == (RunStatus.RUNNING, True)
        await cp.fail(transitions.CANCELLED)
        assert (
            await must_load(factory, cp.run_id, namespace)
        ).record.error == transitions.CANCELLED

    @pytest.mark.asyncio
    async def test_cancel_of_a_finished_or_unknown_run_is_a_clear_error(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """Cancelling a completed or failed run raises RunFinished (the run
        is unchanged); an unknown run id raises RunNotFound; another
        namespace's run is unknown here."""
        done = await factory.begin(start(namespace))
        await done.complete("ok")
        failed = await factory.begin(start(namespace))
        await failed.fail("own error")
        for cp, status in ((done, "completed"), (failed, "failed")):
            with pytest.raises(RunFinished, match=status):
                await factory.cancel(cp.run_id, namespace)
        assert (await must_load(factory, failed.run_id, namespace)).record.error == "own error"
        with pytest.raises(RunNotFound):
            await factory.cancel("no-such-run", namespace)
        queued = start(namespace)
        await factory.submit(queued)
        with pytest.raises(RunNotFound):
            await factory.cancel(queued.run_id, unique("ns-other"))
        assert (await must_load(factory, queued.run_id, namespace)).record.queued
