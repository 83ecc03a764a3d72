"""What the conformance suite cannot see: round trips, keys, scripts, indexes, errors."""

from __future__ import annotations

import importlib.metadata
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
import redis
from packaging.requirements import Requirement
from redis._parsers import _AsyncHiredisParser
from redis.crc import key_slot
from redis.utils import HIREDIS_AVAILABLE
from redis_testing import (
    HISTORY,
    CommandCounter,
    corrupt_message,
    eventually,
    free_port,
    keys_under,
    purged,
)

import outlast
from outlast.adapter import (
    JSON,
    CheckpointState,
    CheckpointStateError,
    ConfigurationError,
    CorruptCheckpoint,
    LeaseLost,
    Message,
    NotWaiting,
    PhaseOutput,
    RunStart,
    RunStatus,
    SaveCursor,
    StoredRun,
    StoreUnavailable,
    codec,
)
from outlast_redis import RedisCheckpointer, RedisStore, open_redis
from outlast_redis.records import fields_of


def run_id() -> str:
    return f"run-{uuid.uuid4().hex[:12]}"


@pytest_asyncio.fixture
async def store(redis_url: str, prefix: str) -> AsyncIterator[RedisStore]:
    opened = open_redis(redis_url, prefix=prefix)
    yield opened
    await opened.close()


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A plain synchronous client, to look at (or damage) what the store wrote."""
    with redis.Redis.from_url(redis_url) as client:
        yield client


async def begin(store: RedisStore, lease: float = 30.0, namespace: str = "default") -> Any:
    return await store.begin(RunStart(run_id(), "test", {"n": 1}, namespace, "worker", lease))


async def must_load(store: RedisStore, run_id: str, namespace: str = "default") -> StoredRun:
    stored = await store.load(run_id, namespace)
    assert stored is not None, f"run {run_id!r} is gone"
    return stored


async def checkpointer_like(store: RedisStore, run_id: str, cursor: SaveCursor) -> Any:
    """A second checkpointer of the run at its epoch and incarnation, from ``cursor`` on."""
    record = (await must_load(store, run_id)).record
    keys = store.run_keys(record.namespace, run_id)
    return RedisCheckpointer(
        store.connection, keys, record.namespace, record.epoch, record.incarnation, cursor
    )


# Round trips -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_save_load_and_claim_take_a_constant_number_of_round_trips(
    store: RedisStore,
) -> None:
    checkpointer = await begin(store)
    await checkpointer.save(CheckpointState(HISTORY[:1]))  # scripts are loaded by now
    counter = CommandCounter(store)

    long_history = HISTORY + tuple(Message.user(f"message {i}") for i in range(500))
    await checkpointer.save(CheckpointState(long_history))
    assert counter.take() == ["EVALSHA"]
    await checkpointer.save(CheckpointState(long_history, (PhaseOutput("plan", {"ok": 1}),)))
    assert counter.take() == ["EVALSHA"]

    loaded = await store.load(checkpointer.run_id)
    assert counter.take() == ["MULTI: HGETALL LRANGE LRANGE"]  # one atomic round trip
    assert loaded is not None and loaded.state.phases == (PhaseOutput("plan", {"ok": 1}),)

    await checkpointer.release()
    counter.take()
    claim = await store.claim(checkpointer.run_id, owner="other", lease=30.0)
    # The claim script moves the lease index too; 504 entries are read with LRANGE.
    assert counter.take() == ["EVALSHA", "MULTI: LRANGE LRANGE"]
    assert claim is not None and claim.record.epoch == 2
    assert claim.resume.history == long_history


@pytest.mark.asyncio
async def test_a_claim_answers_a_short_transcript_itself_and_reads_a_long_one_with_lrange(
    store: RedisStore,
) -> None:
    """A script's reply copies every entry through Lua; LRANGE does not. Up to
    inline_progress entries the claim script answers them (one round trip),
    beyond it the claim reads them in one more: one MULTI of two LRANGEs."""
    short = HISTORY + tuple(Message.user(f"m{i}") for i in range(store.inline_progress - 3))
    long = (*short, Message.user("one too many"))
    for history, trips in (
        (short, ["EVALSHA"]),
        (long, ["EVALSHA", "MULTI: LRANGE LRANGE"]),
    ):
        checkpointer = await begin(store)
        await checkpointer.save(CheckpointState(history))
        await checkpointer.release()
        counter = CommandCounter(store)

        claim = await store.claim(checkpointer.run_id, owner="other", lease=30.0)

        assert counter.take() == trips
        assert claim is not None and claim.resume.history == history
        await claim.checkpointer.release()
        counter.take()
        claimed = await store.claim_next(["test"], owner="third", lease=30.0)
        assert counter.take() == trips
        assert claimed is not None and claimed.resume.history == history
        await claimed.checkpointer.complete("done")


@pytest.mark.asyncio
@pytest.mark.parametrize("inline", [0, 10**9], ids=["read-with-lrange", "answered-inline"])
async def test_claims_resume_phases_and_messages_however_the_progress_travels(
    store: RedisStore, raw: redis.Redis, inline: int
) -> None:
    store.inline_progress = inline
    phases = (PhaseOutput("plan", {"ok": 1}), PhaseOutput("act", [2]))
    history = HISTORY + tuple(Message.tool(f"c{i}", "t", "x" * 1000) for i in range(200))
    checkpointer = await begin(store)
    await checkpointer.save(CheckpointState(history, phases))
    await checkpointer.release()

    claim = await store.claim(checkpointer.run_id, owner="other", lease=30.0)
    assert claim is not None
    assert (claim.resume.history, claim.resume.completed_phases) == (history, phases)
    await claim.checkpointer.save(CheckpointState(history + HISTORY[:1], phases))
    await claim.checkpointer.release()

    claimed = await store.claim_next(["test"], owner="third", lease=30.0)
    assert claimed is not None and claimed.record.epoch == 3
    assert claimed.resume.history == history + HISTORY[:1]
    assert claimed.resume.completed_phases == phases

    # Its progress damaged: handed back untouched, and claim_next quarantines it.
    await claimed.checkpointer.release()
    await corrupt_message(store, checkpointer.run_id, "default")
    keys = store.run_keys("default", checkpointer.run_id)
    before = (raw.hgetall(keys.meta), raw.zscore(keys.leases, checkpointer.run_id))
    with pytest.raises(CorruptCheckpoint):
        await store.claim(checkpointer.run_id, owner="other", lease=30.0)
    assert (raw.hgetall(keys.meta), raw.zscore(keys.leases, checkpointer.run_id)) == before
    assert await store.claim_next(["test"], owner="other", lease=30.0) is None
    (record,) = (await store.list()).records
    assert (record.run_id, record.status, record.epoch) == (
        claim.record.run_id,
        RunStatus.FAILED,
        4,
    )


@pytest.mark.asyncio
async def test_a_save_survives_a_script_flush_through_the_noscript_fallback(
    store: RedisStore, raw: redis.Redis
) -> None:
    checkpointer = await begin(store)
    await checkpointer.save(CheckpointState(HISTORY[:1]))
    raw.script_flush()
    counter = CommandCounter(store)

    await checkpointer.save(CheckpointState(HISTORY))

    assert counter.take() == ["EVALSHA", "SCRIPT LOAD", "EVALSHA"]
    loaded = await store.load(checkpointer.run_id)
    assert loaded is not None and loaded.state.history == HISTORY


# Writes ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_fenced_checkpointer_writes_nothing(store: RedisStore) -> None:
    old = await begin(store)
    await old.save(CheckpointState(HISTORY[:2]))
    await old.release()
    claim = await store.claim(old.run_id, owner="new", lease=30.0)
    assert claim is not None

    for write in (
        old.save(CheckpointState(HISTORY)),
        old.renew(),
        old.release(),
        old.fail("stale"),
        old.complete("stale"),
    ):
        with pytest.raises(LeaseLost):
            await write

    loaded = await store.load(old.run_id)
    assert loaded is not None
    assert loaded.state.history == HISTORY[:2]
    assert loaded.record.status is RunStatus.RUNNING and loaded.record.owner == "new"


@pytest.mark.asyncio
async def test_lease_lost_says_why_as_transitions_do(store: RedisStore) -> None:
    claimed = await begin(store)
    await claimed.release()
    claim = await store.claim(claimed.run_id, owner="other", lease=30.0)
    assert claim is not None
    finished = await begin(store)
    await finished.complete("done")
    deleted = await begin(store)
    await store.delete(deleted.run_id)
    reborn = await begin(store)
    await store.delete(reborn.run_id)
    await store.begin(RunStart(reborn.run_id, "test"))

    for checkpointer, detail in [
        (claimed, "epoch 2 owns it now"),
        (finished, "the run is completed"),
        (deleted, "the run was deleted"),
        (reborn, "the run was deleted and begun again"),
    ]:
        with pytest.raises(LeaseLost) as caught:
            await checkpointer.save(CheckpointState(HISTORY))
        assert caught.value.detail == detail


@pytest.mark.asyncio
async def test_a_save_retried_after_its_reply_was_lost_writes_it_once(store: RedisStore) -> None:
    checkpointer = await begin(store)
    await checkpointer.save(CheckpointState(HISTORY))
    # The same checkpointer as if the reply of that save never arrived.
    retried = await checkpointer_like(store, checkpointer.run_id, SaveCursor())

    await retried.save(CheckpointState(HISTORY))

    loaded = await store.load(checkpointer.run_id)
    assert loaded is not None and loaded.state.history == HISTORY


@pytest.mark.asyncio
async def test_a_save_that_skips_messages_is_refused_and_writes_nothing(
    store: RedisStore,
) -> None:
    checkpointer = await begin(store)
    ahead = await checkpointer_like(store, checkpointer.run_id, SaveCursor(messages=2))

    with pytest.raises(CheckpointStateError, match="0 messages stored"):
        await ahead.save(CheckpointState(HISTORY))

    loaded = await store.load(checkpointer.run_id)
    assert loaded is not None and loaded.state.history == ()


@pytest.mark.asyncio
async def test_a_write_replayed_by_a_client_retry_answers_ok(store: RedisStore) -> None:
    checkpointer = await begin(store)
    incarnation = (await must_load(store, checkpointer.run_id)).record.incarnation
    keys = store.run_keys("default", checkpointer.run_id).all()
    args: list[str | int] = [checkpointer.run_id, 1, incarnation, '"done"', 0, "token-1", "null"]

    first = await store.connection.run("complete", keys, args)
    again = await store.connection.run("complete", keys, args)  # as redis-py retries it

    assert first == again == [b"ok"]
    with pytest.raises(LeaseLost, match="completed"):  # a genuinely second complete
        await checkpointer.complete("twice")


@pytest.mark.asyncio
async def test_more_messages_than_a_lua_stack_holds_save_in_one_call(store: RedisStore) -> None:
    checkpointer = await begin(store)
    history = tuple(Message.user(f"m{i}") for i in range(2500))

    await checkpointer.save(CheckpointState(history))

    loaded = await store.load(checkpointer.run_id)
    assert loaded is not None and loaded.state.history == history


@pytest.mark.asyncio
async def test_a_corrupt_run_is_handed_back_unclaimed(store: RedisStore, raw: redis.Redis) -> None:
    checkpointer = await begin(store)
    await checkpointer.save(CheckpointState(HISTORY))
    await checkpointer.release()
    await corrupt_message(store, checkpointer.run_id, "default")
    keys = store.run_keys("default", checkpointer.run_id)
    before = (raw.hgetall(keys.meta), raw.zscore(keys.leases, checkpointer.run_id))

    with pytest.raises(CorruptCheckpoint):
        await store.claim(checkpointer.run_id, owner="other", lease=30.0)

    assert (raw.hgetall(keys.meta), raw.zscore(keys.leases, checkpointer.run_id)) == before


# Keys ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_delete_leaves_no_key_behind(store: RedisStore, redis_url: str, prefix: str) -> None:
    checkpointer = await begin(store, namespace="solo")
    await checkpointer.save(CheckpointState(HISTORY, (PhaseOutput("one", 1),)))
    await checkpointer.save(CheckpointState(HISTORY, (PhaseOutput("one", 1),)))
    await checkpointer.fail("boom")
    assert keys_under(redis_url, prefix)  # the run and its indexes exist

    assert await store.delete(checkpointer.run_id, "solo") is True

    assert keys_under(redis_url, prefix) == []
    assert await store.delete(checkpointer.run_id, "solo") is False


@pytest.mark.asyncio
async def test_purge_leaves_no_key_behind(store: RedisStore, redis_url: str, prefix: str) -> None:
    done = await begin(store)
    await done.save(CheckpointState(HISTORY))
    await done.complete({"answer": 42})

    # purge(0) removes runs last updated before this millisecond: wait for the next.
    await eventually(lambda: purged(store, 1), "purge(0) to remove the completed run")

    assert keys_under(redis_url, prefix) == []


@pytest.mark.asyncio
async def test_complete_keeps_only_the_small_record(
    store: RedisStore, redis_url: str, prefix: str
) -> None:
    checkpointer = await begin(store)
    await checkpointer.save(CheckpointState(HISTORY, (PhaseOutput("one", 1),)))

    await checkpointer.complete({"answer": 42})

    keys = store.run_keys("default", checkpointer.run_id)
    assert keys_under(redis_url, prefix) == sorted([keys.meta.encode(), keys.runs.encode()])


@pytest.mark.asyncio
async def test_completed_ttl_lets_the_terminal_record_expire(
    redis_url: str, prefix: str, raw: redis.Redis
) -> None:
    store = open_redis(f"{redis_url}?completed_ttl=60", prefix=prefix)
    try:
        checkpointer = await begin(store)
        await checkpointer.save(CheckpointState(HISTORY))
        await checkpointer.complete("ok")
        meta = store.run_keys("default", checkpointer.run_id).meta

        assert 0 < raw.pttl(meta) <= 60_000
        raw.delete(meta)  # as if the TTL passed
        page = await store.list()
        assert page.records == ()
        assert keys_under(redis_url, prefix) == []  # list() dropped the index entry
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_every_key_of_a_namespace_shares_one_slot_and_never_another_runs(
    store: RedisStore,
) -> None:
    first = store.run_keys("a:b", "c")
    second = store.run_keys("a", "b:c")
    braces = store.run_keys("{x}", "}{")
    sibling = store.run_keys("a:b", "d")

    for keys in (first, second, braces):
        assert len({key_slot(key.encode()) for key in keys.all()}) == 1
    assert key_slot(first.meta.encode()) == key_slot(sibling.meta.encode())
    assert set(first.all()).isdisjoint(second.all())
    assert set(first.own()).isdisjoint(sibling.own())

    one = await store.begin(RunStart("c", "test", 1, "a:b"))
    two = await store.begin(RunStart("b:c", "test", 2, "a"))
    await one.complete("first")
    loaded = await store.load("b:c", "a")
    assert loaded is not None and loaded.record.status is RunStatus.RUNNING
    assert two.epoch == 1


@pytest.mark.asyncio
async def test_a_record_too_damaged_to_read_is_replaced_by_a_stub_and_kept_beside_it(
    store: RedisStore, raw: redis.Redis, redis_url: str, prefix: str
) -> None:
    checkpointer = await begin(store)
    await checkpointer.save(CheckpointState(HISTORY))
    await checkpointer.release()
    keys = store.run_keys("default", checkpointer.run_id)
    raw.hset(keys.meta, "status", "runnning")  # not a status: nothing says it is interrupted
    damaged = raw.hgetall(keys.meta)
    with pytest.raises(CorruptCheckpoint, match="status"):
        await store.claim(checkpointer.run_id, owner="other", lease=30.0)
    assert raw.hgetall(keys.meta) == damaged

    assert await store.interrupted() == []  # it was quarantined as the work list was read

    stored = await must_load(store, checkpointer.run_id)
    assert stored.record.status is RunStatus.FAILED
    assert (stored.record.kind, stored.record.epoch) == ("", 0)
    assert stored.record.error is not None
    assert stored.record.error.startswith("CorruptCheckpoint: ")
    assert stored.state.history == HISTORY  # the transcript stays for forensics
    assert raw.hgetall(keys.damaged) == damaged
    assert raw.zscore(keys.leases, checkpointer.run_id) is None
    with pytest.raises(LeaseLost):
        await checkpointer.save(CheckpointState(HISTORY))
    await eventually(lambda: purged(store, 1), "purge(0) to remove the quarantined run")
    assert keys_under(redis_url, prefix) == []


# Indexes ---------------------------------------------------------------------


def lease_score(raw: redis.Redis, store: RedisStore, run_id: str) -> float | None:
    return raw.zscore(store.run_keys("default", run_id).leases, run_id)


def claimable_since_ms(stored: StoredRun) -> float | None:
    """The lease index score the record calls for: None when it must not be indexed.

    A running run's ``interrupted_since`` is its lease's expiry or, released,
    its last write; that is its score, whether or not that time has come."""
    since = stored.record.interrupted_since
    return None if since is None else round(since * 1000)


async def index_agrees(store: RedisStore, raw: redis.Redis, run_id: str, what: str) -> None:
    """The run's lease index score is the one its record calls for."""
    stored = await must_load(store, run_id)
    assert lease_score(raw, store, run_id) == claimable_since_ms(stored), what


