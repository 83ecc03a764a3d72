"""Races, repeated so a short race window cannot pass by luck: claims and
begins across factories and across OS processes, and delete against begin."""

from __future__ import annotations

import asyncio

import pytest

from outlast.adapter import Checkpointer, CheckpointerFactory, RunExists, RunStatus
from outlast_conformance.fixtures import Reopen, StoreFixtures
from outlast_conformance.processes import Racers
from outlast_conformance.support import (
    conversation,
    interrupted_ids,
    start,
    state,
    unique,
    wait_for,
    winners_message,
)

ROUNDS = 20
"""Fresh runs raced per test."""


class RaceTests(StoreFixtures):
    """Of N concurrent claimers or beginners of one run, exactly one wins, every time."""

    async def _workers(
        self, factory: CheckpointerFactory, reopened: Reopen
    ) -> list[CheckpointerFactory]:
        n = self.capabilities.concurrency
        if not self.capabilities.durable:
            return [factory] * n
        return [await reopened() for _ in range(n)]

    @pytest.mark.asyncio
    async def test_claim_races_have_one_winner_every_round(
        self, factory: CheckpointerFactory, namespace: str, reopened: Reopen
    ) -> None:
        """Twenty released runs, each claimed at once by N workers (each on
        its own factory when the store is durable): exactly one wins each."""
        workers = await self._workers(factory, reopened)
        for round_number in range(ROUNDS):
            cp = await factory.begin(start(namespace, run_id=f"claim-race-{round_number}"))
            await cp.release()
            claims = await asyncio.gather(
                *(
                    worker.claim(cp.run_id, owner=f"w{i}", lease=3600, namespace=namespace)
                    for i, worker in enumerate(workers)
                )
            )
            won = sum(1 for claim in claims if claim is not None)
            assert won == 1, f"round {round_number}: " + winners_message(
                won, len(workers), "concurrent claimers"
            )

    @pytest.mark.asyncio
    async def test_begin_races_have_one_winner_every_round(
        self, factory: CheckpointerFactory, namespace: str, reopened: Reopen
    ) -> None:
        """Twenty fresh run ids, each begun at once by N workers: exactly one
        begin succeeds each time, the others raise RunExists, and the record
        is the winner's."""
        workers = await self._workers(factory, reopened)
        for round_number in range(ROUNDS):
            run_id = f"begin-race-{round_number}"
            outcomes = await asyncio.gather(
                *(
                    worker.begin(start(namespace, run_id=run_id, input=i))
                    for i, worker in enumerate(workers)
                ),
                return_exceptions=True,
            )
            winners = [i for i, o in enumerate(outcomes) if not isinstance(o, BaseException)]
            others = [o for o in outcomes if isinstance(o, BaseException)]
            assert len(winners) == 1, f"round {round_number}: " + winners_message(
                len(winners), len(workers), "concurrent begins"
            )
            assert all(isinstance(e, RunExists) for e in others), (
                f"the losing begins must raise RunExists, got {others!r}"
            )
            stored = await factory.load(run_id, namespace)
            assert stored is not None and stored.record.input == winners[0], (
                "the stored record is not the winning begin's"
            )

    @pytest.mark.outlast_requires("multi_process")
    @pytest.mark.asyncio
    async def test_processes_racing_claims_have_one_winner_every_round(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """N OS processes open the store's URL and claim each of twenty
        released runs at the same moment: exactly one process wins each.
        (A lock that only works between threads of one process fails here.)"""
        async with Racers(
            self.url(factory),
            namespace,
            self.capabilities.concurrency,
            self.capabilities.wait_timeout,
        ) as racers:
            for round_number in range(ROUNDS):
                cp = await factory.begin(start(namespace, run_id=unique("proc-claim")))
                await cp.release()
                won = await racers.race("claim", cp.run_id)
                assert won == 1, f"round {round_number}: " + winners_message(
                    won, racers.count, "claiming processes"
                )

    @pytest.mark.outlast_requires("multi_process")
    @pytest.mark.asyncio
    async def test_processes_racing_begins_have_one_winner_every_round(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """N OS processes begin each of twenty fresh run ids at the same
        moment: exactly one process's begin succeeds each time."""
        async with Racers(
            self.url(factory),
            namespace,
            self.capabilities.concurrency,
            self.capabilities.wait_timeout,
        ) as racers:
            for round_number in range(ROUNDS):
                run_id = unique("proc-begin")
                won = await racers.race("begin", run_id)
                assert won == 1, f"round {round_number}: " + winners_message(
                    won, racers.count, "beginning processes"
                )
                stored = await factory.load(run_id, namespace)
                assert stored is not None and stored.record.status is RunStatus.RUNNING

    @pytest.mark.outlast_requires("multi_process")
    @pytest.mark.asyncio
    async def test_runs_begun_while_other_processes_poll_are_never_lost(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """Half of N processes read interrupted() over and over while the
        others begin twenty runs each and die (no release): once their leases
        expire, every begun run is in interrupted() and in list(). (A store
        whose work list is a separate index, updated apart from the record,
        loses runs here.)"""
        n = self.capabilities.concurrency
        pollers = max(1, n // 2)
        lease = self.capabilities.lease_resolution
        commands: list[dict[str, object]] = [{"op": "poll", "seconds": 2.0}] * pollers
        begun: list[str] = []
        for index in range(n - pollers):
            run_ids = [f"polled-{index}-{k:02d}" for k in range(ROUNDS)]
            begun += run_ids
            commands.append({"op": "begin", "run_ids": run_ids, "lease": lease})
        async with Racers(
            self.url(factory), namespace, n, self.capabilities.wait_timeout
        ) as racers:
            assert all(await racers.each(commands)), "a racer's begin raised RunExists"

        async def all_found() -> bool:
            return set(begun) <= await interrupted_ids(factory, namespace)

        await wait_for(
            all_found,
            within=self.capabilities.wait_timeout,
            what="every begun run to be in interrupted()",
        )
        listed: set[str] = set()
        cursor: str | None = None
        while True:
            page = await factory.list(namespace, limit=100, cursor=cursor)
            listed |= {r.run_id for r in page.records}
            cursor = page.next_cursor
            if cursor is None:
                break
        missing = sorted(set(begun) - listed)
        assert missing == [], f"{len(missing)} begun runs are missing from list(): {missing[:5]}"

    @pytest.mark.asyncio
    async def test_delete_racing_begin_never_loses_the_new_run(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """Twenty times: delete a run while a begin of the same id retries
        until it succeeds. The new run, once begun, is never lost: it loads,
        is listed, and once released it is in the recovery work list."""
        for round_number in range(ROUNDS):
            run_id = f"reborn-{round_number}"
            old = await factory.begin(start(namespace, run_id=run_id, input="old"))
            await old.save(state(conversation(2)))

            async def begin_again(run_id: str = run_id) -> Checkpointer:
                for _ in range(10_000):
                    try:
                        return await factory.begin(start(namespace, run_id=run_id, input="new"))
                    except RunExists:
                        await asyncio.sleep(0)
                raise AssertionError(f"run {run_id!r} could not be begun again after delete")

            deleted, new = await asyncio.gather(factory.delete(run_id, namespace), begin_again())
            assert deleted is True
            stored = await factory.load(run_id, namespace)
            assert stored is not None, f"round {round_number}: the new run {run_id!r} was lost"
            assert (stored.record.input, stored.record.epoch) == ("new", 1)
            assert stored.state.history == (), "the new run holds the deleted run's progress"
            listed = {r.run_id for r in (await factory.list(namespace, limit=100)).records}
            assert run_id in listed, f"round {round_number}: the new run is missing from list()"
            await new.release()
            assert run_id in await interrupted_ids(factory, namespace), (
                f"round {round_number}: the released new run is missing from interrupted()"
            )
