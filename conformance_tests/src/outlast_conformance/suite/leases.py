"""Leases: when a running run counts as abandoned, and the heartbeat."""

from __future__ import annotations

import pytest

from outlast.adapter import CheckpointerFactory, RunStatus
from outlast_conformance.fixtures import StoreFixtures
from outlast_conformance.support import (
    conversation,
    interrupted_ids,
    must_load,
    start,
    state,
    wait_interrupted,
)


class LeaseTests(StoreFixtures):
    """Unexpired leases are owned, expired ones are interrupted, renew extends."""

    @pytest.mark.asyncio
    async def test_unexpired_lease_is_not_interrupted(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A running run with a live lease is not in interrupted() and claim()
        returns None for it."""
        cp = await factory.begin(start(namespace, lease=3600))
        await cp.save(state(conversation(2)))
        assert cp.run_id not in await interrupted_ids(factory, namespace)
        assert await factory.claim(cp.run_id, owner="thief", lease=30, namespace=namespace) is None
        stored = await must_load(factory, cp.run_id, namespace)
        assert (stored.record.epoch, stored.record.owner) == (1, "worker-a")

    @pytest.mark.asyncio
    async def test_expired_lease_is_interrupted(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A run whose owner stopped renewing shows up in interrupted() once
        its lease expires, still ``running`` with its progress."""
        cp = await factory.begin(start(namespace, lease=self.capabilities.lease_resolution))
        await cp.save(state(conversation(3)))
        record = await wait_interrupted(
            factory, cp.run_id, namespace, within=self.capabilities.wait_timeout
        )
        assert (record.status, record.epoch) == (RunStatus.RUNNING, 1)
        stored = await must_load(factory, cp.run_id, namespace)
        assert stored.state.history == conversation(3)

    @pytest.mark.asyncio
    async def test_renew_extends_the_lease(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """renew() sets the lease to its length from now: a live lease never
        moves earlier, and a released run that renews is owned again."""
        cp = await factory.begin(start(namespace, lease=3600))
        before = (await must_load(factory, cp.run_id, namespace)).record.lease_expires_at
        await cp.renew()
        renewed = (await must_load(factory, cp.run_id, namespace)).record.lease_expires_at
        assert before is not None and renewed is not None and renewed >= before
        await cp.release()
        assert cp.run_id in await interrupted_ids(factory, namespace)
        await cp.renew()
        assert cp.run_id not in await interrupted_ids(factory, namespace)
        record = (await must_load(factory, cp.run_id, namespace)).record
        assert record.lease_expires_at is not None and record.status is RunStatus.RUNNING

    @pytest.mark.asyncio
    async def test_interrupted_honours_limit(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """interrupted(limit=n) returns at most n runs; a larger limit returns
        them all, each once."""
        released = []
        for _ in range(5):
            cp = await factory.begin(start(namespace))
            await cp.release()
            released.append(cp.run_id)
        page = await factory.interrupted(namespace, limit=2)
        assert len(page) == 2 and {r.run_id for r in page} <= set(released)
        everything = await factory.interrupted(namespace, limit=100)
        assert sorted(r.run_id for r in everything) == sorted(released)

    @pytest.mark.asyncio
    async def test_interrupted_lists_oldest_first(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """Released runs and expired leases come oldest first by when they
        became claimable (a release's time, a lease's expiry), whatever their
        run ids."""
        within = self.capabilities.wait_timeout
        lease = self.capabilities.lease_resolution
        expired_first = await factory.begin(start(namespace, run_id="z-expired", lease=lease))
        await wait_interrupted(factory, expired_first.run_id, namespace, within=within)
        released = await factory.begin(start(namespace, run_id="m-released", lease=3600))
        await released.release()
        expired_last = await factory.begin(start(namespace, run_id="a-expired", lease=lease))
        await wait_interrupted(factory, expired_last.run_id, namespace, within=within)
        order = [r.run_id for r in await factory.interrupted(namespace, limit=10)]
        assert order == ["z-expired", "m-released", "a-expired"], (
            f"interrupted() listed {order}; oldest first by expiry or release time"
        )