@pytest.mark.asyncio
async def test_every_write_keeps_the_lease_index_exact(store: RedisStore, raw: redis.Redis) -> None:
    """A running run is scored by its lease's expiry, or once released by its
    last write; a finished one is not in the lease index, but in the run index."""
    checkpointer = await begin(store, lease=30.0)
    run = checkpointer.run_id

    async def agrees(what: str) -> None:
        await index_agrees(store, raw, run, what)

    await agrees("begin")
    await checkpointer.renew()
    await agrees("renew")
    await checkpointer.release()
    await agrees("release")
    released_at = lease_score(raw, store, run)
    await checkpointer.save(CheckpointState(HISTORY))
    await agrees("a save after release")
    claim = await store.claim(run, owner="other", lease=30.0)
    assert claim is not None
    await agrees("claim")
    await claim.checkpointer.fail("boom")

    assert released_at is not None and released_at > 0
    assert lease_score(raw, store, run) is None
    assert raw.zrange(store.run_keys("default", run).runs, 0, -1) == [run.encode()]


@pytest.mark.asyncio
async def test_interrupted_walks_the_lease_index_past_one_batch(store: RedisStore) -> None:
    released = []
    for _ in range(250):  # more than two batches of index entries
        checkpointer = await begin(store)
        await checkpointer.release()
        released.append(checkpointer.run_id)

    everything = await store.interrupted(limit=1000)
    first = await store.interrupted(limit=150)

    assert [r.run_id for r in everything] == [
        r.run_id for r in sorted(everything, key=lambda r: (r.interrupted_since, r.run_id))
    ]
    assert sorted(r.run_id for r in everything) == sorted(released)
    assert [r.run_id for r in first] == [r.run_id for r in everything[:150]]


