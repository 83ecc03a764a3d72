"""How a transcript is read back: the record and the phases in one statement,
the messages as rows in a second, pipelined, in one snapshot."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from outlast.adapter import CheckpointState, Message, PhaseOutput, RunStart
from outlast_postgres import PostgresStore

AWKWARD = 'quote:" backslash:\\ braces:{} comma:, NULL lone:\udc80 nul:\u0000 emoji:🧪'


@pytest_asyncio.fixture
async def store(store_url: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(store_url)
    yield store
    await store.close()


def transcript(count: int, tag: str) -> tuple[Message, ...]:
    return tuple(Message.user(f"{tag}{i} {AWKWARD}") for i in range(count))


async def two_segments(store: PostgresStore, run_id: str, *, release: bool) -> CheckpointState:
    """A run whose first phase is done: its current segment holds only the
    messages saved since (the first phase's are kept, and never read again)."""
    cp = await store.begin(RunStart(run_id, "k"))
    await cp.save(CheckpointState(transcript(300, "first-")))
    state = CheckpointState(transcript(500, "second-"), (PhaseOutput("plan", {"n": AWKWARD}),))
    await cp.save(state)
    if release:
        await cp.release()
    return state


@pytest.mark.asyncio
async def test_load_claim_and_claim_next_read_the_current_segment_in_order(
    store: PostgresStore,
) -> None:
    state = await two_segments(store, "loaded", release=True)
    loaded = await store.load("loaded")
    assert loaded is not None and loaded.state == state
    claim = await store.claim("loaded", owner="w", lease=30)
    assert claim is not None
    assert (claim.resume.history, claim.resume.completed_phases) == (state.history, state.phases)
    await claim.checkpointer.release()
    taken = await store.claim_next(["k"], owner="w", lease=30)
    assert taken is not None and taken.record.run_id == "loaded"
    assert (taken.resume.history, taken.resume.completed_phases) == (state.history, state.phases)


@pytest.mark.asyncio
async def test_a_run_without_messages_reads_none(store: PostgresStore) -> None:
    await store.begin(RunStart("empty", "k"))
    loaded = await store.load("empty")
    assert loaded is not None and loaded.state == CheckpointState()
    assert await store.load("missing") is None


@pytest.mark.asyncio
async def test_claim_next_reads_its_own_run_by_id_when_the_claimed_condition_matches_two(
    store: PostgresStore,
) -> None:
    """The claimed runs are found by owner and lease expiry; should another
    claim of the same owner's have committed with the same expiry (the same
    instant), the messages read beside the claim are none (they could be
    either run's), and claim_next reads its own run's by id. Made to happen
    here by statements that see one more claimed run, and no messages."""
    state = await two_segments(store, "mine", release=True)
    statements = store.database.statements
    store.database.statements = dataclasses.replace(
        statements,
        claimed=b"(" + statements.claimed + b") UNION ALL (SELECT 'other', ARRAY[]::text[])",
        claimed_messages=b"SELECT %(namespace)s::text WHERE false",
    )
    taken = await store.claim_next(["k"], owner="w", lease=30)
    assert taken is not None and taken.record.run_id == "mine"
    assert (taken.resume.history, taken.resume.completed_phases) == (state.history, state.phases)
