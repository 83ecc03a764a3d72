"""Round trips per operation, counted on the wire by a proxy (counted, never timed).

Every write is one round trip whatever it carries (its notification
included); a 10,000-message transcript loads in one round trip and is
claimed in two.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from postgres_support import RoundTripProxy
from psycopg.conninfo import conninfo_to_dict

from outlast.adapter import CheckpointState, Message, PhaseOutput, RunStart, RunStatus
from outlast_postgres import PostgresStore

LONG = 10_000


@pytest_asyncio.fixture
async def proxy(postgres_url: str) -> AsyncIterator[RoundTripProxy]:
    params = conninfo_to_dict(postgres_url)
    host = str(params.get("host") or "127.0.0.1")
    async with RoundTripProxy(host, int(params.get("port") or 5432)) as proxy:
        yield proxy


@pytest_asyncio.fixture
async def store(proxy: RoundTripProxy, store_url: str) -> AsyncIterator[PostgresStore]:
    # libpq keyword options override the URL's host and port: everything goes through the proxy.
    store = PostgresStore(
        store_url, host="127.0.0.1", port=str(proxy.port), pool_min_size=1, pool_max_size=1
    )
    await store.migrate()  # first use (connect, migrate, fill the pool) is not what we count
    yield store
    await store.close()


def history(count: int, tag: str = "m") -> tuple[Message, ...]:
    return tuple(Message.user(f"{tag}{i} " + "x" * 40) for i in range(count))


@pytest.mark.asyncio
async def test_every_checkpointer_write_is_one_round_trip(
    store: PostgresStore, proxy: RoundTripProxy
) -> None:
    cp, trips = await proxy.count(store.begin(RunStart("r1", "k", {"q": 1})))
    assert trips == 1
    ten = CheckpointState(history(10))
    assert await proxy.count(cp.save(ten)) == (False, 1)
    assert await proxy.count(cp.save(ten)) == (False, 1)  # nothing new: still checks the epoch
    next_phase = CheckpointState(history(3, "p1-"), (PhaseOutput("plan", {"steps": 3}),))
    assert await proxy.count(cp.save(next_phase)) == (False, 1)
    assert await proxy.count(cp.renew()) == (False, 1)
    assert (await proxy.count(cp.complete({"answer": 42}, {"input_tokens": 7})))[1] == 1


@pytest.mark.asyncio
async def test_wait_and_send_cost_one_round_trip_each(
    store: PostgresStore, proxy: RoundTripProxy
) -> None:
    cp = await store.begin(RunStart("parked", "k"))
    assert (await proxy.count(cp.wait({"ask": "approve?"}, 60)))[1] == 1
    sent, trips = await proxy.count(store.send("parked", {"approved": True}))
    assert (sent.status, sent.delivery, trips) == (RunStatus.RUNNING, {"approved": True}, 1)


@pytest.mark.asyncio
async def test_submit_cancel_and_the_cancel_request_cost_one_round_trip_each(
    store: PostgresStore, proxy: RoundTripProxy
) -> None:
    assert (await proxy.count(store.submit(RunStart("queued", "k"))))[1] == 1
    cancelled, trips = await proxy.count(store.cancel("queued"))
    assert (cancelled.status, trips) == (RunStatus.FAILED, 1)
    owned = await store.begin(RunStart("owned", "k"))
    flagged, trips = await proxy.count(store.cancel("owned"))
    assert (flagged.cancel_requested, trips) == (True, 1)
    # The owner learns of the request from its save's or renewal's own statement.
    assert await proxy.count(owned.save(CheckpointState(history(2)))) == (True, 1)
    assert await proxy.count(owned.renew()) == (True, 1)


@pytest.mark.asyncio
async def test_other_terminal_writes_and_quarantine_are_one_round_trip(
    store: PostgresStore, proxy: RoundTripProxy
) -> None:
    released = await store.begin(RunStart("released", "k"))
    assert (await proxy.count(released.release()))[1] == 1
    failed = await store.begin(RunStart("failed", "k"))
    assert (await proxy.count(failed.fail("boom")))[1] == 1
    quarantined, trips = await proxy.count(store.quarantine("released", "CorruptCheckpoint: x"))
    assert (quarantined, trips) == (True, 1)


@pytest.mark.asyncio
async def test_a_10000_message_transcript_saves_and_loads_in_one_round_trip_each(
    store: PostgresStore, proxy: RoundTripProxy
) -> None:
    cp = await store.begin(RunStart("long", "k"))
    saved = CheckpointState(history(LONG), (PhaseOutput("one", 1), PhaseOutput("two", 2)))
    assert (await proxy.count(cp.save(saved)))[1] == 1
    stored, trips = await proxy.count(store.load("long"))
    assert trips == 1
    assert stored is not None
    assert stored.state == saved


@pytest.mark.asyncio
async def test_claiming_a_10000_message_run_is_two_round_trips(
    store: PostgresStore, proxy: RoundTripProxy
) -> None:
    cp = await store.begin(RunStart("long", "k"))
    await cp.save(CheckpointState(history(LONG)))
    await cp.release()
    claim, trips = await proxy.count(store.claim("long", owner="w2", lease=30))
    assert trips == 2  # claim + read of the claimed progress, pipelined; then commit
    assert claim is not None
    assert len(claim.resume.history) == LONG
    lost, trips = await proxy.count(store.claim("long", owner="w3", lease=30))
    assert lost is None
    assert trips == 2


@pytest.mark.asyncio
async def test_reads_deletes_and_claim_next_take_a_constant_number_of_round_trips(
    store: PostgresStore, proxy: RoundTripProxy
) -> None:
    for i in range(5):
        cp = await store.begin(RunStart(f"run-{i}", "k"))
        await cp.save(CheckpointState(history(200)))
        await cp.release()
    assert (await proxy.count(store.interrupted()))[1] == 1
    assert (await proxy.count(store.list()))[1] == 1
    claim, trips = await proxy.count(store.claim_next(["k"], owner="w2", lease=30))
    assert claim is not None
    assert (len(claim.resume.history), trips) == (200, 2)  # claim + progress, pipelined; commit
    drained = [claim]
    while claim := await store.claim_next(["k"], owner="w2", lease=30):
        drained.append(claim)
    assert len(drained) == 5
    assert await proxy.count(store.claim_next(["k"], owner="w2", lease=30)) == (None, 2)
    assert (await proxy.count(store.delete("run-0")))[1] == 1
    assert (await proxy.count(store.purge(3600)))[1] == 1