@pytest.mark.asyncio
async def test_the_candidates_cursor_visits_ties_once_in_byte_order(
    store: RedisStore, raw: redis.Redis, prefix: str
) -> None:
    """Runs released in the same millisecond share a score; a page may end
    among them. Members order by their UTF-8 bytes (code point order),
    whatever the server's locale."""
    scores = {"m": 3, "b": 5, "a": 5, "é": 5, "z": 5, "ab": 5, "B": 5, "日本": 5, "c": 7}
    leases = f"{prefix}:{{scratch}}:leases"
    raw.zadd(leases, scores)
    expected = sorted(scores, key=lambda member: (scores[member], member))

    for count in (1, 2, 3, 100):
        visited: list[str] = []
        after: list[bytes | str] = ["", ""]
        while True:
            _, entries = await store.connection.run("candidates", [leases], [*after, count])
            if not entries:
                break
            visited += [member.decode() for member in entries[0::2]]
            after = [entries[-1], entries[-2]]
        assert visited == expected, f"pages of {count}"


# Waiting runs ----------------------------------------------------------------

REQUEST: JSON = {"ask": "approve?"}


@pytest.mark.asyncio
async def test_wait_and_send_take_one_round_trip_each(store: RedisStore) -> None:
    checkpointer = await begin(store)
    await checkpointer.save(CheckpointState(HISTORY))  # scripts are loaded by now
    counter = CommandCounter(store)

    await checkpointer.wait(REQUEST, 60.0)
    assert counter.take() == ["EVALSHA"]
    sent = await store.send(checkpointer.run_id, {"approved": True})
    assert counter.take() == ["EVALSHA"]  # the send script returns the record after it
    assert (sent.status, sent.delivery) == (RunStatus.RUNNING, {"approved": True})


