"""Namespaces: nothing in one is listed, claimed, loaded or changed from another."""

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
    unique,
)


class NamespaceTests(StoreFixtures):
    """The same run id in two namespaces is two unrelated runs."""

    @pytest.mark.asyncio
    async def test_same_run_id_in_two_namespaces_is_two_runs(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """One run id begun in two namespaces gives two independent records:
        each loads its own input and transcript, finishing one leaves the other."""
        other = unique("ns-other")
        run_id = "shared-id"
        a = await factory.begin(start(namespace, run_id=run_id, input="a"))
        b = await factory.begin(start(other, run_id=run_id, input="b"))
        await a.save(state(conversation(2, tag="a-")))
        await b.save(state(conversation(3, tag="b-")))
        await a.complete("done-a")
        in_a = await must_load(factory, run_id, namespace)
        in_b = await must_load(factory, run_id, other)
        assert (in_a.record.input, in_a.record.status) == ("a", RunStatus.COMPLETED)
        assert (in_b.record.input, in_b.record.status) == ("b", RunStatus.RUNNING)
        assert in_b.state.history == conversation(3, tag="b-")

    @pytest.mark.asyncio
    async def test_namespaces_isolate_listing_and_interrupted(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """list() and interrupted() of a namespace show only its own runs."""
        other = unique("ns-other")
        mine = await factory.begin(start(namespace))
        theirs = await factory.begin(start(other))
        await mine.release()
        await theirs.release()
        listed = {r.run_id for r in (await factory.list(namespace)).records}
        assert listed == {mine.run_id}
        assert await interrupted_ids(factory, namespace) == {mine.run_id}
        assert await interrupted_ids(factory, other) == {theirs.run_id}
        assert await factory.load(theirs.run_id, namespace) is None

    @pytest.mark.asyncio
    async def test_namespaces_isolate_claiming(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A released run cannot be claimed through another namespace: claim
        returns None there, and the run stays interrupted at epoch 1."""
        other = unique("ns-other")
        cp = await factory.begin(start(namespace))
        await cp.release()
        assert await factory.claim(cp.run_id, owner="w", lease=30, namespace=other) is None
        assert cp.run_id in await interrupted_ids(factory, namespace)
        assert (await must_load(factory, cp.run_id, namespace)).record.epoch == 1

    @pytest.mark.asyncio
    async def test_namespaces_isolate_deleting_and_purging(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """delete() and purge() through another namespace remove nothing."""
        other = unique("ns-other")
        cp = await factory.begin(start(namespace))
        await cp.complete("kept")
        assert await factory.delete(cp.run_id, other) is False
        assert await factory.purge(0, other) == 0
        stored = await must_load(factory, cp.run_id, namespace)
        assert stored.record.result == "kept"
