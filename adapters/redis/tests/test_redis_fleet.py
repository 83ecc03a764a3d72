"""The fleet on Redis, beyond the conformance suite: claim_next's one script
(its budget, its retry, the keys it builds), the lease index of queued and
cancelled runs, and change notifications over pub/sub (single server and
Cluster, a lost subscription, a closed store)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator

import pytest
import pytest_asyncio
import redis
from redis.asyncio.client import PubSub
from redis_testing import CommandCounter, eventually, free_port

from outlast.adapter import (
    ChangeNotifier,
    CheckpointState,
    Message,
    RunStart,
    RunStatus,
    codec,
    transitions,
)
from outlast_redis import RedisStore, notifications, open_redis
from outlast_redis.connection import new_token
from outlast_redis.store import SCAN_BUDGET

WITHIN = 30.0
"""Seconds any awaited condition may take before the test fails."""


@pytest_asyncio.fixture
async def store(redis_url: str, prefix: str) -> AsyncIterator[RedisStore]:
    opened = open_redis(redis_url, prefix=prefix)
    yield opened
    await opened.close()


@pytest_asyncio.fixture
async def other(redis_url: str, prefix: str) -> AsyncIterator[RedisStore]:
    """A second store on the same keys, as another worker process opens it."""
    opened = open_redis(redis_url, prefix=prefix)
    yield opened
    await opened.close()


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as client:
        yield client


def queued(run_id: str, kind: str = "a", namespace: str = "default") -> RunStart:
    return RunStart(run_id, kind, {"job": run_id}, namespace)


# claim_next ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_submit_claim_next_and_cancel_take_one_round_trip_each(store: RedisStore) -> None:
    await store.load("warm-up")  # the scripts are loaded by now
    counter = CommandCounter(store)

    await store.submit(queued("first"))
    await store.submit(queued("second"))
    assert counter.take() == ["EVALSHA"] * 2
    claim = await store.claim_next(["a"], owner="w", lease=30.0)
    assert counter.take() == ["EVALSHA"]
    assert claim is not None and claim.record.run_id == "first"
    cancelled = await store.cancel("second", "default")
    assert counter.take() == ["EVALSHA"]
    assert (cancelled.status, cancelled.error) == (RunStatus.FAILED, transitions.CANCELLED)
    assert await claim.checkpointer.save(CheckpointState((Message.user("hi"),))) is False
    assert await claim.checkpointer.renew() is False
    assert counter.take() == ["EVALSHA"] * 2


@pytest.mark.asyncio
async def test_claim_next_walks_its_budget_per_script_and_goes_on_where_it_stopped(
    store: RedisStore,
) -> None:
    """A long queue of another kind before the one run wanted: each script
    walks at most SCAN_BUDGET entries, and claim_next calls it again from
    where it stopped until it finds the run."""
    others = SCAN_BUDGET * 2 + 50
    for i in range(others):
        await store.submit(queued(f"b-{i:04d}", kind="b"))
    await store.submit(queued("zz-wanted", kind="a"))  # submitted last, so after them all
    counter = CommandCounter(store)

    claim = await store.claim_next(["a"], owner="w", lease=30.0)

    assert claim is not None and claim.record.run_id == "zz-wanted"
    assert counter.take() == ["EVALSHA"] * 3
    assert await store.claim_next(["a"], owner="w", lease=30.0) is None
    assert counter.take() == ["EVALSHA"] * 3


@pytest.mark.asyncio
async def test_claim_next_builds_the_keys_of_any_run_id_as_python_does(store: RedisStore) -> None:
    """The script finds runs by their id in the lease index and builds their
    keys itself: ids that are percent-encoded in keys claim like any other."""
    odd = ["a:b", "x{y}z", "é", "sp ace%20", "日本", "~._-", "}{"]
    for run_id in odd:
        await store.submit(queued(run_id, namespace="odd:{ns}"))

    claimed = set()
    while claim := await store.claim_next(["a"], owner="w", lease=30.0, namespace="odd:{ns}"):
        claimed.add(claim.record.run_id)
        assert claim.record.input == {"job": claim.record.run_id}
        assert len(claimed) <= len(odd)

    assert claimed == set(odd)


@pytest.mark.asyncio
async def test_claim_next_retried_after_its_reply_was_lost_answers_the_same_run(
    store: RedisStore,
) -> None:
    """redis-py retries a script whose reply it lost; the claim had landed,
    so the retry must hand back that run, not claim a second one."""
    await store.submit(queued("one"))
    await store.submit(queued("two"))
    index = store.namespace_keys("default")
    token = new_token()
    keys = [index.leases, index.claimed(token)]
    args = [index.base, "w", "30.0", token, codec.FORMAT_VERSION, SCAN_BUDGET, 32, "", "", "a"]

    first = await store.connection.run("claim_next", keys, args)
    again = await store.connection.run("claim_next", keys, args)  # as redis-py retries it

    assert (first[0], first[1]) == (b"ok", b"one")
    assert (again[0], again[1]) == (b"again", b"one")
    following = await store.claim_next(["a"], owner="w", lease=30.0)
    assert following is not None and following.record.run_id == "two"


@pytest.mark.asyncio
async def test_claim_next_quarantines_a_record_it_cannot_judge_and_skips_a_newer_one(
    store: RedisStore, raw: redis.Redis
) -> None:
    """A record whose epoch does not parse is quarantined (a failed stub,
    the damaged record kept beside it); one of a newer format version is
    skipped and left alone, without a round trip of its own; claim_next
    takes the healthy run after both."""
    for run_id in ("a-damaged", "b-newer", "c-healthy"):
        await store.submit(queued(run_id))
    damaged, newer = store.run_keys("default", "a-damaged"), store.run_keys("default", "b-newer")
    raw.hset(damaged.meta, "epoch", "many")
    raw.hset(newer.meta, "v", str(codec.FORMAT_VERSION + 1))

    claim = await store.claim_next(["a"], owner="w", lease=30.0)

    assert claim is not None and claim.record.run_id == "c-healthy"
    stub = await store.load("a-damaged")
    assert stub is not None and stub.record.status is RunStatus.FAILED
    assert (stub.record.error or "").startswith("CorruptCheckpoint: ")
    assert raw.hget(damaged.damaged, "epoch") == b"many"
    assert raw.hget(newer.meta, "status") == b"running"
    assert raw.zscore(newer.leases, "b-newer") is not None
    counter = CommandCounter(store)
    assert await store.claim_next(["a"], owner="w", lease=30.0) is None
    assert counter.take() == ["EVALSHA"]  # the newer run is skipped inside the script


@pytest.mark.asyncio
async def test_queued_and_cancelled_runs_keep_the_lease_index_exact(
    store: RedisStore, raw: redis.Redis
) -> None:
    """A submitted run is scored by its submit time (its interrupted_since);
    a cancel that fails it takes it out; a cancel of an owned run keeps its
    lease's expiry."""
    await store.submit(queued("q"))
    await store.submit(queued("owned"))
    leases = store.namespace_keys("default").leases

    record = (await store.load("q") or pytest.fail("q is gone")).record
    assert record.interrupted_since is not None
    assert raw.zscore(leases, "q") == round(record.interrupted_since * 1000)
    await store.cancel("q", "default")
    assert raw.zscore(leases, "q") is None

    claim = await store.claim("owned", owner="w", lease=3600.0)
    assert claim is not None
    after = await store.cancel("owned", "default")
    assert after.cancel_requested and after.lease_expires_at is not None
    assert raw.zscore(leases, "owned") == round(after.lease_expires_at * 1000)


