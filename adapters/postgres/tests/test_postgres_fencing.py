"""Fencing, claims and leases on the real server: races made deterministic with row locks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from postgres_support import wait_until
from psycopg import sql

from outlast import (
    CheckpointState,
    CorruptCheckpoint,
    LeaseLost,
    Message,
    RunStart,
)
from outlast_postgres import PostgresStore

RACERS = 8
HANG_GUARD = 30.0
"""Seconds after which a blocked call fails the test instead of hanging the run."""


def history(count: int) -> tuple[Message, ...]:
    return tuple(Message.user(f"m{i}") for i in range(count))


@pytest_asyncio.fixture
async def store(store_url: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(store_url)
    await store.migrate()
    yield store
    await store.close()


@pytest_asyncio.fixture
async def db(postgres_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A raw connection to the test database, for looking at rows and holding locks."""
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        yield conn


async def rows(
    db: psycopg.AsyncConnection[Any], schema: str, table: str, run_id: str
) -> list[tuple[Any, ...]]:
    cursor = await db.execute(
        sql.SQL("SELECT * FROM {} WHERE run_id = %s ORDER BY 1, 2, 3").format(
            sql.Identifier(schema, table)
        ),
        [run_id],
    )
    return await cursor.fetchall()


async def blocked_by(db: psycopg.AsyncConnection[Any], blocker: int) -> bool:
    """Whether some session is waiting for a lock the session ``blocker`` holds."""
    cursor = await db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", [blocker]
    )
    row = await cursor.fetchone()
    return row is not None and row[0] > 0


async def interrupted_run(store: PostgresStore, run_id: str, messages: int = 3) -> None:
    cp = await store.begin(RunStart(run_id=run_id, kind="k"))
    await cp.save(CheckpointState(history(messages)))
    await cp.release()


@pytest.mark.asyncio
async def test_a_superseded_checkpointer_writes_nothing(
    store: PostgresStore, db: psycopg.AsyncConnection[Any], schema: str
) -> None:
    stale = await store.begin(RunStart(run_id="r", kind="k"))
    await stale.save(CheckpointState(history(3)))
    await stale.release()
    claim = await store.claim("r", owner="new", lease=30)
    assert claim is not None
    before = [await rows(db, schema, t, "r") for t in ("runs", "messages", "phases")]
    for write in (
        stale.save(CheckpointState(history(5))),
        stale.complete("stale result"),
        stale.fail("stale error"),
        stale.release(),
        stale.renew(),
    ):
        with pytest.raises(LeaseLost):
            await write
    assert [await rows(db, schema, t, "r") for t in ("runs", "messages", "phases")] == before


@pytest.mark.asyncio
async def test_concurrent_claims_from_separate_stores_have_exactly_one_winner(
    store: PostgresStore,
) -> None:
    await interrupted_run(store, "r")
    workers = [PostgresStore(store.config) for _ in range(RACERS)]
    claims = await asyncio.gather(
        *(w.claim("r", owner=f"w{i}", lease=30) for i, w in enumerate(workers))
    )
    winners = [c for c in claims if c is not None]
    assert len(winners) == 1
    assert (winners[0].record.epoch, winners[0].record.attempts) == (2, 2)
    assert winners[0].resume.history == history(3)
    await asyncio.gather(*(w.close() for w in workers))


@pytest.mark.asyncio
async def test_claim_next_gives_concurrent_workers_disjoint_batches(store: PostgresStore) -> None:
    run_ids = {f"r{i:02}" for i in range(20)}
    for run_id in sorted(run_ids):
        await interrupted_run(store, run_id)
    workers = [PostgresStore(store.config) for _ in range(4)]
    batches = await asyncio.gather(
        *(w.claim_next(owner=f"w{i}", lease=30, limit=5) for i, w in enumerate(workers))
    )
    claimed = [claim.record.run_id for batch in batches for claim in batch]
    assert sorted(claimed) == sorted(run_ids)  # every run once, none twice
    assert all(len(batch) == 5 for batch in batches)
    assert all(c.record.epoch == 2 and len(c.resume.history) == 3 for b in batches for c in b)
    await asyncio.gather(*(w.close() for w in workers))


@pytest.mark.asyncio
async def test_claim_next_skips_a_run_another_worker_holds_instead_of_waiting(
    store: PostgresStore, db: psycopg.AsyncConnection[Any], schema: str
) -> None:
    for run_id in ("a", "b", "c"):
        await interrupted_run(store, run_id)
    async with db.transaction():
        await db.execute(
            sql.SQL("SELECT 1 FROM {} WHERE run_id = 'b' FOR UPDATE").format(
                sql.Identifier(schema, "runs")
            )
        )
        async with asyncio.timeout(HANG_GUARD):  # would block here without SKIP LOCKED
            first = await store.claim_next(owner="w1", lease=30, limit=10)
    assert sorted(c.record.run_id for c in first) == ["a", "c"]
    second = await store.claim_next(owner="w2", lease=30, limit=10)
    assert [c.record.run_id for c in second] == ["b"]


