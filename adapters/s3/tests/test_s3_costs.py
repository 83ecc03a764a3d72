"""Requests per operation: what the README's "Costs per save" promises.

Counted by the store (one count per S3 API call; botocore's automatic
retries of throttling/5xx would come on top and are not counted).
"""

from __future__ import annotations

import pytest
from s3_testing import s3_store

import outlast
from outlast.adapter import CheckpointState, Message, RunStart


def _history(count: int) -> tuple[Message, ...]:
    return tuple(Message.user(f"message {i}") for i in range(count))


@pytest.mark.asyncio
async def test_requests_per_operation(s3_url: str) -> None:
    store = s3_store(outlast.open(s3_url))
    costs: dict[str, int] = {}

    async def measure(name: str, operation: object) -> None:
        before = store.requests
        await operation  # type: ignore[misc]
        costs[name] = store.requests - before

    try:
        await store.begin(RunStart(run_id="warm-up", kind="k", owner="w"))
        costs["first write of a factory"] = store.requests
        before = store.requests
        checkpointer = await store.begin(RunStart(run_id="r", kind="k", owner="w"))
        costs["begin"] = store.requests - before
        for count in range(1, 20):
            await measure("save", checkpointer.save(CheckpointState(_history(count))))
            assert costs["save"] == 1, f"save {count} took {costs['save']} requests"
        await measure("save of nothing new", checkpointer.save(CheckpointState(_history(19))))
        await measure("renew", checkpointer.renew())
        await measure("release", checkpointer.release())
        await measure("load (20 segments)", store.load("r"))
        before = store.requests
        claim = await store.claim("r", owner="next", lease=30)
        costs["claim (20 segments)"] = store.requests - before
        assert claim is not None
        await measure("save after claim", claim.checkpointer.save(CheckpointState(_history(21))))
        await measure("complete", claim.checkpointer.complete("done"))
        await measure("delete (completed after a claim)", store.delete("r"))
        running = await store.begin(RunStart(run_id="d", kind="k", owner="w"))
        for count in range(1, 4):
            await running.save(CheckpointState(_history(count)))
        await measure("delete (running, 3 segments)", store.delete("d"))
        released = await store.begin(RunStart(run_id="q", kind="k", owner="w"))
        await released.save(CheckpointState(_history(1)))
        await released.release()
        await measure("quarantine (released)", store.quarantine("q", "CorruptCheckpoint: x"))
    finally:
        await store.close()
    assert costs == {
        # once per factory: probe that the endpoint honours conditional writes
        # (PUT, PUT If-None-Match, PUT If-Match, DELETE), then the begin itself
        "first write of a factory": 4 + 2,
        "begin": 2,  # running marker + state object (If-None-Match)
        "save": 1,  # one segment PUT (If-None-Match), the fencing check included
        "save of nothing new": 1,  # an empty segment: the same check, and updated_at
        "renew": 1,  # state PUT (If-Match)
        "release": 1,
        # state GET + segment LIST + 20 segment GETs (fetched in parallel)
        "load (20 segments)": 22,
        # GET state, LIST + 20 GETs (read and validate before taking the run),
        # state CAS, LIST again (segments cached), one fence PUT
        "claim (20 segments)": 25,
        "save after claim": 1,
        "complete": 2,  # state CAS + one DeleteObjects of segments and marker
        # GET state, LIST, GET the claim's fence (kept), DELETE state (If-Match),
        # DeleteObjects (the markers)
        "delete (completed after a claim)": 5,
        # GET state, LIST, GET the last segment, PUT a fence after it, DELETE
        # state (If-Match), DeleteObjects (segments and marker)
        "delete (running, 3 segments)": 6,
        # GET state, state CAS, LIST, GET the last segment, PUT a fence after it,
        # DeleteObjects (the marker)
        "quarantine (released)": 6,
    }


