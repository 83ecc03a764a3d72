"""wait_for_change: LISTEN/NOTIFY on the schema's channel, filtered by namespace.

Waits are bounded by timeouts and by conditions read from the server
(``pg_stat_activity`` tells when the listening connection is in LISTEN);
nothing here asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from postgres_support import unused_port, wait_until
from psycopg import sql

from outlast import Executor
from outlast.adapter import CheckpointState, LeaseLost, NotWaiting, RunStart, StoreError
from outlast_conformance.scripts import StepTool, single_loop
from outlast_postgres import PostgresStore
from outlast_postgres.notifications import channel_for

HANG_GUARD = 30.0
"""Seconds after which a wait that should have ended fails the test."""

SHORT = 0.5
"""The timeout of a wait that must end without a notification."""


@pytest_asyncio.fixture
async def store(store_url: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(store_url)
    await store.migrate()
    yield store
    await store.close()


@pytest_asyncio.fixture
async def other(store: PostgresStore) -> AsyncIterator[PostgresStore]:
    """Another store on the same schema, as another worker process would open."""
    other = PostgresStore(store.config)
    yield other
    await other.close()


@pytest_asyncio.fixture
async def db(postgres_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        yield conn


async def listener_pid(db: psycopg.AsyncConnection[Any], store: PostgresStore) -> int | None:
    """The backend of ``store``'s listening connection once its LISTEN is in effect."""
    listen = sql.SQL("LISTEN {}").format(sql.Identifier(channel_for(store.schema))).as_string(db)
    cursor = await db.execute(
        "SELECT pid FROM pg_stat_activity WHERE query = %s AND state = 'idle'", [listen]
    )
    row = await cursor.fetchone()
    return None if row is None else int(row[0])


async def listening(db: psycopg.AsyncConnection[Any], store: PostgresStore) -> None:
    async def found() -> bool:
        return await listener_pid(db, store) is not None

    await wait_until(found)


@pytest.mark.asyncio
async def test_a_waiter_wakes_when_another_store_submits_in_its_namespace_only(
    store: PostgresStore, other: PostgresStore, db: psycopg.AsyncConnection[Any]
) -> None:
    here = asyncio.create_task(store.wait_for_change("here", HANG_GUARD))
    await listening(db, store)
    elsewhere = asyncio.create_task(store.wait_for_change("elsewhere", SHORT))
    await other.submit(RunStart(run_id="r", kind="k", namespace="here"))
    async with asyncio.timeout(HANG_GUARD):
        assert await here is True
        # The same notification reached the store: its waiter of another namespace slept on.
        assert await elsewhere is False


@pytest.mark.asyncio
async def test_a_waiter_wakes_when_another_store_sends_input_to_a_waiting_run(
    store: PostgresStore, other: PostgresStore, db: psycopg.AsyncConnection[Any]
) -> None:
    cp = await other.begin(RunStart(run_id="r", kind="k", namespace="here"))
    await cp.wait({"ask": "approve?"}, None)
    # A worker idle since: the send makes the run claimable, and says so.
    waiting = asyncio.create_task(store.wait_for_change("here", HANG_GUARD))
    await listening(db, store)
    await other.send("r", {"approved": True}, "here")
    async with asyncio.timeout(HANG_GUARD):
        assert await waiting is True
    claim = await store.claim_next(["k"], owner="worker", lease=60, namespace="here")
    assert claim is not None
    assert (claim.record.delivery, claim.record.crashes) == ({"approved": True}, 0)


@pytest.mark.asyncio
async def test_an_idle_worker_that_never_polls_starts_a_submitted_run_when_notified(
    store: PostgresStore, other: PostgresStore, db: psycopg.AsyncConnection[Any]
) -> None:
    worker = Executor(store, namespace="fleet", owner="worker")
    worker.register("steps", single_loop(StepTool()))
    # Its next poll is half an hour away: only a notification can wake it in time.
    serving = asyncio.create_task(worker.serve(poll_interval=3600))
    await listening(db, store)  # it found nothing to claim and waits
    submitter = Executor(other, namespace="fleet", owner="submitter")
    run_id = await submitter.submit("steps", None)
    result = await submitter.result(run_id, timeout=HANG_GUARD)
    assert result.output == "all three steps done"
    worker.shutdown()
    async with asyncio.timeout(HANG_GUARD):
        stats = await serving
    assert stats.claimed == 1


async def next_payloads(listen: psycopg.AsyncConnection[Any], until: str) -> list[str]:
    """The payloads ``listen`` receives, up to and including ``until``."""
    seen: list[str] = []
    async with asyncio.timeout(HANG_GUARD):
        async for notify in listen.notifies():
            seen.append(notify.payload)
            if notify.payload == until:
                return seen
    raise AssertionError(f"the notifications stopped before {until!r}: {seen}")


