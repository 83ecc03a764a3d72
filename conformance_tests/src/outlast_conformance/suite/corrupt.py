"""Bad data: a corrupt record is reported by name and never stops the rest."""

from __future__ import annotations

import pytest

from outlast import CheckpointerFactory, CorruptCheckpoint
from outlast_conformance.fixtures import StoreFixtures
from outlast_conformance.support import conversation, interrupted_ids, must_load, start, state


class CorruptRecordTests(StoreFixtures):
    """load/claim raise CorruptCheckpoint naming the run; listings skip it."""

    async def _corrupt_released_run(self, factory: CheckpointerFactory, namespace: str) -> str:
        cp = await factory.begin(start(namespace))
        await cp.save(state(conversation(2)))
        await cp.release()
        await self.corrupt(factory, cp.run_id, namespace)
        return cp.run_id

    @pytest.mark.asyncio
    async def test_corrupt_record_load_raises_naming_the_run(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """load() of a damaged run raises CorruptCheckpoint whose run_id and
        message name the run."""
        run_id = await self._corrupt_released_run(factory, namespace)
        with pytest.raises(CorruptCheckpoint) as caught:
            await factory.load(run_id, namespace)
        assert caught.value.run_id == run_id
        assert run_id in str(caught.value)

    @pytest.mark.asyncio
    async def test_corrupt_record_claim_raises_naming_the_run(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """claim() of a damaged interrupted run raises CorruptCheckpoint naming
        it, and does not take the run over (a later claim still cannot
        succeed with a bogus resume state)."""
        run_id = await self._corrupt_released_run(factory, namespace)
        with pytest.raises(CorruptCheckpoint) as caught:
            await factory.claim(run_id, owner="w", lease=30, namespace=namespace)
        assert caught.value.run_id == run_id
        with pytest.raises(CorruptCheckpoint):
            await factory.claim(run_id, owner="w2", lease=30, namespace=namespace)

    @pytest.mark.asyncio
    async def test_listings_skip_corrupt_record_and_carry_on(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """With a corrupt run among healthy ones, interrupted() and list() do
        not raise and still return every healthy run."""
        healthy = []
        for _ in range(2):
            cp = await factory.begin(start(namespace))
            await cp.release()
            healthy.append(cp.run_id)
        corrupt_id = await self._corrupt_released_run(factory, namespace)
        for _ in range(2):
            cp = await factory.begin(start(namespace))
            await cp.release()
            healthy.append(cp.run_id)
        assert set(healthy) <= await interrupted_ids(factory, namespace)
        listed = {r.run_id for r in (await factory.list(namespace, limit=100)).records}
        assert set(healthy) <= listed
        for run_id in healthy:
            assert (await must_load(factory, run_id, namespace)).record.run_id == run_id
        with pytest.raises(CorruptCheckpoint):
            await factory.load(corrupt_id, namespace)
