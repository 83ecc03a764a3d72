"""The versioned migration: explicit, lazy on first use, idempotent, safe concurrently."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

import outlast_postgres
from outlast.adapter import (
    CheckpointState,
    Message,
    NotWaiting,
    RunStart,
    RunStatus,
    StoreError,
    codec,
    transitions,
)
from outlast_postgres import SCHEMA_VERSION, PostgresStore
from outlast_postgres import schema as migrations

RACERS = 6
EVERY_VERSION = [migration.version for migration in migrations.MIGRATIONS]


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
    assert await versions(postgres_url, schema) == EVERY_VERSION
    assert await store.load("kept") is not None
    await store.close()


@pytest.mark.asyncio
async def test_first_use_migrates_lazily(postgres_url: str, store_url: str, schema: str) -> None:
    store = PostgresStore(store_url)
    assert await tables(postgres_url, schema) == set()
    await store.begin(RunStart(run_id="r", kind="k"))
    assert await versions(postgres_url, schema) == EVERY_VERSION
    await store.close()


@pytest.mark.asyncio
async def test_concurrent_migrations_all_succeed_and_apply_once(
    postgres_url: str, store_url: str, schema: str
) -> None:
    stores = [PostgresStore(store_url, pool_min_size=0) for _ in range(RACERS)]
    await asyncio.gather(*(store.migrate() for store in stores))
    assert await versions(postgres_url, schema) == EVERY_VERSION
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
    assert await versions(postgres_url, schema) == EVERY_VERSION
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


async def schema_at_version_1(postgres_url: str, schema: str) -> None:
    """A schema as outlast-postgres 0.1 left it, holding a released run
    ("released") and one whose owner died ("expired"), both at epoch 3."""
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        assert await migrations.migrate(conn, schema, target=1) == 1
        insert = sql.SQL(
            "INSERT INTO {} (namespace, run_id, kind, input, status, epoch, owner,"
            " lease_seconds, lease_expires_at, attempts, format_version)"
            " VALUES ('default', %s, 'k', '{{\"q\":1}}', 'running', 3, 'w', 30, %s, 3, 1)"
        ).format(sql.Identifier(schema, "runs"))
        await conn.execute(insert, ["released", None])
        await conn.execute(insert, ["expired", datetime.now(UTC) - timedelta(hours=1)])


@pytest.mark.asyncio
async def test_a_version_1_schema_upgrades_and_its_runs_read_no_crashes_and_no_incarnation(
    postgres_url: str, store_url: str, schema: str
) -> None:
    await schema_at_version_1(postgres_url, schema)
    store = PostgresStore(store_url)
    old = await store.load("released")  # first use: migrates
    assert await versions(postgres_url, schema) == EVERY_VERSION
    assert old is not None
    record = old.record
    assert (record.crashes, record.incarnation, record.lease) == (0, "", 30.0)
    assert (record.epoch, record.attempts, record.input) == (3, 3, {"q": 1})
    await store.close()


@pytest.mark.asyncio
async def test_runs_of_a_version_1_schema_are_recovered_after_the_upgrade(
    store_url: str, postgres_url: str, schema: str
) -> None:
    await schema_at_version_1(postgres_url, schema)
    store = PostgresStore(store_url)
    assert [r.run_id for r in await store.interrupted()] == ["expired", "released"]
    expired = await store.claim("expired", owner="w2", lease=30)
    released = await store.claim("released", owner="w2", lease=30)
    assert expired is not None and released is not None
    # The poison limit counts from the upgrade: an expired lease is a crash, a release is not.
    assert (expired.record.crashes, released.record.crashes) == (1, 0)
    # The checkpointer of a run begun before the upgrade holds the empty incarnation.
    await released.checkpointer.save(CheckpointState((Message.user("after the upgrade"),)))
    await released.checkpointer.complete("done")
    done = await store.load("released")
    assert done is not None
    assert (done.record.status, done.record.result) == (RunStatus.COMPLETED, "done")
    await store.close()


@pytest.mark.asyncio
async def test_concurrent_upgrades_of_a_version_1_schema_all_succeed_and_apply_once(
    postgres_url: str, store_url: str, schema: str
) -> None:
    await schema_at_version_1(postgres_url, schema)
    stores = [PostgresStore(store_url, pool_min_size=0) for _ in range(RACERS)]
    loaded = await asyncio.gather(*(store.load("released") for store in stores))
    assert all(run is not None and run.record.crashes == 0 for run in loaded)
    assert await versions(postgres_url, schema) == EVERY_VERSION
    await asyncio.gather(*(store.close() for store in stores))


async def schema_at_version_2(postgres_url: str, schema: str) -> None:
    """A schema as outlast-postgres 0.2 left it, holding a released run
    ("released") and one a worker owns ("owned", incarnation "i-owned")."""
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        assert await migrations.migrate(conn, schema, target=2) == 2
        insert = sql.SQL(
            "INSERT INTO {} (namespace, run_id, kind, input, status, epoch, owner,"
            " lease_seconds, lease_expires_at, attempts, crashes, incarnation, format_version)"
            " VALUES ('default', %s, 'k', 'null', 'running', 2, 'w', 30, %s, 2, 1, %s, 1)"
        ).format(sql.Identifier(schema, "runs"))
        await conn.execute(insert, ["released", None, "i-released"])
        await conn.execute(insert, ["owned", datetime.now(UTC) + timedelta(hours=1), "i-owned"])


@pytest.mark.asyncio
async def test_a_version_2_schema_upgrades_its_runs_read_no_cancel_request_and_can_be_cancelled(
    postgres_url: str, store_url: str, schema: str
) -> None:
    await schema_at_version_2(postgres_url, schema)
    store = PostgresStore(store_url)
    old = await store.load("owned")  # first use: migrates
    assert await versions(postgres_url, schema) == EVERY_VERSION
    assert old is not None
    assert (old.record.cancel_requested, old.record.epoch, old.record.crashes) == (False, 2, 1)
    # A run owned across the upgrade gets the request; one released is failed at once.
    flagged = await store.cancel("owned")
    assert (flagged.status, flagged.cancel_requested, flagged.epoch) == (RunStatus.RUNNING, True, 2)
    failed = await store.cancel("released")
    assert (failed.status, failed.error, failed.epoch) == (
        RunStatus.FAILED,
        transitions.CANCELLED,
        3,
    )
    # Epoch 0 is now allowed: a submitted run waits there for its first claim.
    await store.submit(RunStart(run_id="queued", kind="k"))
    claim = await store.claim_next(["k"], owner="w2", lease=30)
    assert claim is not None
    assert (claim.record.run_id, claim.record.epoch, claim.record.crashes) == ("queued", 1, 0)
    await store.close()


@pytest.mark.asyncio
async def test_concurrent_upgrades_of_a_version_2_schema_all_succeed_and_apply_once(
    postgres_url: str, store_url: str, schema: str
) -> None:
    await schema_at_version_2(postgres_url, schema)
    stores = [PostgresStore(store_url, pool_min_size=0) for _ in range(RACERS)]
    loaded = await asyncio.gather(*(store.load("released") for store in stores))
    assert all(run is not None and not run.record.cancel_requested for run in loaded)
    assert await versions(postgres_url, schema) == EVERY_VERSION
    await asyncio.gather(*(store.close() for store in stores))


async def schema_at_version_3(postgres_url: str, schema: str) -> None:
    """A schema as outlast-postgres 0.3 left it, holding a completed run
    ("done"), a released one ("released") and one a worker owns ("owned",
    incarnation "i-owned", epoch 2)."""
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        assert await migrations.migrate(conn, schema, target=3) == 3
        insert = sql.SQL(
            "INSERT INTO {} (namespace, run_id, kind, input, status, epoch, owner,"
            " lease_seconds, lease_expires_at, attempts, crashes, incarnation, result,"
            " format_version)"
            " VALUES ('default', %s, 'k', 'null', %s, 2, 'w', 30, %s, 2, 0, %s, %s, 1)"
        ).format(sql.Identifier(schema, "runs"))
        await conn.execute(insert, ["done", "completed", None, "i-done", '{"answer":1}'])
        await conn.execute(insert, ["released", "running", None, "i-released", None])
        await conn.execute(
            insert,
            ["owned", "running", datetime.now(UTC) + timedelta(hours=1), "i-owned", None],
        )


async def indexes(postgres_url: str, schema: str) -> set[str]:
    async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
        cursor = await conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = 'runs'",
            [schema],
        )
        return {row[0] for row in await cursor.fetchall()}


@pytest.mark.asyncio
async def test_a_version_3_schema_upgrades_its_runs_read_no_wait_and_can_wait(
    postgres_url: str, store_url: str, schema: str
) -> None:
    await schema_at_version_3(postgres_url, schema)
    store = PostgresStore(store_url)
    done = await store.load("done")  # first use: migrates
    assert await versions(postgres_url, schema) == EVERY_VERSION
    assert await indexes(postgres_url, schema) == {
        "runs_pkey",
        "runs_claimable_order",
        "runs_terminal",
    }
    assert done is not None
    assert (done.record.result, done.record.usage) == ({"answer": 1}, None)
    assert (done.record.wait, done.record.delivery) == (None, None)
    with pytest.raises(NotWaiting):
        await store.send("released", "no")
    # A run of before the upgrade parks (the widened status check lets it), is
    # sent its input and claimed again; the run owned meanwhile is left alone.
    claim = await store.claim("released", owner="w2", lease=30)
    assert claim is not None
    await claim.checkpointer.wait({"ask": "approve?"}, None)
    assert await store.interrupted() == []
    sent = await store.send("released", {"approved": True})
    assert (sent.status, sent.wait, sent.delivery) == (
        RunStatus.RUNNING,
        {"ask": "approve?"},
        {"approved": True},
    )
    again = await store.claim_next(["k"], owner="w3", lease=30)
    assert again is not None
    assert (again.record.run_id, again.record.epoch, again.record.crashes) == ("released", 4, 0)
    assert await store.claim_next(["k"], owner="w3", lease=30) is None
    await store.close()


@pytest.mark.asyncio
async def test_the_upgraded_status_check_still_refuses_unknown_statuses(
    postgres_url: str, schema: str
) -> None:
    await schema_at_version_3(postgres_url, schema)
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        assert await migrations.migrate(conn, schema) == SCHEMA_VERSION
        runs = sql.Identifier(schema, "runs")
        update = sql.SQL("UPDATE {} SET status = %s WHERE run_id = 'released'").format(runs)
        await conn.execute(update, ["waiting"])
        with pytest.raises(psycopg.errors.CheckViolation):
            await conn.execute(update, ["paused"])
        cursor = await conn.execute(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'c'",
            [runs.as_string(conn)],
        )
        assert await cursor.fetchone() == (3,)  # status, epoch, lease_seconds: none left over


@pytest.mark.asyncio
async def test_concurrent_upgrades_of_a_version_3_schema_all_succeed_and_apply_once(
    postgres_url: str, store_url: str, schema: str
) -> None:
    await schema_at_version_3(postgres_url, schema)
    stores = [PostgresStore(store_url, pool_min_size=0) for _ in range(RACERS)]
    loaded = await asyncio.gather(*(store.load("done") for store in stores))
    assert all(run is not None and run.record.usage is None for run in loaded)
    assert await versions(postgres_url, schema) == EVERY_VERSION
    await asyncio.gather(*(store.close() for store in stores))


async def schema_at_version_4(postgres_url: str, schema: str) -> None:
    """A schema as outlast-postgres 0.4 left it: a run released two hours ago
    ("released"), one released an hour ago ("later"), and one completed two
    days ago ("done"), each last written at those times."""
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        assert await migrations.migrate(conn, schema, target=4) == 4
        insert = sql.SQL(
            "INSERT INTO {} (namespace, run_id, kind, input, status, epoch, owner,"
            " lease_seconds, lease_expires_at, attempts, crashes, incarnation, result,"
            " created_at, updated_at, format_version)"
            " VALUES ('default', %s, 'k', 'null', %s, 2, 'w', 30, NULL, 2, 0, %s, %s, %s, %s, 1)"
        ).format(sql.Identifier(schema, "runs"))
        now = datetime.now(UTC)
        for run_id, status, result, age in [
            ("released", "running", None, timedelta(hours=2)),
            ("later", "running", None, timedelta(hours=1)),
            ("done", "completed", "1", timedelta(days=2)),
        ]:
            await conn.execute(
                insert, [run_id, status, f"i-{run_id}", result, now - age, now - age]
            )


@pytest.mark.asyncio
async def test_a_version_4_schema_upgrades_to_hot_saves_and_its_runs_keep_their_times(
    postgres_url: str, store_url: str, schema: str
) -> None:
    await schema_at_version_4(postgres_url, schema)
    store = PostgresStore(store_url)
    released = await store.load("released")  # first use: migrates
    assert await versions(postgres_url, schema) == EVERY_VERSION
    assert await indexes(postgres_url, schema) == {
        "runs_pkey",
        "runs_claimable_order",
        "runs_terminal",
    }
    async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
        cursor = await conn.execute(
            "SELECT reloptions FROM pg_class WHERE oid = %s::regclass",
            [sql.Identifier(schema, "runs").as_string(conn)],
        )
        assert await cursor.fetchone() == (["fillfactor=80"],)
    # Never saved since the upgrade (saved_at NULL): a record's time is its updated_at.
    assert released is not None
    assert released.record.updated_at == pytest.approx(released.record.created_at, abs=1e-6)
    assert [r.run_id for r in await store.interrupted()] == ["released", "later"]
    claim = await store.claim("released", owner="w2", lease=30)
    assert claim is not None
    claimed_at = claim.record.updated_at
    await claim.checkpointer.save(CheckpointState((Message.user("after the upgrade"),)))
    saved = await store.load("released")
    assert saved is not None and saved.record.updated_at > claimed_at
    assert saved.state.history == (Message.user("after the upgrade"),)
    # Retention still finds the run finished before the upgrade by its time.
    assert await store.purge(3600) == 1
    assert await store.load("done") is None
    await store.close()


@pytest.mark.asyncio
async def test_a_version_5_schema_upgrades_to_saves_that_lock_and_its_runs_keep_their_times(
    postgres_url: str, store_url: str, schema: str
) -> None:
    """Version 6 gives messages a saved_at: the rows saved before read it as
    NULL, so a record's time stays what its row says until the next save."""
    saved_at = datetime.now(UTC) - timedelta(hours=1)
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        assert await migrations.migrate(conn, schema, target=5) == 5
        await conn.execute(
            sql.SQL(
                "INSERT INTO {} (namespace, run_id, kind, input, status, epoch, owner,"
                " lease_seconds, lease_expires_at, attempts, crashes, incarnation,"
                " created_at, updated_at, saved_at, format_version)"
                " VALUES ('default', 'r', 'k', 'null', 'running', 1, 'w', 30, NULL, 1, 0,"
                " 'i-r', %s, %s, %s, 1)"
            ).format(sql.Identifier(schema, "runs")),
            [saved_at - timedelta(hours=1), saved_at - timedelta(hours=1), saved_at],
        )
        for seq, text in enumerate(["one", "two"]):
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {} (namespace, run_id, segment, seq, body)"
                    " VALUES ('default', 'r', 0, %s, %s)"
                ).format(sql.Identifier(schema, "messages")),
                [seq, codec.encode_message(Message.user(text))],
            )
    store = PostgresStore(store_url)
    before = await store.load("r")  # first use: migrates
    assert await versions(postgres_url, schema) == EVERY_VERSION
    assert before is not None
    assert before.record.updated_at == pytest.approx(saved_at.timestamp(), abs=1e-6)
    claim = await store.claim("r", owner="w2", lease=30)
    assert claim is not None
    history = (*claim.resume.history, Message.user("three"))
    assert claim.resume.history == (Message.user("one"), Message.user("two"))
    await claim.checkpointer.save(CheckpointState(history))
    after = await store.load("r")
    assert after is not None and after.state.history == history
    assert after.record.updated_at > claim.record.updated_at
    await store.close()