@pytest.mark.asyncio
async def test_waits_and_sends_keep_the_lease_index_exact(
    store: RedisStore, raw: redis.Redis
) -> None:
    """A waiting run is scored by its wait's timeout, and is not in the lease
    index without one; a send scores it as a release (its last write); a
    cancel of a waiting run takes it out."""
    checkpointer = await begin(store, lease=30.0)
    run = checkpointer.run_id

    await checkpointer.wait(REQUEST, 3600.0)
    await index_agrees(store, raw, run, "a wait with a timeout")
    assert lease_score(raw, store, run) is not None
    await store.send(run, "yes")
    await index_agrees(store, raw, run, "send")
    claim = await store.claim(run, owner="other", lease=30.0)
    assert claim is not None
    await index_agrees(store, raw, run, "the claim after a send")
    await claim.checkpointer.wait(REQUEST, None)
    await index_agrees(store, raw, run, "a wait without a timeout")
    assert lease_score(raw, store, run) is None
    await store.cancel(run, "default")
    await index_agrees(store, raw, run, "a cancel of a waiting run")
    assert lease_score(raw, store, run) is None


@pytest.mark.asyncio
async def test_a_wait_or_a_send_replayed_by_a_client_retry_answers_ok(store: RedisStore) -> None:
    checkpointer = await begin(store)
    run = checkpointer.run_id
    incarnation = (await must_load(store, run)).record.incarnation
    keys = store.run_keys("default", run).all()
    wait: list[str | int] = [run, 1, incarnation, codec.dumps(REQUEST), "", "token-wait"]
    send: list[str | int] = [run, codec.FORMAT_VERSION, '"yes"', "token-send"]

    assert await store.connection.run("wait", keys, wait) == [b"ok"]
    assert await store.connection.run("wait", keys, wait) == [b"ok"]  # as redis-py retries it
    first = await store.connection.run("send", keys, send)
    again = await store.connection.run("send", keys, send)

    assert first[0] == again[0] == b"ok"
    assert fields_of(first[1]) == fields_of(again[1])
    with pytest.raises(NotWaiting):  # a genuinely second send
        await store.send(run, "twice")
    assert (await must_load(store, run)).record.delivery == "yes"


