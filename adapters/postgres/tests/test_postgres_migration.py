"""The versioned migration: explicit, lazy on first use, idempotent, safe concurrently."""

from __future__ import annotations

import asyncio
import logging

import psycopg
import pytest
from psycopg import sql

import outlast_postgres
from outlast import RunStart, StoreError
from outlast_postgres import SCHEMA_VERSION, PostgresStore

RACERS = 6


async def versions(postgres_url: str, schema: str) -> list[int]:
    async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
        cursor = await conn.execute(
            sql.SQL("SELECT version FROM {} ORDER BY version").format(
                sql.Identifier(schema, "schema_version")
            )
        )
        return [row[0] for row in await cursor.fetchall()]


async def tables(postgres_url: str, schema: str) -> set[str]:
    async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
        cursor = await conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", [schema]
        )
        return {row[0] for row in await cursor.fetchall()}


@pytest.mark.asyncio
async def test_migrate_creates_the_schema_and_running_it_again_changes_nothing(
    postgres_url: str, store_url: str, schema: str
) -> None:
    await outlast_postgres.migrate(store_url)
    assert await tables(postgres_url, schema) == {"runs", "messages", "phases", "schema_version"}
    store = PostgresStore(store_url)
    await store.begin(RunStart(run_id="kept", kind="k"))
    await store.migrate()
    await outlast_postgres.migrate(store_url)
    assert await versions(postgres_url, schema) == [SCHEMA_VERSION]
    assert await store.load("kept") is not None
    await store.close()


@pytest.mark.asyncio
async def test_first_use_migrates_lazily(postgres_url: str, store_url: str, schema: str) -> None:
    store = PostgresStore(store_url)
    assert await tables(postgres_url, schema) == set()
    await store.begin(RunStart(run_id="r", kind="k"))
    assert await versions(postgres_url, schema) == [SCHEMA_VERSION]
    await store.close()


@pytest.mark.asyncio
async def test_concurrent_migrations_all_succeed_and_apply_once(
    postgres_url: str, store_url: str, schema: str
) -> None:
    stores = [PostgresStore(store_url, pool_min_size=0) for _ in range(RACERS)]
    await asyncio.gather(*(store.migrate() for store in stores))
    assert await versions(postgres_url, schema) == [SCHEMA_VERSION]
    await asyncio.gather(*(store.close() for store in stores))


@pytest.mark.asyncio
async def test_concurrent_first_uses_of_a_fresh_schema_all_succeed(
    postgres_url: str, store_url: str, schema: str
) -> None:
    stores = [PostgresStore(store_url, pool_min_size=0) for _ in range(RACERS)]
    await asyncio.gather(
        *(store.begin(RunStart(run_id=f"r{i}", kind="k")) for i, store in enumerate(stores))
    )
    assert len((await stores[0].list()).records) == RACERS
    assert await versions(postgres_url, schema) == [SCHEMA_VERSION]
    await asyncio.gather(*(store.close() for store in stores))


@pytest.mark.asyncio
async def test_a_dropped_schema_tells_the_user_to_migrate_and_migrate_restores_it(
    postgres_url: str, store_url: str, schema: str
) -> None:
    store = PostgresStore(store_url)
    await store.migrate()
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    with pytest.raises(StoreError, match="run `outlast migrate URL`"):
        await store.load("r")
    await store.migrate()
    await store.begin(RunStart(run_id="r", kind="k"))
    assert await store.load("r") is not None
    await store.close()


@pytest.mark.asyncio
async def test_a_newer_schema_is_used_with_a_warning(
    postgres_url: str, store_url: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    await outlast_postgres.migrate(store_url)
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("INSERT INTO {} (version, description) VALUES (%s, 'from the future')").format(
                sql.Identifier(schema, "schema_version")
            ),
            [SCHEMA_VERSION + 1],
        )
    caplog.set_level(logging.WARNING, logger="outlast_postgres")
    store = PostgresStore(store_url)
    await store.begin(RunStart(run_id="r", kind="k"))
    await store.close()
    assert "upgrade outlast-postgres" in caplog.text
