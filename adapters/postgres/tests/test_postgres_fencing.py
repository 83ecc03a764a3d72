"""Fencing, claims and leases on the real server: races made deterministic with row locks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import psycopg
import pytest
import pytest_asyncio
from postgres_support import corrupt_message, corrupt_record, wait_until
from psycopg import sql

from outlast.adapter import (
    CheckpointState,
    CorruptCheckpoint,
    LeaseLost,
    Message,
    NotWaiting,
    RunFinished,
    RunStart,
    RunStatus,
    SaveCursor,
    transitions,
)
from outlast_postgres import PostgresStore

T = TypeVar("T")

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


async def drain(
    store: PostgresStore, owner: str = "w", kinds: tuple[str, ...] = ("k",)
) -> list[str]:
    """The run ids ``claim_next`` hands out, in order, until it has none."""
    taken = []
    while claim := await store.claim_next(kinds, owner=owner, lease=30):
        taken.append(claim.record.run_id)
    return taken


@pytest.mark.asyncio
async def test_claim_next_skips_a_run_another_worker_holds_instead_of_waiting(
    store: PostgresStore, db: psycopg.AsyncConnection[Any], schema: str
) -> None:
    for run_id in ("a", "b", "c"):
        await interrupted_run(store, run_id)
    async with db.transaction():
        # The oldest run's row is locked, as by a worker claiming it right now.
        await db.execute(
            sql.SQL("SELECT 1 FROM {} WHERE run_id = 'a' FOR UPDATE").format(
                sql.Identifier(schema, "runs")
            )
        )
        async with asyncio.timeout(HANG_GUARD):  # would block here without SKIP LOCKED
            assert await drain(store, "w1") == ["b", "c"]
    assert await drain(store, "w2") == ["a"]


@pytest.mark.asyncio
async def test_claim_next_takes_only_the_kinds_asked_for_and_reads_their_progress(
    store: PostgresStore,
) -> None:
    await interrupted_run(store, "a-report")
    other = await store.begin(RunStart(run_id="b-email", kind="email"))
    await other.release()
    await store.submit(RunStart(run_id="c-report", kind="k"))
    first = await store.claim_next(["k"], owner="w", lease=30)
    assert first is not None
    assert (first.record.run_id, first.resume.history) == ("a-report", history(3))
    assert (first.record.epoch, first.record.attempts, first.record.crashes) == (2, 2, 0)
    queued = await store.claim_next(["k", "sms"], owner="w", lease=30)
    assert queued is not None
    assert (queued.record.run_id, queued.record.epoch, queued.resume.history) == ("c-report", 1, ())
    assert await store.claim_next(["k"], owner="w", lease=30) is None
    assert await drain(store, kinds=("email",)) == ["b-email"]


# How the previous owner's save holds its run's row until it commits: the
# general save updates it, a save of messages alone locks it (statements._APPEND).
SAVE_HOLDS_ROW = {
    "update": "UPDATE {} SET saved_at = now() WHERE run_id = 'r'",
    "lock": "SELECT 1 FROM {} WHERE run_id = 'r' FOR SHARE",
}


@pytest.mark.asyncio
@pytest.mark.parametrize("hold", SAVE_HOLDS_ROW)
async def test_a_claim_racing_a_save_resumes_with_what_that_save_wrote(
    store: PostgresStore, db: psycopg.AsyncConnection[Any], schema: str, hold: str
) -> None:
    await interrupted_run(store, "r", messages=3)
    runs, messages = sql.Identifier(schema, "runs"), sql.Identifier(schema, "messages")
    async with db.transaction():
        # What the previous owner's save does: hold its row, append message #4 ...
        await db.execute(sql.SQL(SAVE_HOLDS_ROW[hold]).format(runs))
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
@pytest.mark.parametrize("hold", SAVE_HOLDS_ROW)
async def test_deleting_a_run_while_it_saves_leaves_nothing_behind(
    store: PostgresStore, db: psycopg.AsyncConnection[Any], schema: str, hold: str
) -> None:
    await interrupted_run(store, "r", messages=3)
    runs, messages = sql.Identifier(schema, "runs"), sql.Identifier(schema, "messages")
    async with db.transaction():
        await db.execute(sql.SQL(SAVE_HOLDS_ROW[hold]).format(runs))
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


@pytest.mark.asyncio
async def test_a_corrupt_run_is_not_claimed(
    store: PostgresStore, db: psycopg.AsyncConnection[Any], schema: str
) -> None:
    await interrupted_run(store, "bad")
    await corrupt_message(store, "bad", "default")
    before = await rows(db, schema, "runs", "bad")
    with pytest.raises(CorruptCheckpoint, match="bad"):
        await store.claim("bad", owner="w", lease=30)
    assert await rows(db, schema, "runs", "bad") == before  # rolled back: epoch 1, interrupted
    assert [r.run_id for r in await store.interrupted()] == ["bad"]


async def outcome(db: psycopg.AsyncConnection[Any], schema: str, run_id: str) -> tuple[Any, ...]:
    """The run's (status, error, epoch) as stored (its record may not parse)."""
    cursor = await db.execute(
        sql.SQL("SELECT status, error::json #>> '{{}}', epoch FROM {} WHERE run_id = %s").format(
            sql.Identifier(schema, "runs")
        ),
        [run_id],
    )
    row = await cursor.fetchone()
    assert row is not None
    return tuple(row)


