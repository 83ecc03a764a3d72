"""Waiting for outside input: ``wait``, ``send``, and what a waiting run is not.

A tool asks for outside input (an approval, a missing value); the executor
saves the progress and parks the run with ``Checkpointer.wait``: ``waiting``,
no lease, no process. ``send`` delivers the input once and makes the run
claimable; whichever worker claims it continues with the delivery. A wait
may time out, after which the run is claimable without one.
"""

from __future__ import annotations

import asyncio

import pytest

from outlast.adapter import (
    JSON,
    CheckpointerFactory,
    NotWaiting,
    RunFinished,
    RunNotFound,
    RunStatus,
)
from outlast_conformance.fixtures import Reopen, StoreFixtures
from outlast_conformance.processes import Racers
from outlast_conformance.support import (
    conversation,
    interrupted_ids,
    must_load,
    start,
    state,
    wait_interrupted,
    winners_message,
    writes_not_fenced,
)

REQUEST: JSON = {
    "tool": "refund",
    "call": "call-1",
    "ask": "approve a refund of 40 EUR?",
    "n": [1, None],
}
DELIVERY: JSON = {"payload": {"approved": True, "by": "ann ünïcödé"}}


class WaitingTests(StoreFixtures):
    """A waiting run holds no lease, is never claimed, and takes one delivery."""

    async def _waiting(
        self, factory: CheckpointerFactory, namespace: str, timeout: float | None = None
    ) -> str:
        """A run with two saved messages, parked waiting for REQUEST; its id."""
        cp = await factory.begin(start(namespace, kind="wait", lease=3600))
        await cp.save(state(conversation(2)))
        await cp.wait(REQUEST, timeout)
        return cp.run_id

    @pytest.mark.asyncio
    async def test_wait_parks_the_run_with_no_lease_and_fences_its_writer(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """After ``wait`` the run is ``waiting`` with the request, no delivery,
        no lease and its transcript intact; every later write of the
        checkpointer that parked it raises LeaseLost."""
        cp = await factory.begin(start(namespace, kind="wait", lease=3600))
        await cp.save(state(conversation(2)))
        await cp.wait(REQUEST, None)
        stored = await must_load(factory, cp.run_id, namespace)
        record = stored.record
        assert (record.status, record.wait, record.delivery) == (
            RunStatus.WAITING,
            REQUEST,
            None,
        )
        assert (record.lease_expires_at, record.epoch) == (None, 1)
        assert stored.state.history == conversation(2)
        unfenced = await writes_not_fenced(cp, state(conversation(3)))
        assert unfenced == [], f"writes of a parked run's checkpointer were not fenced: {unfenced}"

    @pytest.mark.asyncio
    async def test_a_waiting_run_is_never_claimed_or_listed_as_interrupted(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """Neither ``interrupted`` nor ``claim`` nor ``claim_next`` takes a
        waiting run (with no timeout, or one far off); ``list`` finds it by
        its status."""
        never = await self._waiting(factory, namespace)
        later = await self._waiting(factory, namespace, timeout=3600)
        listed = await interrupted_ids(factory, namespace)
        assert {never, later} & listed == set(), "a waiting run was listed as interrupted"
        for run_id in (never, later):
            assert await factory.claim(run_id, owner="w", lease=60, namespace=namespace) is None
        assert await factory.claim_next(["wait"], owner="w", lease=60, namespace=namespace) is None
        page = await factory.list(namespace, RunStatus.WAITING)
        assert {r.run_id for r in page.records} == {never, later}
        assert [r.run_id for r in (await factory.list(namespace, RunStatus.RUNNING)).records] == []

    @pytest.mark.asyncio
    async def test_send_delivers_once_and_the_claim_resumes_with_the_delivery(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """``send`` makes the run ``running`` with its lease released and the
        delivery stored; a second send raises NotWaiting; the claim that
        follows is no crash and hands over the transcript, the wait and the
        delivery."""
        run_id = await self._waiting(factory, namespace)
        sent = await factory.send(run_id, DELIVERY, namespace)
        assert (sent.status, sent.delivery, sent.lease_expires_at) == (
            RunStatus.RUNNING,
            DELIVERY,
            None,
        )
        with pytest.raises(NotWaiting):
            await factory.send(run_id, {"payload": "again"}, namespace)
        assert run_id in await interrupted_ids(factory, namespace)
        claim = await factory.claim_next(["wait"], owner="w2", lease=3600, namespace=namespace)
        assert claim is not None and claim.record.run_id == run_id
        record = claim.record
        assert (record.status, record.epoch, record.attempts, record.crashes) == (
            RunStatus.RUNNING,
            2,
            2,
            0,
        )
        assert (record.wait, record.delivery) == (REQUEST, DELIVERY)
        assert claim.resume.history == conversation(2)
        with pytest.raises(NotWaiting):
            await factory.send(run_id, {"payload": "late"}, namespace)
        await claim.checkpointer.save(state(conversation(4)))
        assert (await must_load(factory, run_id, namespace)).state.history == conversation(4)

    @pytest.mark.asyncio
    async def test_send_to_an_unknown_or_not_waiting_run_is_a_clear_error(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """An unknown run raises RunNotFound; a running, completed or failed
        one NotWaiting, naming its status; nothing changes."""
        with pytest.raises(RunNotFound):
            await factory.send("no-such-run", DELIVERY, namespace)
        running = await factory.begin(start(namespace))
        done = await factory.begin(start(namespace))
        await done.complete("ok")
        failed = await factory.begin(start(namespace))
        await failed.fail("boom")
        for cp, status in ((running, "running"), (done, "completed"), (failed, "failed")):
            with pytest.raises(NotWaiting) as caught:
                await factory.send(cp.run_id, DELIVERY, namespace)
            assert caught.value.status == status
            record = (await must_load(factory, cp.run_id, namespace)).record
            assert (record.status.value, record.delivery) == (status, None)

    @pytest.mark.asyncio
    async def test_concurrent_senders_deliver_exactly_once(
        self, factory: CheckpointerFactory, namespace: str, reopened: Reopen
    ) -> None:
        """N senders (each on its own factory when the store is durable) send
        to one waiting run at once, over several runs: exactly one succeeds
        each time, and its delivery is the one stored."""
        n = self.capabilities.concurrency
        senders = (
            [await reopened() for _ in range(n)] if self.capabilities.durable else [factory] * n
        )
        for _ in range(5):
            run_id = await self._waiting(factory, namespace)

            async def send(sender: CheckpointerFactory, index: int, run_id: str = run_id) -> int:
                try:
                    await sender.send(run_id, {"payload": index}, namespace)
                except NotWaiting:
                    return -1
                return index

            results = await asyncio.gather(*(send(s, i) for i, s in enumerate(senders)))
            winners = [i for i in results if i >= 0]
            assert len(winners) == 1, winners_message(len(winners), n, "concurrent senders")
            stored = (await must_load(factory, run_id, namespace)).record
            assert stored.delivery == {"payload": winners[0]}

    @pytest.mark.outlast_requires("multi_process")
    @pytest.mark.asyncio
    async def test_processes_sending_at_once_deliver_exactly_once(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """N OS processes send to one waiting run at the same moment, over
        several runs: exactly one delivery each time."""
        n = self.capabilities.concurrency
        async with Racers(
            self.url(factory), namespace, n, self.capabilities.wait_timeout
        ) as racers:
            for _ in range(5):
                run_id = await self._waiting(factory, namespace)
                won = await racers.race("send", run_id)
                assert won == 1, winners_message(won, n, "sending processes")

    @pytest.mark.asyncio
    async def test_a_wait_that_times_out_becomes_claimable_without_a_delivery(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A wait with a timeout is claimable once it passes (no crash); the
        claim keeps the wait and has no delivery, and a send then finds the
        run running."""
        run_id = await self._waiting(factory, namespace, timeout=0.2)
        await wait_interrupted(factory, run_id, namespace, within=self.capabilities.wait_timeout)
        claim = await factory.claim(run_id, owner="w2", lease=3600, namespace=namespace)
        assert claim is not None
        assert (claim.record.status, claim.record.crashes, claim.record.epoch) == (
            RunStatus.RUNNING,
            0,
            2,
        )
        assert (claim.record.wait, claim.record.delivery) == (REQUEST, None)
        with pytest.raises(NotWaiting):
            await factory.send(run_id, DELIVERY, namespace)

    @pytest.mark.asyncio
    async def test_cancel_fails_a_waiting_run_at_once(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """Nobody owns a waiting run: a cancel fails it at once; a send then
        raises NotWaiting and a second cancel RunFinished."""
        run_id = await self._waiting(factory, namespace)
        cancelled = await factory.cancel(run_id, namespace)
        assert cancelled.status is RunStatus.FAILED
        assert (await must_load(factory, run_id, namespace)).record.status is RunStatus.FAILED
        with pytest.raises(NotWaiting):
            await factory.send(run_id, DELIVERY, namespace)
        with pytest.raises(RunFinished):
            await factory.cancel(run_id, namespace)

    @pytest.mark.asyncio
    async def test_retention_keeps_waiting_runs(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """``purge`` removes terminal runs only: a run waiting for a human is
        kept however long it waits."""
        run_id = await self._waiting(factory, namespace)
        done = await factory.begin(start(namespace))
        await done.complete(None)
        await factory.purge(0.0, namespace)  # a done run may need a later clock: not asserted
        assert (await must_load(factory, run_id, namespace)).record.status is RunStatus.WAITING

    @pytest.mark.asyncio
    async def test_namespaces_isolate_waiting_runs(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A send through another namespace finds no run, and that
        namespace lists no waiting run."""
        run_id = await self._waiting(factory, namespace)
        other = f"{namespace}-other"
        with pytest.raises(RunNotFound):
            await factory.send(run_id, DELIVERY, other)
        assert (await factory.list(other, RunStatus.WAITING)).records == ()
        assert (await must_load(factory, run_id, namespace)).record.status is RunStatus.WAITING

    @pytest.mark.asyncio
    async def test_a_wait_or_a_send_that_is_not_json_writes_nothing(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A request or a delivery that is not JSON raises ValueError and the
        record stays as it was."""
        cp = await factory.begin(start(namespace, kind="wait", lease=3600))
        with pytest.raises(ValueError):  # noqa: PT011 - the message is the store's own
            await cp.wait({"bad": object()}, None)  # type: ignore[dict-item]
        assert (await must_load(factory, cp.run_id, namespace)).record.status is RunStatus.RUNNING
        await cp.wait(REQUEST, None)
        with pytest.raises(ValueError):  # noqa: PT011 - the message is the store's own
            await factory.send(cp.run_id, {"bad": {1, 2}}, namespace)  # type: ignore[dict-item]
        assert (await must_load(factory, cp.run_id, namespace)).record.status is RunStatus.WAITING

    @pytest.mark.asyncio
    async def test_complete_keeps_the_usage_it_is_given(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """``complete(result, usage)`` stores the run's usage beside its
        result (None when not given)."""
        usage: JSON = {"input_tokens": 1200, "output_tokens": 340, "replies": 3}
        with_usage = await factory.begin(start(namespace))
        await with_usage.complete({"answer": 42}, usage)
        without = await factory.begin(start(namespace))
        await without.complete("plain")
        record = (await must_load(factory, with_usage.run_id, namespace)).record
        assert (record.result, record.usage) == ({"answer": 42}, usage)
        assert (await must_load(factory, without.run_id, namespace)).record.usage is None