@pytest.mark.asyncio
async def test_a_timed_out_wait_whose_progress_does_not_decode_is_handed_back_waiting(
    store: RedisStore, raw: redis.Redis
) -> None:
    """A claim hands it back as it was (still waiting, still indexed by its
    timeout); claim_next hands it back and quarantines it, its wait kept."""
    checkpointer = await begin(store)
    run = checkpointer.run_id
    await checkpointer.save(CheckpointState(HISTORY))
    await checkpointer.wait(REQUEST, 0.0)  # timed out at once
    await corrupt_message(store, run, "default")
    keys = store.run_keys("default", run)
    before = (raw.hgetall(keys.meta), raw.zscore(keys.leases, run))
    assert before[0][b"status"] == b"waiting" and before[1] is not None

    with pytest.raises(CorruptCheckpoint):
        await store.claim(run, owner="other", lease=30.0)
    assert (raw.hgetall(keys.meta), raw.zscore(keys.leases, run)) == before

    assert await store.claim_next(["test"], owner="other", lease=30.0) is None
    (record,) = (await store.list()).records
    assert (record.status, record.epoch, record.wait) == (RunStatus.FAILED, 2, REQUEST)
    assert record.error is not None and record.error.startswith("CorruptCheckpoint: ")
    assert raw.zscore(keys.leases, run) is None


