"""What is stored: exact JSON text, only the delta per save, a format version everywhere."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from psycopg import sql

from outlast import ToolCall
from outlast.adapter import (
    FORMAT_VERSION,
    CheckpointState,
    Message,
    PhaseOutput,
    RunStart,
    RunStatus,
    codec,
)
from outlast_postgres import PostgresStore

AWKWARD = 'nul:\u0000 lone:\udc80 emoji:🧪 rtl:שלום combining:e\u0301 quote:" backslash:\\'


@pytest_asyncio.fixture
async def store(store_url: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(store_url)
    yield store
    await store.close()


@pytest_asyncio.fixture
async def db(postgres_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        yield conn


async def column(
    db: psycopg.AsyncConnection[Any], schema: str, table: str, expression: str
) -> list[Any]:
    cursor = await db.execute(
        sql.SQL("SELECT {} FROM {} ORDER BY 1").format(
            sql.SQL(expression), sql.Identifier(schema, table)
        )
    )
    return [row[0] for row in await cursor.fetchall()]


@pytest.mark.asyncio
async def test_awkward_text_and_json_round_trip_exactly(store: PostgresStore) -> None:
    meta: dict[str, Any] = {"zeta": 1, "alpha": [1.0, 2**80, None, {"b": True, "a": AWKWARD}]}
    messages = (
        Message.user(AWKWARD, **meta),
        Message.assistant(None, (ToolCall("c1", "search", {"q": AWKWARD, "n": 1e-300}),)),
        Message.tool("c1", "search", AWKWARD),
        Message.user([{"type": "text", "text": AWKWARD}, {"type": "image", "url": None}]),
    )
    phases = (PhaseOutput("plan", {"y": AWKWARD, "x": 1.5}, summary=AWKWARD),)
    cp = await store.begin(RunStart(run_id="r", kind="k", input={"in": AWKWARD, "f": 0.1}))
    await cp.save(CheckpointState(messages, phases))
    loaded = await store.load("r")
    assert loaded is not None
    assert loaded.state == CheckpointState(messages, phases)
    assert loaded.record.input == {"in": AWKWARD, "f": 0.1}
    assert list(loaded.state.history[0].meta) == ["zeta", "alpha"]  # key order kept
    await cp.fail(AWKWARD)
    failed = await store.load("r")
    assert failed is not None
    assert (failed.record.status, failed.record.error) == (RunStatus.FAILED, AWKWARD)


@pytest.mark.asyncio
async def test_wait_delivery_and_usage_are_stored_as_the_codec_text_and_round_trip_exactly(
    store: PostgresStore, db: psycopg.AsyncConnection[Any], schema: str
) -> None:
    request: dict[str, Any] = {"zeta": AWKWARD, "alpha": [1.0, 2**80, None]}
    delivery: dict[str, Any] = {"y": True, "b": AWKWARD, "n": 1e-300}
    usage: dict[str, Any] = {"output_tokens": 2, "input_tokens": 1, "note": AWKWARD}
    cp = await store.begin(RunStart(run_id="r", kind="k"))
    await cp.wait(request, None)
    sent = await store.send("r", delivery)
    claim = await store.claim("r", owner="w2", lease=60)
    assert claim is not None
    await claim.checkpointer.complete("done", usage)
    loaded = await store.load("r")
    assert loaded is not None
    record = loaded.record
    assert (record.wait, record.delivery, record.usage) == (request, delivery, usage)
    assert (sent.wait, sent.delivery) == (request, delivery)
    assert [list(value) for value in (record.wait, record.delivery, record.usage)] == [
        ["zeta", "alpha"],
        ["y", "b", "n"],
        ["output_tokens", "input_tokens", "note"],
    ]  # key order kept
    stored = await column(db, schema, "runs", "ARRAY[wait, delivery, usage]")
    texts = [codec.dumps(value) for value in (request, delivery, usage)]
    # Lone surrogates are stored as their JSON escape (see outlast_postgres.records).
    assert stored == [[text.replace("\udc80", "\\udc80") for text in texts]]


@pytest.mark.asyncio
async def test_usage_not_given_is_stored_as_null(
    store: PostgresStore, db: psycopg.AsyncConnection[Any], schema: str
) -> None:
    cp = await store.begin(RunStart(run_id="r", kind="k"))
    await cp.complete({"answer": 1})
    assert await column(db, schema, "runs", "usage IS NULL AND wait IS NULL") == [True]
    loaded = await store.load("r")
    assert loaded is not None
    assert (loaded.record.usage, loaded.record.wait, loaded.record.delivery) == (None, None, None)


@pytest.mark.asyncio
async def test_completed_result_round_trips_and_progress_is_cleared(
    store: PostgresStore, db: psycopg.AsyncConnection[Any], schema: str
) -> None:
    cp = await store.begin(RunStart(run_id="r", kind="k"))
    await cp.save(CheckpointState((Message.user("q"),), (PhaseOutput("p", 1),)))
    await cp.complete({"answer": AWKWARD, "n": 1.0})
    loaded = await store.load("r")
    assert loaded is not None
    assert loaded.record.result == {"answer": AWKWARD, "n": 1.0}
    assert loaded.state == CheckpointState()
    assert await column(db, schema, "messages", "body") == []
    assert await column(db, schema, "phases", "body") == []


@pytest.mark.asyncio
async def test_stored_bodies_are_the_codec_text_with_its_format_version(
    store: PostgresStore, db: psycopg.AsyncConnection[Any], schema: str
) -> None:
    message = Message.user("hi", b=1, a=2.0)
    cp = await store.begin(RunStart(run_id="r", kind="k"))
    await cp.save(CheckpointState((message,)))
    assert await column(db, schema, "messages", "body") == [codec.encode_message(message)]
    assert await column(db, schema, "runs", "format_version") == [FORMAT_VERSION]


@pytest.mark.asyncio
async def test_a_save_writes_only_new_rows_and_never_rewrites_old_ones(
    store: PostgresStore, db: psycopg.AsyncConnection[Any], schema: str
) -> None:
    history = tuple(Message.user(f"m{i}") for i in range(11))
    cp = await store.begin(RunStart(run_id="r", kind="k"))
    await cp.save(CheckpointState(history[:10]))
    # xmin is the transaction that last wrote a row version: unchanged means untouched.
    written = await column(db, schema, "messages", "seq || ':' || xmin::text")
    await cp.save(CheckpointState(history))
    rewritten = await column(db, schema, "messages", "seq || ':' || xmin::text")
    assert len(rewritten) == 11
    assert set(written) < set(rewritten)


@pytest.mark.asyncio
async def test_each_phase_opens_a_new_transcript_segment(
    store: PostgresStore, db: psycopg.AsyncConnection[Any], schema: str
) -> None:
    cp = await store.begin(RunStart(run_id="r", kind="k"))
    await cp.save(CheckpointState((Message.user("phase 1, a"), Message.user("phase 1, b"))))
    done = (PhaseOutput("one", 1),)
    await cp.save(CheckpointState((Message.user("phase 2"),), done))
    assert await column(db, schema, "messages", "segment || ':' || seq") == ["0:0", "0:1", "1:0"]
    loaded = await store.load("r")
    assert loaded is not None
    assert loaded.state == CheckpointState((Message.user("phase 2"),), done)


@pytest.mark.asyncio
async def test_list_pages_in_code_point_order_whatever_the_database_collation(
    store: PostgresStore,
) -> None:
    ids = ["B", "a", "Z", "é", "ä", "_", "10", "9"]
    for run_id in ids:
        await store.begin(RunStart(run_id=run_id, kind="k"))
    seen: list[str] = []
    cursor = None
    while True:
        page = await store.list(limit=3, cursor=cursor)
        seen += [r.run_id for r in page.records]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == sorted(ids)


@pytest.mark.parametrize(
    ("statement", "index"),
    [
        ("interrupted", "runs_claimable_order"),
        ("claim_next", "runs_claimable_order"),
        # The reads of what a claim just took find it by its lease's expiry.
        ("claimed", "runs_claimable_order"),
        ("claimed_messages", "runs_claimable_order"),
        ("purge", "runs_terminal"),
    ],
)
@pytest.mark.asyncio
async def test_the_work_list_and_retention_can_use_their_partial_indexes(
    store: PostgresStore, db: psycopg.AsyncConnection[Any], statement: str, index: str
) -> None:
    """Each statement's conditions imply its index's predicate (waiting runs
    included), or the planner could not use the index at all."""
    await store.migrate()
    params = {
        "namespace": "ns",
        "limit": 10,
        "version": FORMAT_VERSION,
        "skip": [],
        "kinds": ["k"],
        "owner": "w",
        "lease": 30.0,
        "older_than": 60.0,
    }
    async with db.transaction(force_rollback=True):
        # A few rows make a sequential scan the cheaper plan: forbid it.
        await db.execute("SET LOCAL enable_seqscan = off")
        cursor = await db.execute(
            b"EXPLAIN " + getattr(store.database.statements, statement), params
        )
        plan = "\n".join(row[0] for row in await cursor.fetchall())
    assert f"using {index} on runs" in plan, plan