@pytest.mark.asyncio
async def test_claim_next_quarantines_damaged_runs_and_claims_the_others(
    store: PostgresStore,
    db: psycopg.AsyncConnection[Any],
    schema: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Released in this order, so claimed oldest first: a, bad-message, bad-record, c.
    for run_id in ("a", "bad-message", "bad-record", "c"):
        await interrupted_run(store, run_id)
    await corrupt_message(store, "bad-message", "default")
    await corrupt_record(store, "bad-record", "default")
    caplog.set_level(logging.WARNING, logger="outlast_postgres")
    # Each damaged run is quarantined as it is met, and the claim made again without it.
    assert await drain(store) == ["a", "c"]
    for run_id in ("bad-message", "bad-record"):
        status, error, epoch = await outcome(db, schema, run_id)
        assert (status, epoch) == ("failed", 2)
        assert error.startswith(f"CorruptCheckpoint: run {run_id!r}")
        assert f"{run_id!r}" in caplog.text
    assert await store.interrupted() == []


@pytest.mark.asyncio
async def test_claim_next_counts_a_crash_for_an_expired_lease_not_for_a_release(
    store: PostgresStore,
) -> None:
    await interrupted_run(store, "released")
    await store.begin(RunStart(run_id="crashed", kind="k", lease=0.01))

    async def expired() -> bool:
        return "crashed" in {r.run_id for r in await store.interrupted()}

    await wait_until(expired)
    crashes = {}
    while claim := await store.claim_next(["k"], owner="w2", lease=30):
        crashes[claim.record.run_id] = (claim.record.crashes, claim.record.attempts)
    assert crashes == {"released": (0, 2), "crashed": (1, 2)}


@pytest.mark.asyncio
async def test_interrupted_quarantines_damaged_records_and_still_fills_its_limit(
    store: PostgresStore, db: psycopg.AsyncConnection[Any], schema: str
) -> None:
    for run_id in ("a-broken", "b-broken", "c-healthy", "d-healthy"):
        await interrupted_run(store, run_id)
    for run_id in ("a-broken", "b-broken"):
        await corrupt_record(store, run_id, "default")
    found = await store.interrupted(limit=2)
    assert [r.run_id for r in found] == ["c-healthy", "d-healthy"]
    assert [(await outcome(db, schema, r))[0] for r in ("a-broken", "b-broken")] == ["failed"] * 2


async def lease_lost(write: Awaitable[object]) -> str:
    with pytest.raises(LeaseLost) as caught:
        await write
    return caught.value.detail


@pytest.mark.asyncio
async def test_lease_lost_says_why_as_transitions_owned_does(store: PostgresStore) -> None:
    claimed = await store.begin(RunStart(run_id="claimed", kind="k"))
    await claimed.release()
    assert await store.claim("claimed", owner="w2", lease=30) is not None
    assert await lease_lost(claimed.renew()) == "epoch 2 owns it now"

    done = await store.begin(RunStart(run_id="done", kind="k"))
    await done.complete(None)
    assert await lease_lost(done.release()) == "the run is completed"

    deleted = await store.begin(RunStart(run_id="deleted", kind="k"))
    await store.delete("deleted")
    assert await lease_lost(deleted.save(CheckpointState())) == "the run was deleted"
    await store.begin(RunStart(run_id="deleted", kind="k"))
    assert await lease_lost(deleted.save(CheckpointState())) == (
        "the run was deleted and begun again"
    )


@pytest.mark.asyncio
async def test_a_write_refused_by_a_claim_committed_while_it_waited_says_which_epoch_won(
    store: PostgresStore, db: psycopg.AsyncConnection[Any], schema: str
) -> None:
    cp = await store.begin(RunStart(run_id="r", kind="k", lease=3600))
    async with db.transaction():
        # What a claim does, held open: the save below starts while the row still
        # looks like its own, then waits for the row and finds epoch 2.
        await db.execute(
            sql.SQL("UPDATE {} SET epoch = epoch + 1 WHERE run_id = 'r'").format(
                sql.Identifier(schema, "runs")
            )
        )
        saving = asyncio.create_task(lease_lost(cp.save(CheckpointState(history(2)))))
        await wait_until(lambda: blocked_by(db, db.info.backend_pid))
    async with asyncio.timeout(HANG_GUARD):
        assert await saving == "epoch 2 owns it now"
    loaded = await store.load("r")
    assert loaded is not None
    assert loaded.state == CheckpointState()


@pytest.mark.asyncio
async def test_a_save_that_waited_for_a_delete_finds_the_run_deleted(
    store: PostgresStore, db: psycopg.AsyncConnection[Any], schema: str
) -> None:
    cp = await store.begin(RunStart(run_id="r", kind="k", lease=3600))
    await cp.save(CheckpointState(history(1)))
    async with db.transaction():
        await db.execute(
            sql.SQL("DELETE FROM {} WHERE run_id = 'r'").format(sql.Identifier(schema, "runs"))
        )
        saving = asyncio.create_task(lease_lost(cp.save(CheckpointState(history(2)))))
        await wait_until(lambda: blocked_by(db, db.info.backend_pid))
    async with asyncio.timeout(HANG_GUARD):
        assert await saving == "the run was deleted"
    assert [row[3] for row in await rows(db, schema, "messages", "r")] == [0]


@pytest.mark.asyncio
async def test_a_save_retried_after_its_commit_went_unheard_writes_the_same_rows_again(
    store: PostgresStore, db: psycopg.AsyncConnection[Any], schema: str
) -> None:
    """The save committed but its client never heard (the connection dropped
    with the reply): the checkpointer saves the same positions again. The
    append finds them taken, and the general save overwrites them."""
    cp = await store.begin(RunStart(run_id="r", kind="k", lease=3600))
    await cp.save(CheckpointState(history(2)))
    unheard = store._checkpointer(  # what the checkpointer knew before the save
        "default", "r", cp.epoch, cp._incarnation, SaveCursor(phases=0, messages=1)
    )
    again = CheckpointState((*history(2), Message.user("m2")))
    assert await unheard.save(again) is False
    loaded = await store.load("r")
    assert loaded is not None and loaded.state == again
    assert [row[3] for row in await rows(db, schema, "messages", "r")] == [0, 1, 2]
    await unheard.save(CheckpointState((*again.history, Message.user("m3"))))
    loaded = await store.load("r")
    assert loaded is not None and len(loaded.state.history) == 4


async def while_held(
    db: psycopg.AsyncConnection[Any],
    schema: str,
    assignments: str,
    operation: Awaitable[T],
) -> asyncio.Task[T]:
    """Start ``operation`` (on run r) while ``db`` holds run r's row updated
    by ``assignments`` (another writer's write, not committed yet); commit
    once the operation waits for the row. The operation's task."""
    async with db.transaction():
        await db.execute(
            sql.SQL("UPDATE {} SET {} WHERE run_id = 'r'").format(
                sql.Identifier(schema, "runs"), sql.SQL(assignments)
            )
        )
        running = asyncio.ensure_future(operation)
        await wait_until(lambda: blocked_by(db, db.info.backend_pid))
    return running


async def cancel_while_held(
    store: PostgresStore, db: psycopg.AsyncConnection[Any], schema: str, assignments: str
) -> asyncio.Task[Any]:
    """Start ``store.cancel("r")`` while ``db`` holds run r's row updated by
    ``assignments`` (an owner's write, not committed yet); commit once the
    cancel waits for the row. The cancel's task."""
    return await while_held(db, schema, assignments, store.cancel("r"))


@pytest.mark.asyncio
async def test_a_cancel_that_waited_for_a_release_fails_the_run_at_once(
    store: PostgresStore, db: psycopg.AsyncConnection[Any], schema: str
) -> None:
    owner = await store.begin(RunStart(run_id="r", kind="k", lease=3600))
    # The cancel's snapshot sees a live lease; the row it locks was released.
    cancelling = await cancel_while_held(
        store, db, schema, "lease_expires_at = NULL, updated_at = now()"
    )
    async with asyncio.timeout(HANG_GUARD):
        after = await cancelling
    assert (after.status, after.error, after.epoch) == (RunStatus.FAILED, transitions.CANCELLED, 2)
    assert after.cancel_requested
    assert await lease_lost(owner.renew()) == "epoch 2 owns it now"


@pytest.mark.asyncio
async def test_a_cancel_that_waited_for_a_completion_says_the_run_finished(
    store: PostgresStore, db: psycopg.AsyncConnection[Any], schema: str
) -> None:
    await store.begin(RunStart(run_id="r", kind="k", lease=3600))
    # The cancel's snapshot sees the run running; the row it locks is completed.
    cancelling = await cancel_while_held(
        store, db, schema, "status = 'completed', result = '1', lease_expires_at = NULL"
    )
    async with asyncio.timeout(HANG_GUARD):
        with pytest.raises(RunFinished, match="completed"):
            await cancelling
    loaded = await store.load("r")
    assert loaded is not None
    assert (loaded.record.status, loaded.record.cancel_requested) == (RunStatus.COMPLETED, False)


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


@pytest.mark.asyncio
async def test_a_cancel_that_waited_for_a_wait_fails_the_run_at_once(
    store: PostgresStore, db: psycopg.AsyncConnection[Any], schema: str
) -> None:
    await store.begin(RunStart(run_id="r", kind="k", lease=3600))
    # The cancel's snapshot sees a live lease; the row it locks waits for input
    # (with a timeout far off): nobody owns it, so it is failed at once.
    cancelling = await cancel_while_held(
        store,
        db,
        schema,
        "status = 'waiting', wait = '\"ask\"', lease_expires_at = now() + interval '1 hour'",
    )
    async with asyncio.timeout(HANG_GUARD):
        after = await cancelling
    assert (after.status, after.error, after.epoch) == (RunStatus.FAILED, transitions.CANCELLED, 2)
    assert (after.lease_expires_at, after.wait) == (None, "ask")


@pytest.mark.asyncio
async def test_a_send_that_waited_for_another_send_finds_the_run_running(
    store: PostgresStore, db: psycopg.AsyncConnection[Any], schema: str
) -> None:
    cp = await store.begin(RunStart(run_id="r", kind="k", lease=3600))
    await cp.wait("ask", None)
    # The send's snapshot sees the run waiting; the row it locks was sent to.
    sending = await while_held(
        db,
        schema,
        "status = 'running', delivery = '\"first\"', lease_expires_at = NULL",
        store.send("r", "second"),
    )
    async with asyncio.timeout(HANG_GUARD):
        with pytest.raises(NotWaiting, match="running") as caught:
            await sending
    assert caught.value.status == "running"
    loaded = await store.load("r")
    assert loaded is not None
    assert (loaded.record.status, loaded.record.delivery) == (RunStatus.RUNNING, "first")


@pytest.mark.asyncio
async def test_a_wait_times_out_by_the_server_clock(store: PostgresStore) -> None:
    cp = await store.begin(RunStart(run_id="r", kind="k", lease=42.5))
    await cp.wait({"ask": 1}, 12.25)
    loaded = await store.load("r")
    assert loaded is not None
    # Both instants come from one now() of the server: no client clock involved.
    record = loaded.record
    assert record.lease_expires_at == pytest.approx(record.updated_at + 12.25)
    assert (record.status, record.lease) == (RunStatus.WAITING, 42.5)
