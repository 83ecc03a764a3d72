"""What a save writes to its run's row, counted by PostgreSQL's statistics, never timed.

A save of messages alone (the common save) does not update the row at all: it
locks it. The saves that do update it (nothing new, or a phase completed)
update it in place (HOT). A HOT (heap-only tuple) update writes no index entry
and leaves no dead tuple for vacuum: PostgreSQL makes one when no indexed
column changes and the row's page has room. ``pg_stat_user_tables`` counts
updates (``n_tup_upd``) and the HOT ones among them (``n_tup_hot_upd``).
Those counters are reported by each backend asynchronously: the store's one
connection is told to report now (``pg_stat_force_next_flush()``, PostgreSQL
15 and later), then closed (a backend reports at exit too), and the counters
are read, each read from a fresh statistics snapshot, until the updates have
arrived.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from postgres_support import wait_until
from psycopg import sql

from outlast.adapter import CheckpointState, Message, PhaseOutput, RunStart, transitions
from outlast_postgres import PostgresStore

SAVES = 30
"""Saves counted. Each leaves one row version on the page until PostgreSQL
prunes it; thirty fit on the run's page even if pruning were held back (by a
long transaction elsewhere on a shared test server), so the count does not
depend on it. bench/postgres_save_load.py counts hundreds."""


@pytest_asyncio.fixture
async def db(postgres_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        yield conn


def one_connection(store_url: str) -> PostgresStore:
    """A store whose every statement runs on one backend (so one flush reports them all)."""
    return PostgresStore(store_url, pool_min_size=1, pool_max_size=1)


async def report_and_close(store: PostgresStore) -> None:
    """Make the store's backend report its statistics, and close it."""
    async with store.database.connection("reporting statistics") as conn:
        if conn.info.server_version >= 150000:
            await conn.execute("SELECT pg_stat_force_next_flush()")
    await store.close()


async def updates(db: psycopg.AsyncConnection[Any], schema: str, expected: int) -> tuple[int, int]:
    """(n_tup_upd, n_tup_hot_upd) of the schema's runs table, once ``expected``
    updates have been reported (or the wait's limit failed the test)."""
    runs = sql.Identifier(schema, "runs").as_string(db)
    counts = (0, 0)

    async def arrived() -> bool:
        nonlocal counts
        await db.execute("SELECT pg_stat_clear_snapshot()")
        cursor = await db.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relid = %s::regclass",
            [runs],
        )
        row = await cursor.fetchone()
        assert row is not None
        counts = (int(row[0]), int(row[1]))
        return counts[0] >= expected

    await wait_until(arrived)
    return counts


async def columns(db: psycopg.AsyncConnection[Any], schema: str, run_id: str) -> tuple[Any, Any]:
    """The run's updated_at and saved_at columns, as stored."""
    cursor = await db.execute(
        sql.SQL("SELECT updated_at, saved_at FROM {} WHERE run_id = %s").format(
            sql.Identifier(schema, "runs")
        ),
        [run_id],
    )
    row = await cursor.fetchone()
    assert row is not None
    return row[0], row[1]


def tool_result(i: int) -> Message:
    return Message.tool(f"c{i}", "lookup", '{"rows": "' + "x" * 1000 + '"}')


@pytest.mark.asyncio
async def test_a_save_of_messages_writes_no_version_of_the_run_row(
    store_url: str, schema: str, db: psycopg.AsyncConnection[Any]
) -> None:
    """The common save (messages alone, the lease held) locks the run's row
    instead of updating it: no update at all, yet every save still moves the
    record's updated_at, through the saved_at of the run's last message."""
    store = one_connection(store_url)
    cp = await store.begin(RunStart("r", "k", {"q": 1}))
    begun = await store.load("r")
    assert begun is not None
    history: list[Message] = []
    stamps = [begun.record.updated_at]
    for i in range(SAVES):
        history.append(tool_result(i))
        if i % 3 == 2:  # and two messages at once, as results finishing together are
            history.append(tool_result(100 + i))
        await cp.save(CheckpointState(tuple(history)))
        saved = await store.load("r")
        assert saved is not None and saved.state.history == tuple(history)
        stamps.append(saved.record.updated_at)
    await cp.renew()  # one update, so that the wait below has something to wait for
    await report_and_close(store)
    assert await updates(db, schema, 1) == (1, 0)
    assert all(later > earlier for earlier, later in itertools.pairwise(stamps))
    updated_at, saved_at = await columns(db, schema, "r")
    assert saved_at is None  # the row's own save column: no save updated the row
    assert updated_at.timestamp() > stamps[-1]  # the renewal, after the last save