@pytest.mark.asyncio
async def test_compacting_save_and_fail_costs(s3_url: str) -> None:
    store = s3_store(outlast.open(s3_url, compact_after="4"))
    try:
        checkpointer = await store.begin(RunStart(run_id="r", kind="k", owner="w"))
        per_save = []
        background = []
        for count in range(1, 11):
            before = store.requests
            await checkpointer.save(CheckpointState(_history(count)))
            per_save.append(store.requests - before)
            before = store.requests
            await checkpointer.settled()
            background.append(store.requests - before)
        before = store.requests
        await checkpointer.fail("boom")
        fail_cost = store.requests - before
        loaded = await store.load("r")
    finally:
        await store.close()
    # Every save is one PUT, the save that takes a run past compact_after
    # segments too: it starts the compaction in the background, which writes
    # the compacted object, swaps the state object and deletes the folded
    # segments (one DeleteObjects) after the save returned.
    assert per_save == [1] * 10
    assert background == [0, 0, 0, 0, 3, 0, 0, 0, 3, 0]
    assert fail_cost == 2  # state CAS + one DeleteObjects of the running marker(s)
    assert loaded is not None
    assert loaded.state.history == _history(10)  # a failed run keeps its transcript


@pytest.mark.asyncio
async def test_interrupted_reads_only_the_running_index(s3_url: str) -> None:
    store = s3_store(outlast.open(s3_url))
    try:
        runs = [await store.begin(RunStart(run_id=f"r{i}", kind="k", owner="w")) for i in range(5)]
        for finished in runs[:3]:
            await finished.complete(None)
        await runs[3].release()
        before = store.requests
        found = await store.interrupted()
        cost = store.requests - before
    finally:
        await store.close()
    assert [r.run_id for r in found] == ["r3"]
    # One LIST of the running index, one GET per running run (r3, r4): the
    # finished runs are not even looked at.
    assert cost == 1 + 2


@pytest.mark.asyncio
async def test_fleet_costs(s3_url: str) -> None:
    store = s3_store(outlast.open(s3_url))
    costs: dict[str, int] = {}

    async def measure(name: str, operation: object) -> object:
        before = store.requests
        result = await operation  # type: ignore[misc]
        costs[name] = store.requests - before
        return result

    try:
        await store.submit(RunStart(run_id="warm-up", kind="other"))  # the probe
        await measure("submit", store.submit(RunStart(run_id="q1", kind="k")))
        await store.submit(RunStart(run_id="q2", kind="k"))
        # Four running markers now (warm-up, q1, q2 and this one).
        owned = await store.begin(RunStart(run_id="owned", kind="k", owner="w", lease=3600))
        claim = await measure(
            "claim_next (4 running runs, takes a queued one)",
            store.claim_next(["k"], owner="w", lease=3600),
        )
        assert claim is not None
        await measure("cancel (owned, no segments yet)", store.cancel("owned"))
        await owned.save(CheckpointState(_history(1)))
        await owned.save(CheckpointState(_history(2)))
        await measure("cancel (owned, with segments)", store.cancel("owned"))
        await measure("save (finds the note)", owned.save(CheckpointState(_history(3))))
        await measure("save (after the note)", owned.save(CheckpointState(_history(4))))
        await measure("renew (after the cancel)", owned.renew())
        await measure("cancel (queued)", store.cancel("q2"))
        released = await store.begin(RunStart(run_id="released", kind="k", owner="w"))
        await released.save(CheckpointState(_history(1)))
        await released.release()
        await measure("cancel (released, with segments)", store.cancel("released"))
    finally:
        await store.close()
    assert costs == {
        "submit": 2,  # running marker + state object (If-None-Match), as begin
        # LIST the running index, GET each running run's state (in parallel),
        # then the claim: GET state, state CAS (a queued run has no progress)
        "claim_next (4 running runs, takes a queued one)": 1 + 4 + 2,
        # GET state, state CAS, LIST the epoch's segments, PUT the cancel note
        "cancel (owned, no segments yet)": 4,
        # ... and GET the epoch's last segment (a note never follows a fence)
        "cancel (owned, with segments)": 5,
        # its PUT finds the note (412), GET it, PUT at the next key: once
        "save (finds the note)": 3,
        "save (after the note)": 1,
        # its If-Match fails on the cancel's swap: GET the state, PUT again
        "renew (after the cancel)": 3,
        # GET state, state CAS (failed), DeleteObjects (the marker)
        "cancel (queued)": 3,
        # GET state, state CAS, LIST, GET the last segment, PUT a fence after
        # it, DeleteObjects (the marker): as a quarantine
        "cancel (released, with segments)": 6,
    }