def write_record_of_before_waiting(
    store: RedisStore, raw: redis.Redis, run_id: str, **fields: str | int
) -> None:
    """A run's record and index entries exactly as outlast-redis wrote them
    before waiting runs existed: no wait, delivery or usage fields."""
    seconds, micros = raw.time()
    now_ms = seconds * 1000 + micros // 1000
    keys = store.run_keys("default", run_id)
    record: dict[str, str | int] = {
        "v": codec.FORMAT_VERSION,
        "run_id": run_id,
        "namespace": "default",
        "kind": "test",
        "input": '{"n":1}',
        "owner": "worker",
        "status": "running",
        "epoch": 1,
        "attempts": 1,
        "crashes": 0,
        "lease": "30.0",
        "expires_ms": "",
        "created_ms": now_ms,
        "updated_ms": now_ms,
        "seg": 0,
        "incarnation": uuid.uuid4().hex,
        "cancel_requested": 0,
        **fields,
    }
    raw.hset(keys.meta, items=[part for item in record.items() for part in item])
    raw.zadd(keys.runs, {run_id: 0})
    if record["status"] == "running":
        raw.zadd(keys.leases, {run_id: now_ms})


@pytest.mark.asyncio
async def test_records_written_before_waiting_runs_load_and_can_wait(
    store: RedisStore, raw: redis.Redis
) -> None:
    """Their wait, delivery and usage read as None; such a run waits, takes
    a delivery and completes with its usage like any other."""
    write_record_of_before_waiting(store, raw, "old-released")
    write_record_of_before_waiting(store, raw, "old-done", status="completed", result='"done"')

    for run in ("old-released", "old-done"):
        record = (await must_load(store, run)).record
        assert (record.wait, record.delivery, record.usage) == (None, None, None)
    assert (await must_load(store, "old-done")).record.result == "done"
    assert [r.run_id for r in await store.interrupted()] == ["old-released"]

    claim = await store.claim("old-released", owner="new", lease=30.0)
    assert claim is not None and (claim.record.epoch, claim.record.crashes) == (2, 0)
    await claim.checkpointer.wait(REQUEST, None)
    assert [r.run_id for r in (await store.list(status=RunStatus.WAITING)).records] == [
        "old-released"
    ]
    await store.send("old-released", {"approved": True})
    again = await store.claim("old-released", owner="newer", lease=30.0)
    assert again is not None and again.record.delivery == {"approved": True}
    await again.checkpointer.complete("ok", {"input_tokens": 3})
    record = (await must_load(store, "old-released")).record
    assert (record.status, record.wait, record.delivery, record.usage) == (
        RunStatus.COMPLETED,
        REQUEST,
        {"approved": True},
        {"input_tokens": 3},
    )