@pytest.mark.asyncio
async def test_a_claim_racing_a_save_resumes_with_what_that_save_wrote(
    store: PostgresStore, db: psycopg.AsyncConnection[Any], schema: str
) -> None:
    await interrupted_run(store, "r", messages=3)
    runs, messages = sql.Identifier(schema, "runs"), sql.Identifier(schema, "messages")
    async with db.transaction():
        # What the previous owner's save does: lock its row, append message #4 ...
        await db.execute(
            sql.SQL("UPDATE {} SET updated_at = now() WHERE run_id = 'r'").format(runs)
        )
        await db.execute(
            sql.SQL(
                "INSERT INTO {} (namespace, run_id, segment, seq, body)"
                " SELECT namespace, run_id, 0, 3, body FROM {}"
                " WHERE run_id = 'r' AND seq = 2"
            ).format(messages, messages)
        )
        # ... while a claim starts and waits for that row.
        claiming = asyncio.create_task(store.claim("r", owner="new", lease=30))
        await wait_until(lambda: blocked_by(db, db.info.backend_pid))
    async with asyncio.timeout(HANG_GUARD):
        claim = await claiming
    assert claim is not None
    assert len(claim.resume.history) == 4  # the save committed first, so it is resumed


@pytest.mark.asyncio
async def test_deleting_a_run_while_it_saves_leaves_nothing_behind(
    store: PostgresStore, db: psycopg.AsyncConnection[Any], schema: str
) -> None:
    await interrupted_run(store, "r", messages=3)
    runs, messages = sql.Identifier(schema, "runs"), sql.Identifier(schema, "messages")
    async with db.transaction():
        await db.execute(
            sql.SQL("UPDATE {} SET updated_at = now() WHERE run_id = 'r'").format(runs)
        )
        await db.execute(
            sql.SQL(
                "INSERT INTO {} (namespace, run_id, segment, seq, body)"
                " SELECT namespace, run_id, 0, 3, body FROM {} WHERE run_id = 'r' AND seq = 2"
            ).format(messages, messages)
        )
        deleting = asyncio.create_task(store.delete("r"))
        await wait_until(lambda: blocked_by(db, db.info.backend_pid))
    async with asyncio.timeout(HANG_GUARD):
        assert await deleting
    assert await rows(db, schema, "messages", "r") == []
    # So a run begun again under the same id starts from nothing.
    await store.begin(RunStart(run_id="r", kind="k"))
    loaded = await store.load("r")
    assert loaded is not None
    assert loaded.state == CheckpointState()


async def corrupt(db: psycopg.AsyncConnection[Any], schema: str, run_id: str) -> None:
    await db.execute(
        sql.SQL("UPDATE {} SET body = '{{oops' WHERE run_id = %s AND seq = 0").format(
            sql.Identifier(schema, "messages")
        ),
        [run_id],
    )


@pytest.mark.asyncio
async def test_a_corrupt_run_is_not_claimed(
    store: PostgresStore, db: psycopg.AsyncConnection[Any], schema: str
) -> None:
    await interrupted_run(store, "bad")
    await corrupt(db, schema, "bad")
    before = await rows(db, schema, "runs", "bad")
    with pytest.raises(CorruptCheckpoint, match="bad"):
        await store.claim("bad", owner="w", lease=30)
    assert await rows(db, schema, "runs", "bad") == before  # rolled back: epoch 1, interrupted
    assert [r.run_id for r in await store.interrupted()] == ["bad"]


@pytest.mark.asyncio
async def test_claim_next_leaves_corrupt_runs_and_claims_the_others(
    store: PostgresStore,
    db: psycopg.AsyncConnection[Any],
    schema: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for run_id in ("a", "bad", "c"):
        await interrupted_run(store, run_id)
    await corrupt(db, schema, "bad")
    caplog.set_level(logging.WARNING, logger="outlast_postgres")
    claims = await store.claim_next(owner="w", lease=30, limit=10)
    assert sorted(c.record.run_id for c in claims) == ["a", "c"]
    assert "'bad'" in caplog.text
    assert [r.run_id for r in await store.interrupted()] == ["bad"]


@pytest.mark.asyncio
async def test_leases_are_measured_by_the_server_clock(store: PostgresStore) -> None:
    cp = await store.begin(RunStart(run_id="r", kind="k", lease=42.5))
    loaded = await store.load("r")
    assert loaded is not None
    # Both instants come from one now() of the server: no client clock involved.
    assert loaded.record.lease_expires_at == pytest.approx(loaded.record.created_at + 42.5)
    await cp.renew()
    renewed = await store.load("r")
    assert renewed is not None
    assert renewed.record.lease_expires_at == pytest.approx(renewed.record.updated_at + 42.5)
