"""Cluster specifics: namespaces spread over nodes, one round trip per write, no key left."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import redis
from redis_testing import HISTORY, CommandCounter, eventually, free_port, purged

from outlast.adapter import CheckpointState, Message, PhaseOutput, RunStart, StoreUnavailable
from outlast_redis import RedisStore, open_redis


@pytest_asyncio.fixture
async def store(cluster_url: str) -> AsyncIterator[RedisStore]:
    opened = open_redis(cluster_url, cluster=True, prefix=f"t{uuid.uuid4().hex[:8]}")
    yield opened
    await opened.close()


def cluster_keys(url: str, prefix: str) -> list[bytes]:
    with redis.RedisCluster.from_url(url) as client:
        return sorted(client.scan_iter(match=f"{prefix}:*", count=500))


@pytest.mark.asyncio
async def test_namespaces_spread_over_the_nodes_and_each_write_is_one_round_trip(
    store: RedisStore, cluster_url: str
) -> None:
    checkpointers = [
        await store.begin(RunStart(f"run-{i}", "test", namespace=f"tenant-{i}")) for i in range(12)
    ]
    for checkpointer in checkpointers:
        await checkpointer.save(CheckpointState(HISTORY[:1]))
    counter = CommandCounter(store)

    for checkpointer in checkpointers:
        await checkpointer.save(CheckpointState(HISTORY, (PhaseOutput("one", 1),)))
        await checkpointer.release()
    claims = [
        await store.claim(c.run_id, owner="other", lease=30.0, namespace=c.namespace)
        for c in checkpointers
    ]

    assert all(claim is not None for claim in claims)
    assert counter.take() == ["EVALSHA"] * 3 * len(checkpointers)
    with redis.RedisCluster.from_url(cluster_url) as client:
        nodes = {
            client.get_node_from_key(store.run_keys(c.namespace, c.run_id).meta).name
            for c in checkpointers
        }
    assert len(nodes) > 1


@pytest.mark.asyncio
async def test_waiting_runs_on_every_node_wait_take_input_and_are_claimed_in_one_trip_each(
    store: RedisStore,
) -> None:
    checkpointers = [
        await store.begin(RunStart(f"run-{i}", "test", namespace=f"tenant-{i}")) for i in range(8)
    ]
    counter = CommandCounter(store)

    for checkpointer in checkpointers:
        namespace = checkpointer.namespace
        await checkpointer.wait({"ask": namespace}, None)
        await store.send(checkpointer.run_id, {"approved": namespace}, namespace)
        claim = await store.claim_next(["test"], owner="other", lease=30.0, namespace=namespace)
        assert claim is not None
        assert (claim.record.wait, claim.record.delivery) == (
            {"ask": namespace},
            {"approved": namespace},
        )

    assert counter.take() == ["EVALSHA"] * 3 * len(checkpointers)


@pytest.mark.asyncio
@pytest.mark.parametrize("transactions", [True, False], ids=["multi-exec", "without"])
async def test_long_transcripts_load_and_resume_in_few_round_trips_on_every_node(
    store: RedisStore, transactions: bool
) -> None:
    """load is one MULTI/EXEC, a claim of a long transcript one script plus
    one MULTI of LRANGEs; with a redis-py whose Cluster client has no
    MULTI/EXEC, load falls back to its script and the claim to a pipeline."""
    store.connection.transaction()  # the client exists, and knows what it can send
    store.connection._cluster_transactions = transactions
    history = HISTORY + tuple(Message.tool(f"c{i}", "t", "x" * 500) for i in range(100))
    phases = (PhaseOutput("one", 1),)
    checkpointers = [
        await store.begin(RunStart(f"run-{i}", "test", namespace=f"tenant-{i}")) for i in range(6)
    ]
    for checkpointer in checkpointers:
        await checkpointer.save(CheckpointState(history, phases))
        await checkpointer.release()
    counter = CommandCounter(store)

    for checkpointer in checkpointers:
        namespace = checkpointer.namespace
        loaded = await store.load(checkpointer.run_id, namespace)
        assert loaded is not None and loaded.state.history == history
        claim = await store.claim(checkpointer.run_id, owner="o", lease=30.0, namespace=namespace)
        assert claim is not None and claim.resume.history == history
        assert claim.resume.completed_phases == phases

    load = "MULTI: HGETALL LRANGE LRANGE" if transactions else "EVALSHA"
    progress = "MULTI: LRANGE LRANGE" if transactions else "PIPELINE: LRANGE LRANGE"
    assert counter.take() == [load, "EVALSHA", progress] * len(checkpointers)


@pytest.mark.asyncio
async def test_delete_and_purge_leave_no_key_on_any_node(
    store: RedisStore, cluster_url: str
) -> None:
    failed = await store.begin(RunStart("failed", "test", namespace="solo"))
    await failed.save(CheckpointState(HISTORY, (PhaseOutput("one", 1),)))
    await failed.fail("boom")
    done = await store.begin(RunStart("done", "test", namespace="solo"))
    await done.complete("ok")

    assert await store.delete("failed", "solo") is True
    # purge(0) removes runs last updated before this millisecond: wait for the next.
    await eventually(lambda: purged(store, 1, "solo"), "purge(0) to remove the completed run")

    assert cluster_keys(cluster_url, store.config.prefix) == []


@pytest.mark.asyncio
async def test_an_unreachable_cluster_is_store_unavailable() -> None:
    store = open_redis(f"redis://u:hunter2@127.0.0.1:{free_port()}", cluster=True)
    try:
        with pytest.raises(StoreUnavailable, match="cannot reach the Redis Cluster") as caught:
            await store.load("any")
    finally:
        await store.close()

    assert "hunter2" not in str(caught.value)