# Configuration ---------------------------------------------------------------


def test_the_hiredis_extra_installs_redis_pys_compiled_parser() -> None:
    """``pip install "outlast-redis[hiredis]"`` brings hiredis through redis-py's
    own extra, so pip picks the hiredis that redis-py supports."""
    requires = [Requirement(line) for line in importlib.metadata.requires("outlast-redis") or ()]
    (fast,) = [r for r in requires if r.marker and r.marker.evaluate({"extra": "hiredis"})]
    assert (fast.name, fast.extras) == ("redis", {"hiredis"})
    assert not fast.marker.evaluate({"extra": ""})  # not part of the default install


@pytest.mark.asyncio
async def test_replies_are_parsed_by_hiredis_exactly_when_it_is_installed(
    store: RedisStore,
) -> None:
    """outlast passes redis-py no parser: redis-py takes hiredis's when it can import it."""
    await store.load("absent")  # connects
    pool = store.client.connection_pool
    assert "parser_class" not in pool.connection_kwargs
    connection = await pool.get_connection()
    try:
        parser = type(connection._parser)
    finally:
        await pool.release(connection)
    assert (parser is _AsyncHiredisParser) is HIREDIS_AVAILABLE


def test_outlast_open_finds_the_redis_backend(redis_url: str) -> None:
    store = outlast.open("redis://127.0.0.1:6379/3?prefix=app&completed_ttl=1.5").backend

    assert isinstance(store, RedisStore)
    assert (store.config.db, store.config.prefix, store.config.completed_ttl_ms) == (3, "app", 1500)
    assert "redis" in [info.name for info in outlast.backends()]


