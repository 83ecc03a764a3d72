"""Concurrency: many runs at once through one factory, no cross-talk."""

from __future__ import annotations

import asyncio

import pytest

from outlast.adapter import CheckpointerFactory, Message, RunExists
from outlast_conformance.fixtures import StoreFixtures
from outlast_conformance.support import conversation, must_load, start, state

SAVES_PER_RUN = 8


class ConcurrencyTests(StoreFixtures):
    """Concurrent runs keep to their own records; concurrent begins race safely."""

    @pytest.mark.asyncio
    async def test_many_runs_saving_at_once_do_not_cross_talk(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """N runs saving growing transcripts concurrently through one factory
        each load back exactly their own transcript and result."""

        async def one_run(index: int) -> tuple[str, tuple[Message, ...]]:
            cp = await factory.begin(start(namespace, input=index))
            history: tuple[Message, ...] = ()
            for step in range(SAVES_PER_RUN):
                history = (*history, *conversation(2, tag=f"run{index}-step{step}-"))
                await cp.save(state(history))
            if index % 2:
                await cp.complete(f"result-{index}")
            return cp.run_id, history

        n = self.capabilities.concurrency * 2
        outcomes = await asyncio.gather(*(one_run(i) for i in range(n)))
        assert len({run_id for run_id, _ in outcomes}) == n
        for index, (run_id, history) in enumerate(outcomes):
            stored = await must_load(factory, run_id, namespace)
            assert stored.record.input == index
            if index % 2:
                assert stored.record.result == f"result-{index}"
            else:
                assert stored.state.history == history

    @pytest.mark.asyncio
    async def test_concurrent_begins_of_one_run_id_exactly_one_wins(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """N begins of the same run id at once: exactly one succeeds, the
        others raise RunExists, and the record is the winner's."""
        n = self.capabilities.concurrency
        outcomes = await asyncio.gather(
            *(factory.begin(start(namespace, run_id="contested", input=i)) for i in range(n)),
            return_exceptions=True,
        )
        winners = [o for o in outcomes if not isinstance(o, BaseException)]
        losers = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(winners) == 1, f"{len(winners)} of {n} concurrent begins succeeded"
        assert all(isinstance(e, RunExists) for e in losers), losers
        stored = await must_load(factory, "contested", namespace)
        assert stored.record.input == outcomes.index(winners[0])