@pytest.mark.asyncio
async def test_the_writes_that_make_a_run_claimable_or_finished_notify_and_no_others(
    store: PostgresStore, postgres_url: str
) -> None:
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as listen:
        await listen.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel_for(store.schema))))
        a = await store.begin(RunStart(run_id="a", kind="k", namespace="ns-a"))  # none
        await a.save(CheckpointState())  # none
        await a.renew()  # none
        await a.release()  # ns-a
        claim = await store.claim("a", owner="w2", lease=3600, namespace="ns-a")  # none
        assert claim is not None
        with pytest.raises(LeaseLost):
            await a.release()  # refused: none
        await store.cancel("a", "ns-a")  # owned: a request, none
        await claim.checkpointer.complete("done")  # ns-a
        await store.submit(RunStart(run_id="b", kind="k", namespace="ns-b"))  # ns-b
        await store.cancel("b", "ns-b")  # nobody owns it: failed, ns-b
        c = await store.begin(RunStart(run_id="c", kind="k", namespace="ns-c"))
        await c.fail("boom")  # ns-c
        d = await store.begin(RunStart(run_id="d", kind="k", namespace="ns-d"))
        await d.release()  # ns-d
        assert await store.quarantine("d", "CorruptCheckpoint: test", "ns-d")  # ns-d
        e = await store.begin(RunStart(run_id="e", kind="k", namespace="ns-e"))
        await e.wait({"ask": "approve?"}, 3600)  # none: nothing became claimable
        await store.send("e", {"approved": True}, "ns-e")  # claimable, as a release: ns-e
        with pytest.raises(NotWaiting):
            await store.send("e", {"approved": False}, "ns-e")  # refused: none
        await store.submit(RunStart(run_id="end", kind="k", namespace="end"))
        assert await next_payloads(listen, "end") == [
            "ns-a",
            "ns-a",
            "ns-b",
            "ns-b",
            "ns-c",
            "ns-d",
            "ns-d",
            "ns-e",
            "end",
        ]


@pytest.mark.asyncio
async def test_a_write_rolled_back_notifies_nobody(store: PostgresStore, postgres_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as listen:
        await listen.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel_for(store.schema))))
        async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
            # The store's own submit statement, in a transaction that never commits.
            await conn.execute(
                store.database.statements.submit,
                {
                    "namespace": "undone",
                    "run_id": "r",
                    "kind": "k",
                    "input": "null",
                    "lease": 30.0,
                    "incarnation": "i",
                    "version": 1,
                },
            )
            await conn.rollback()
        await store.submit(RunStart(run_id="end", kind="k", namespace="end"))
        assert await next_payloads(listen, "end") == ["end"]


@pytest.mark.asyncio
async def test_a_lost_listening_connection_wakes_its_waiters_and_the_next_wait_listens_again(
    store: PostgresStore,
    other: PostgresStore,
    db: psycopg.AsyncConnection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="outlast_postgres")
    waiting = asyncio.create_task(store.wait_for_change("ns", HANG_GUARD))
    await listening(db, store)
    lost = await listener_pid(db, store)
    await db.execute("SELECT pg_terminate_backend(%s)", [lost])
    async with asyncio.timeout(HANG_GUARD):
        assert await waiting is True  # a change may have been missed while it was gone
    assert "cannot listen for changes" in caplog.text

    waiting = asyncio.create_task(store.wait_for_change("ns", HANG_GUARD))

    async def listening_again() -> bool:
        return await listener_pid(db, store) not in (None, lost)

    await wait_until(listening_again)
    await other.submit(RunStart(run_id="r", kind="k", namespace="ns"))
    async with asyncio.timeout(HANG_GUARD):
        assert await waiting is True


@pytest.mark.asyncio
async def test_without_a_server_a_wait_is_a_poll_and_says_so_once(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="outlast_postgres")
    store = PostgresStore(postgres_url, host="127.0.0.1", port=str(unused_port()))
    assert await store.wait_for_change("ns", 0.05) is False
    assert await store.wait_for_change("ns", 0.05) is False
    assert caplog.text.count("cannot listen for changes") == 1
    await store.close()


@pytest.mark.asyncio
async def test_closing_the_store_wakes_its_waiters_and_ends_waiting(
    store_url: str, db: psycopg.AsyncConnection[Any]
) -> None:
    store = PostgresStore(store_url)
    waiting = asyncio.create_task(store.wait_for_change("ns", HANG_GUARD))
    await listening(db, store)
    await store.close()
    async with asyncio.timeout(HANG_GUARD):
        assert await waiting is True

    async def disconnected() -> bool:  # the server ends the backend after close() returns
        return await listener_pid(db, store) is None

    await wait_until(disconnected)
    with pytest.raises(StoreError, match="closed"):
        await store.wait_for_change("ns", 1)


def test_the_channel_is_named_after_the_schema_and_fits_an_identifier() -> None:
    assert channel_for("outlast") == "outlast:outlast"
    longest = [channel_for("s" * 63), channel_for("s" * 62 + "t")]
    assert all(len(channel.encode()) <= 63 for channel in longest)
    assert longest[0] != longest[1]  # the hash keeps two long names apart
    assert longest[0].startswith("outlast:" + "s" * 40)