@pytest.mark.parametrize(
    ("url", "options", "complaint"),
    [
        ("redis://127.0.0.1/0?prefixx=a", {}, "unknown option"),
        ("redis://127.0.0.1/0", {"ttl": 3}, "unknown option"),
        ("redis://127.0.0.1/0", {"prefix": "a{b}"}, "braces"),
        ("redis://127.0.0.1/0", {"db": "two"}, "database number"),
        ("redis://127.0.0.1/1?cluster=1", {}, "only database 0"),
        ("redis://127.0.0.1/0?cluster=maybe", {}, "1/0 or true/false"),
        ("redis://127.0.0.1/0?completed_ttl=-1", {}, "positive number"),
        ("unix:///tmp/redis.sock?cluster=1", {}, "over TCP"),
    ],
)
def test_bad_options_are_refused_by_name(url: str, options: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ConfigurationError, match=complaint):
        open_redis(url, **options)


def test_keyword_options_win_and_the_query_never_reaches_redis_py() -> None:
    store = open_redis("redis://u:pw@127.0.0.1:6379/2?prefix=a&db=4", prefix="b")

    assert (store.config.prefix, store.config.db) == ("b", 4)
    assert store.config.url == "redis://u:pw@127.0.0.1:6379"
    assert "pw" not in repr(store) and "pw" not in repr(store.config)


# Errors ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_unreachable_server_is_store_unavailable_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = open_redis(f"redis://me:hunter2@127.0.0.1:{free_port()}/0", socket_connect_timeout=2)
    try:
        with pytest.raises(StoreUnavailable, match="cannot reach Redis") as caught:
            await store.load("any")
    finally:
        await store.close()

    for text in (str(caught.value), repr(caught.value), repr(store), caplog.text):
        assert "hunter2" not in text
    assert "me:***@127.0.0.1" in str(caught.value)


@pytest.mark.asyncio
async def test_a_wrong_password_is_store_unavailable_without_the_password(
    password_server_port: int,
) -> None:
    store = open_redis(f"redis://default:wrong-pw@127.0.0.1:{password_server_port}/0")
    try:
        with pytest.raises(StoreUnavailable, match="refused the credentials") as caught:
            await store.begin(RunStart(run_id(), "test"))
    finally:
        await store.close()

    assert "wrong-pw" not in str(caught.value) and "wrong-pw" not in repr(caught.value)


@pytest.mark.asyncio
async def test_the_right_password_works(password_server_port: int) -> None:
    store = open_redis(f"redis://default:s3cret-pw@127.0.0.1:{password_server_port}/0")
    try:
        checkpointer = await store.begin(RunStart(run_id(), "test"))
        await checkpointer.save(CheckpointState(HISTORY))
        loaded = await store.load(checkpointer.run_id)
    finally:
        await store.close()

    assert loaded is not None and loaded.state.history == HISTORY


@pytest.mark.asyncio
async def test_a_server_without_scripting_is_store_unavailable(scriptless_server_port: int) -> None:
    store = open_redis(f"redis://127.0.0.1:{scriptless_server_port}/0")
    try:
        with pytest.raises(StoreUnavailable, match="cannot run Lua scripts"):
            await store.begin(RunStart(run_id(), "test"))
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_cluster_mode_against_a_single_server_says_so(redis_url: str) -> None:
    store = open_redis(redis_url.rsplit("/", 1)[0], cluster=True)
    try:
        with pytest.raises(StoreUnavailable, match="drop cluster=1"):
            await store.load("any")
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_a_unix_socket_url_round_trips_and_fences(unix_socket_url: str) -> None:
    store = open_redis(unix_socket_url)
    try:
        checkpointer = await store.begin(RunStart(run_id(), "test", lease=0.001))
        await checkpointer.save(CheckpointState(HISTORY))
        await checkpointer.release()
        claim = await store.claim(checkpointer.run_id, owner="other", lease=30)
        assert claim is not None and claim.resume.history == HISTORY
        with pytest.raises(LeaseLost):
            await checkpointer.save(CheckpointState((*HISTORY, *HISTORY)))
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_a_rediss_url_works_over_tls(tls_url: str) -> None:
    store = open_redis(tls_url)
    try:
        checkpointer = await store.begin(RunStart(run_id(), "test"))
        await checkpointer.save(CheckpointState(HISTORY))
        loaded = await store.load(checkpointer.run_id)
    finally:
        await store.close()
    assert loaded is not None and loaded.state.history == HISTORY