@pytest.mark.asyncio
async def test_the_saves_that_update_the_run_row_update_it_in_place(
    store_url: str, schema: str, db: psycopg.AsyncConnection[Any]
) -> None:
    """A save with nothing new (it only moves updated_at) and a save that
    completes a phase update the run's row: HOT, setting saved_at, which no
    index covers."""
    store = one_connection(store_url)
    cp = await store.begin(RunStart("r", "k"))
    begun = await store.load("r")
    assert begun is not None
    stamps = [begun.record.updated_at]
    state = CheckpointState((tool_result(0),))
    await cp.save(state)  # an append: no update
    for i in range(SAVES):
        if i % 2:
            state = CheckpointState((tool_result(i),), (*state.phases, PhaseOutput(f"p{i}", i)))
        await cp.save(state)
        saved = await store.load("r")
        assert saved is not None and saved.state == state
        stamps.append(saved.record.updated_at)
    await report_and_close(store)
    assert await updates(db, schema, SAVES) == (SAVES, SAVES)
    assert all(later > earlier for earlier, later in itertools.pairwise(stamps))
    updated_at, saved_at = await columns(db, schema, "r")
    assert saved_at.timestamp() == pytest.approx(stamps[-1], abs=1e-6)
    assert updated_at.timestamp() == pytest.approx(stamps[0], abs=1e-6)


@pytest.mark.asyncio
async def test_renewals_are_the_only_updates_among_saves_of_messages(
    store_url: str, schema: str, db: psycopg.AsyncConnection[Any]
) -> None:
    """Saves interleaved with renewals: the renewals move the lease (indexed:
    the work list's order), so they are updates and not HOT; the saves are no
    updates at all."""
    store = one_connection(store_url)
    cp = await store.begin(RunStart("r", "k"))
    for i in range(10):
        await cp.save(CheckpointState(tuple(tool_result(k) for k in range(i + 1))))
        if i % 2:
            await cp.renew()
    await report_and_close(store)
    assert await updates(db, schema, 5) == (5, 0)


@pytest.mark.asyncio
async def test_a_save_after_a_release_moves_the_run_back_in_the_work_list(
    store_url: str,
) -> None:
    """A released run is claimable since its last write; a save the
    checkpointer makes after its release (transitions allow it) is one, so
    the work list and the record's interrupted_since agree on the new order."""
    store = PostgresStore(store_url)
    first = await store.begin(RunStart("a-first", "k"))
    second = await store.begin(RunStart("b-second", "k"))
    await first.release()
    await second.release()
    assert [r.run_id for r in await store.interrupted()] == ["a-first", "b-second"]
    await first.save(CheckpointState((Message.user("after the release"),)))
    listed = await store.interrupted()
    assert [r.run_id for r in listed] == ["b-second", "a-first"]
    assert sorted(listed, key=transitions.interrupted_order) == listed
    await store.close()


@pytest.mark.asyncio
async def test_runs_keeps_room_on_its_pages_for_hot_updates(
    store_url: str, schema: str, db: psycopg.AsyncConnection[Any]
) -> None:
    store = PostgresStore(store_url)
    await store.migrate()
    await store.close()
    cursor = await db.execute(
        "SELECT reloptions FROM pg_class WHERE oid = %s::regclass",
        [sql.Identifier(schema, "runs").as_string(db)],
    )
    assert await cursor.fetchone() == (["fillfactor=80"],)