# Notifications ----------------------------------------------------------------


async def subscribed_with_waiters(store: RedisStore, *namespaces: str) -> None:
    """Wait until the store's subscription stands and a caller waits on each namespace."""

    async def ready() -> bool:
        listener = store.notifications
        tags = [store.namespace_keys(namespace).tag for namespace in namespaces]
        return listener.subscribed and all(listener.waiting(tag) == 1 for tag in tags)

    await eventually(ready, "the change subscription and its waiters", WITHIN)


async def settled(waiter: RedisStore, submitter: RedisStore) -> None:
    """Wait until every change announced so far reached ``waiter``: it hears
    a submit in a namespace of its own (one channel keeps the order)."""
    namespace = f"barrier-{uuid.uuid4().hex[:8]}"
    wait = asyncio.create_task(waiter.wait_for_change(namespace, WITHIN * 2))
    await subscribed_with_waiters(waiter, namespace)
    await submitter.submit(queued("barrier", namespace=namespace))
    assert await asyncio.wait_for(wait, WITHIN) is True


async def wakes_only_its_namespace(
    waiter: RedisStore, submitter: RedisStore, namespaces: list[str]
) -> None:
    """A waiter on each namespace; a submit in one namespace after another
    wakes its waiter (True) and none of the namespaces not submitted to yet."""
    waits = [
        asyncio.create_task(waiter.wait_for_change(namespace, WITHIN * 2))
        for namespace in namespaces
    ]
    try:
        await subscribed_with_waiters(waiter, *namespaces)
        for i, namespace in enumerate(namespaces):
            await submitter.submit(queued(f"run-{uuid.uuid4().hex[:8]}", namespace=namespace))
            assert await asyncio.wait_for(waits[i], WITHIN) is True, namespace
            assert not any(wait.done() for wait in waits[i + 1 :]), (
                f"a submit in {namespace!r} woke a waiter of another namespace"
            )
    finally:
        for wait in waits:
            wait.cancel()


