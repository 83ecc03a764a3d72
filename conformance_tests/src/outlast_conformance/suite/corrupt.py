"""Bad data: a corrupt record or message is reported by name, never stops the
rest, and an interrupted run that cannot be read is quarantined."""

from __future__ import annotations

import pytest

from outlast.adapter import CheckpointerFactory, CorruptCheckpoint, RunStatus
from outlast_conformance.fixtures import StoreFixtures
from outlast_conformance.support import (
    conversation,
    interrupted_ids,
    must_load,
    start,
    state,
    wait_for,
    writes_not_fenced,
)


class CorruptRecordTests(StoreFixtures):
    """load/claim raise CorruptCheckpoint naming the run; listings skip it;
    interrupted() and quarantine() take it out of the work list."""

    async def _released(
        self, factory: CheckpointerFactory, namespace: str, run_id: str = ""
    ) -> str:
        cp = await factory.begin(start(namespace, run_id=run_id or None))
        await cp.save(state(conversation(2)))
        await cp.release()
        return cp.run_id

    @pytest.mark.asyncio
    async def test_corrupt_record_load_raises_naming_the_run(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """load() of a run whose record was damaged raises CorruptCheckpoint
        whose run_id and message name the run."""
        run_id = await self._released(factory, namespace)
        await self.corrupt_record(factory, run_id, namespace)
        with pytest.raises(CorruptCheckpoint) as caught:
            await factory.load(run_id, namespace)
        assert caught.value.run_id == run_id
        assert run_id in str(caught.value)

    @pytest.mark.asyncio
    async def test_corrupt_message_load_and_claim_raise_naming_the_run(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """With one stored message damaged, load() and claim() raise
        CorruptCheckpoint naming the run; the claim takes nothing over (a
        second claim raises the same, it does not get the run)."""
        run_id = await self._released(factory, namespace)
        await self.corrupt_message(factory, run_id, namespace)
        with pytest.raises(CorruptCheckpoint) as loaded:
            await factory.load(run_id, namespace)
        assert loaded.value.run_id == run_id
        with pytest.raises(CorruptCheckpoint) as claimed:
            await factory.claim(run_id, owner="w", lease=30, namespace=namespace)
        assert claimed.value.run_id == run_id and run_id in str(claimed.value)
        with pytest.raises(CorruptCheckpoint):
            await factory.claim(run_id, owner="w2", lease=30, namespace=namespace)

    @pytest.mark.asyncio
    async def test_damaged_message_stays_damaged_after_more_saves(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """Damage one stored message, then save more: load still raises. A
        save writes only the delta; a store that rewrote the whole
        transcript on every save would repair the damage silently."""
        cp = await factory.begin(start(namespace, lease=3600))
        await cp.save(state(conversation(3)))
        await self.corrupt_message(factory, cp.run_id, namespace)
        await cp.save(state(conversation(6)))
        await cp.save(state(conversation(8)))
        with pytest.raises(CorruptCheckpoint):
            await factory.load(cp.run_id, namespace)

    @pytest.mark.asyncio
    async def test_listings_skip_corrupt_record_and_carry_on(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """With a run whose record is damaged among healthy ones, list() and
        interrupted() do not raise, leave it out, and return every healthy run."""
        healthy = [await self._released(factory, namespace) for _ in range(2)]
        broken = await self._released(factory, namespace)
        await self.corrupt_record(factory, broken, namespace)
        healthy += [await self._released(factory, namespace) for _ in range(2)]
        listed = {r.run_id for r in (await factory.list(namespace, limit=100)).records}
        assert listed == set(healthy)
        assert await interrupted_ids(factory, namespace) == set(healthy)
        for run_id in healthy:
            assert (await must_load(factory, run_id, namespace)).record.run_id == run_id

    @pytest.mark.asyncio
    async def test_interrupted_limit_counts_healthy_runs_only(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """More damaged records than the limit, all older than a healthy
        interrupted run: interrupted(limit=2) still returns the healthy run
        (the limit is of healthy runs, whatever precedes them)."""
        for index in range(3):
            broken = await self._released(factory, namespace, run_id=f"a-broken-{index}")
            await self.corrupt_record(factory, broken, namespace)
        healthy = await self._released(factory, namespace, run_id="z-healthy")
        found = await factory.interrupted(namespace, limit=2)
        assert [r.run_id for r in found] == [healthy], (
            f"interrupted(limit=2) returned {[r.run_id for r in found]}; damaged records "
            "must not use up the limit"
        )

    @pytest.mark.asyncio
    async def test_interrupted_quarantines_a_corrupt_record_and_retention_removes_it(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """An interrupted run whose record is damaged is quarantined as the
        work list is read: from then on it cannot be claimed (claim returns
        None, it does not raise), it is never listed as interrupted again,
        and retention (purge) removes it like any failed run."""
        broken = await self._released(factory, namespace)
        await self.corrupt_record(factory, broken, namespace)
        assert broken not in await interrupted_ids(factory, namespace)
        assert await factory.claim(broken, owner="w", lease=30, namespace=namespace) is None
        assert broken not in await interrupted_ids(factory, namespace)

        async def purged() -> bool:
            await factory.purge(0, namespace)
            try:
                return await factory.load(broken, namespace) is None
            except CorruptCheckpoint:
                return False

        await wait_for(purged, within=self.capabilities.wait_timeout, what="purge(0) to remove it")

    @pytest.mark.asyncio
    async def test_quarantine_fails_an_interrupted_run_and_keeps_what_is_stored(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """quarantine() of an interrupted run: True; the run is ``failed``
        with the reason as its error, at the next epoch, without a lease,
        its transcript kept; the previous owner is fenced; a second
        quarantine returns False."""
        cp = await factory.begin(start(namespace))
        await cp.save(state(conversation(3)))
        await cp.release()
        reason = "CorruptCheckpoint: run 'x': stored checkpoint is corrupt: test"
        assert await factory.quarantine(cp.run_id, reason, namespace) is True
        stored = await must_load(factory, cp.run_id, namespace)
        record = stored.record
        assert (record.status, record.error, record.epoch) == (RunStatus.FAILED, reason, 2)
        assert record.lease_expires_at is None
        assert stored.state.history == conversation(3)
        assert await writes_not_fenced(cp, state(conversation(4))) == []
        assert await factory.quarantine(cp.run_id, reason, namespace) is False
        assert cp.run_id not in await interrupted_ids(factory, namespace)

    @pytest.mark.asyncio
    async def test_quarantine_leaves_live_finished_and_unknown_runs_alone(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """quarantine() returns False and changes nothing for a run with a
        live lease, a completed run, a failed run and an unknown id."""
        live = await factory.begin(start(namespace, lease=3600))
        done = await factory.begin(start(namespace))
        await done.complete("ok")
        failed = await factory.begin(start(namespace))
        await failed.fail("own error")
        for run_id in (live.run_id, done.run_id, failed.run_id, "no-such-run"):
            assert await factory.quarantine(run_id, "CorruptCheckpoint: x", namespace) is False
        assert (await must_load(factory, live.run_id, namespace)).record.status is RunStatus.RUNNING
        assert (await must_load(factory, done.run_id, namespace)).record.result == "ok"
        assert (await must_load(factory, failed.run_id, namespace)).record.error == "own error"
        await live.save(state(conversation(1)))  # the live owner still owns it