@pytest.mark.asyncio
async def test_a_submit_wakes_the_waiters_of_its_namespace_and_no_other(
    store: RedisStore, other: RedisStore
) -> None:
    assert isinstance(store, ChangeNotifier)
    await wakes_only_its_namespace(store, other, ["billing", "odd:{name}", "search"])


@pytest.mark.asyncio
async def test_a_change_between_an_empty_claim_and_the_wait_is_not_lost(
    store: RedisStore, other: RedisStore
) -> None:
    """A worker finds nothing (claim_next), a run is submitted before its
    wait begins: that wait returns at once, and only that one."""
    await settled(store, other)  # subscribed, and nothing on its way
    assert await store.claim_next(["a"], owner="w", lease=30.0, namespace="ns") is None
    await other.submit(queued("meanwhile", namespace="ns"))
    await settled(store, other)  # the announcement arrived before the wait below began

    assert await asyncio.wait_for(store.wait_for_change("ns", WITHIN * 2), WITHIN) is True
    later = asyncio.create_task(store.wait_for_change("ns", WITHIN * 2))
    await settled(store, other)
    assert not later.done(), "a wait returned at once without news since the last look"
    later.cancel()


@pytest.mark.asyncio
async def test_release_send_complete_fail_and_cancel_wake_waiters(
    store: RedisStore, other: RedisStore
) -> None:
    """Each write that makes a run claimable or finished is announced."""

    async def announced(write: Awaitable[object]) -> None:
        await settled(store, other)  # no earlier change of "default" is on its way
        wait = asyncio.create_task(store.wait_for_change("default", WITHIN * 2))
        await subscribed_with_waiters(store, "default")
        await write
        assert await asyncio.wait_for(wait, WITHIN) is True

    first = await other.begin(RunStart("first", "a"))
    await announced(first.release())
    claim = await other.claim("first", owner="w", lease=30.0)
    assert claim is not None
    await announced(claim.checkpointer.complete("done"))
    second = await other.begin(RunStart("second", "a"))
    await announced(second.fail("boom"))
    await other.submit(queued("third"))
    await announced(other.cancel("third", "default"))
    fourth = await other.begin(RunStart("fourth", "a"))
    await fourth.wait({"ask": "approve?"}, None)
    await announced(other.send("fourth", {"approved": True}, "default"))


@pytest.mark.asyncio
async def test_a_lost_subscription_comes_back_and_wakes_every_waiter(
    scratch_server_port: int,
) -> None:
    """The server drops the subscriber's connection: the store subscribes
    again by itself, wakes its waiters (news may have been lost meanwhile)
    and hears the next change."""
    url = f"redis://127.0.0.1:{scratch_server_port}/0"
    prefix = f"lost-{uuid.uuid4().hex[:8]}"
    store, submitter = open_redis(url, prefix=prefix), open_redis(url, prefix=prefix)
    try:
        waiting = asyncio.create_task(store.wait_for_change("ns", WITHIN * 2))
        await subscribed_with_waiters(store, "ns")
        with redis.Redis.from_url(url) as admin:
            assert admin.client_kill_filter(_type="pubsub") >= 1
        assert await asyncio.wait_for(waiting, WITHIN) is True
        await settled(store, submitter)  # it hears changes again
    finally:
        await store.close()
        await submitter.close()


@pytest.mark.asyncio
async def test_a_quiet_subscription_is_pinged_and_stays(
    store: RedisStore, other: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing published for a keepalive period the listener PINGs;
    the PONGs neither break the subscription nor wake a waiter."""
    pings = 0
    ping = PubSub.ping

    def counted(self: PubSub, message: object = None) -> Awaitable[bool]:
        nonlocal pings
        pings += 1
        return ping(self, message)

    monkeypatch.setattr(notifications, "KEEPALIVE", 0.02)
    monkeypatch.setattr(PubSub, "ping", counted)
    wait = asyncio.create_task(store.wait_for_change("ns", WITHIN * 2))
    await subscribed_with_waiters(store, "ns")

    async def pinged() -> bool:
        return pings >= 5

    await eventually(pinged, "five keepalive PINGs", WITHIN)
    assert not wait.done(), "a keepalive woke the waiter (the subscription was renewed)"
    await other.submit(queued("after-pings", namespace="ns"))
    assert await asyncio.wait_for(wait, WITHIN) is True


@pytest.mark.parametrize("cluster", [False, True], ids=["server", "cluster"])
@pytest.mark.asyncio
async def test_waits_on_an_unreachable_server_time_out_without_raising(cluster: bool) -> None:
    store = open_redis(f"redis://127.0.0.1:{free_port()}", cluster=cluster)
    try:
        assert await store.wait_for_change("ns", 0.2) is False
        assert await store.wait_for_change("ns", 0.2) is False
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_closing_the_store_answers_its_waiters_false(store: RedisStore) -> None:
    wait = asyncio.create_task(store.wait_for_change("ns", WITHIN * 2))
    await subscribed_with_waiters(store, "ns")

    await store.close()

    assert await asyncio.wait_for(wait, WITHIN) is False


@pytest.mark.asyncio
async def test_on_cluster_one_subscription_hears_namespaces_on_every_node(
    cluster_url: str,
) -> None:
    """Classic PUBLISH reaches every node of a Cluster: a store subscribed on
    one node is woken by submits in namespaces that live on each node."""
    prefix = f"n{uuid.uuid4().hex[:8]}"
    waiter = open_redis(cluster_url, cluster=True, prefix=prefix)
    submitter = open_redis(cluster_url, cluster=True, prefix=prefix)
    namespaces = [f"tenant-{i}" for i in range(8)]
    with redis.RedisCluster.from_url(cluster_url) as client:
        nodes = {
            client.get_node_from_key(waiter.namespace_keys(namespace).leases).name
            for namespace in namespaces
        }
    assert len(nodes) == 3, "the namespaces should live on every node"
    try:
        await wakes_only_its_namespace(waiter, submitter, namespaces)
    finally:
        await waiter.close()
        await submitter.close()
