"""The fleet on S3: submit, claim_next (and its spread), cancel, and the cancel
note that tells an owner's next save about a cancel without costing saves a
request."""

from __future__ import annotations

import asyncio
import json
import random
import time

import pytest
from s3_testing import corrupt_record, s3_store, stored_objects

import outlast
from outlast.adapter import (
    CheckpointState,
    LeaseLost,
    Message,
    RunStart,
    RunStatus,
    StoreError,
    transitions,
)
from outlast_s3 import S3Store
from outlast_s3.fences import Fences
from outlast_s3.layout import SegmentName
from outlast_s3.spread import ClaimSpread


def _state(*texts: str) -> CheckpointState:
    return CheckpointState(tuple(Message.user(text) for text in texts))


def _texts(state: CheckpointState) -> list[str]:
    return [m.text for m in state.history]


def _sequence(endpoint: str, prefix: str) -> dict[str, str]:
    """The run's segment folder: ``<epoch>-<seq>`` -> the object's type."""
    return {
        key.rsplit("/", 1)[1].removesuffix(".json"): json.loads(body)["type"]
        for key, body in stored_objects(endpoint, f"{prefix}/").items()
        if "/seg/" in key
    }


def _at(epoch: int, seq: int) -> str:
    return str(SegmentName(epoch, seq)).removesuffix(".json")


@pytest.mark.asyncio
async def test_a_save_steps_over_the_cancel_note_and_nothing_is_lost(
    s3_url: str, s3_endpoint: str, s3_prefix: str
) -> None:
    """The cancel leaves a note at the owner's next key; the owner's save
    reports the request and writes one further; readers and the next claimer
    read the transcript whole, and the claim fences after the note."""
    store = s3_store(outlast.open(s3_url))
    try:
        owner = await store.begin(RunStart(run_id="r", kind="k", owner="a", lease=3600))
        assert await owner.save(_state("a", "b")) is False
        asked = await store.cancel("r")
        after_note = _sequence(s3_endpoint, s3_prefix)
        assert await owner.save(_state("a", "b", "c")) is True
        assert await owner.save(_state("a", "b", "c", "d")) is True  # it stays asked
        loaded = await store.load("r")
        await owner.release()
        claim = await store.claim("r", owner="b", lease=30)
        assert claim is not None
        with pytest.raises(LeaseLost, match="epoch 2 claimed the run"):
            await owner.save(_state("a", "b", "c", "d", "zombie"))
        assert await claim.checkpointer.save(_state("a", "b", "c", "d", "e")) is True
        await claim.checkpointer.fail(transitions.CANCELLED)
        final = await store.load("r")
    finally:
        await store.close()
    assert (asked.status, asked.cancel_requested, asked.epoch) == (RunStatus.RUNNING, True, 1)
    assert after_note == {_at(1, 0): "segment", _at(1, 1): "cancel-request"}
    assert loaded is not None and _texts(loaded.state) == ["a", "b", "c", "d"]
    assert [m.text for m in claim.resume.history] == ["a", "b", "c", "d"]
    assert _sequence(s3_endpoint, s3_prefix) == {
        _at(1, 0): "segment",
        _at(1, 1): "cancel-request",
        _at(1, 2): "segment",
        _at(1, 3): "segment",
        _at(1, 4): "fence",
        _at(2, 0): "segment",
    }
    assert final is not None and final.record.error == transitions.CANCELLED
    assert _texts(final.state) == ["a", "b", "c", "d", "e"]


@pytest.mark.asyncio
async def test_compaction_folds_a_cancel_note_and_complete_removes_it(
    s3_endpoint: str, s3_prefix: str, s3_url: str
) -> None:
    store = s3_store(outlast.open(s3_url, compact_after="3"))
    try:
        owner = await store.begin(RunStart(run_id="r", kind="k", owner="a", lease=3600))
        await owner.save(_state("a"))
        await store.cancel("r")
        for count in range(2, 6):  # the first of them steps over the note
            assert await owner.save(_state(*"abcde"[:count])) is True
        await owner.settled()  # the compaction the fifth segment started
        loaded = await store.load("r")
        compacted = _sequence(s3_endpoint, s3_prefix)
        await owner.complete("done")
        left = _sequence(s3_endpoint, s3_prefix)
    finally:
        await store.close()
    assert loaded is not None and _texts(loaded.state) == list("abcde")
    assert "cancel-request" not in compacted.values()
    assert left == {}


@pytest.mark.asyncio
async def test_a_cancel_note_never_follows_a_fence_nor_another_note(
    s3_url: str, s3_endpoint: str, s3_prefix: str
) -> None:
    """A note goes only where the owner of that epoch saves next: not after
    a fence (that writer is stopped: the fence must stay the epoch's last
    key), and not after a note it has not saved past yet."""
    store = s3_store(outlast.open(s3_url))
    fences = Fences(store.objects, store.layout)
    try:
        owner = await store.begin(RunStart(run_id="r", kind="k", owner="a", lease=3600))
        await owner.save(_state("a"))
        asked = await store.cancel("r")
        assert await fences.ask_to_cancel(asked, time.time()) is False  # a note is there
        await owner.save(_state("a", "b"))  # steps over it
        stored = await store.load("r")
        assert stored is not None
        old_epoch = stored.record
        await owner.release()
        assert await store.claim("r", owner="b", lease=3600) is not None
        assert await fences.ask_to_cancel(old_epoch, time.time()) is False
    finally:
        await store.close()
    assert _sequence(s3_endpoint, s3_prefix) == {
        _at(1, 0): "segment",
        _at(1, 1): "cancel-request",
        _at(1, 2): "segment",
        _at(1, 3): "fence",
    }


@pytest.mark.asyncio
async def test_without_its_note_a_cancel_reaches_the_owner_at_its_renewal(
    s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A canceller that could not leave the note (here: it fails) has still
    stored the request: the owner's next renewal reads it, and from then on
    its saves report it too."""
    store = s3_store(outlast.open(s3_url))

    async def unreachable(*args: object) -> bool:
        raise StoreError("S3 is down for the note")

    try:
        owner = await store.begin(RunStart(run_id="r", kind="k", owner="a", lease=3600))
        monkeypatch.setattr(Fences, "ask_to_cancel", unreachable)
        asked = await store.cancel("r")
        unseen = await owner.save(_state("a"))
        renewed = await owner.renew()
        seen = await owner.save(_state("a", "b"))
    finally:
        await store.close()
    assert asked.cancel_requested is True
    assert (unseen, renewed, seen) == (False, True, True)


@pytest.mark.asyncio
async def test_cancel_of_a_released_run_fences_its_writer_saying_why(s3_url: str) -> None:
    store = s3_store(outlast.open(s3_url))
    try:
        writer = await store.begin(RunStart(run_id="r", kind="k", owner="a"))
        await writer.save(_state("a"))
        await writer.release()
        cancelled = await store.cancel("r")
        with pytest.raises(LeaseLost, match="the run was cancelled"):
            await writer.save(_state("a", "b"))
        found = await store.interrupted()
        stored = await store.load("r")
    finally:
        await store.close()
    assert (cancelled.status, cancelled.epoch, cancelled.error) == (
        RunStatus.FAILED,
        2,
        transitions.CANCELLED,
    )
    assert found == []
    assert stored is not None and _texts(stored.state) == ["a"]


@pytest.mark.asyncio
async def test_submit_after_a_delete_is_claimed_as_the_new_run(s3_url: str) -> None:
    """A submitted run is deleted and submitted again under its id: the new
    one (its own marker and incarnation) is what claim_next hands out."""
    store = s3_store(outlast.open(s3_url))
    try:
        await store.submit(RunStart(run_id="r", kind="k", input="old"))
        assert await store.delete("r") is True
        await store.submit(RunStart(run_id="r", kind="k", input="new"))
        claim = await store.claim_next(["k"], owner="w", lease=30)
        again = await store.claim_next(["k"], owner="w", lease=30)
    finally:
        await store.close()
    assert claim is not None and claim.record.input == "new"
    assert (claim.record.epoch, claim.record.attempts, claim.record.crashes) == (1, 1, 0)
    assert again is None


@pytest.mark.asyncio
async def test_claim_next_quarantines_a_damaged_state_and_skips_a_newer_one(
    s3_url: str,
) -> None:
    store = s3_store(outlast.open(s3_url))
    try:
        await store.submit(RunStart(run_id="a-damaged", kind="k"))
        await corrupt_record(store, "a-damaged", "default")
        newer = store.layout.state("default", "b-newer")
        body = json.dumps({"v": 99, "type": "state", "status": "running"}).encode()
        await store.objects.put(store.layout.running_marker("default", "b-newer", "x"), b"{}")
        await store.objects.put(newer, body)
        await store.submit(RunStart(run_id="c-healthy", kind="k"))
        claim = await store.claim_next(["k"], owner="w", lease=30)
        damaged = await store.load("a-damaged")
        left_alone = await store.objects.get(newer)
    finally:
        await store.close()
    assert claim is not None and claim.record.run_id == "c-healthy"
    assert damaged is not None and damaged.record.status is RunStatus.FAILED
    assert left_alone is not None and left_alone.body == body


@pytest.mark.asyncio
async def test_many_workers_draining_one_bucket_take_each_run_once(s3_url: str) -> None:
    """Workers on their own factories drain the same queue at once, each
    spreading its starts as it loses claims: every run is claimed once."""
    stores: list[S3Store] = [s3_store(outlast.open(s3_url)) for _ in range(6)]
    run_ids = [f"q-{i:02d}" for i in range(24)]
    try:
        for run_id in run_ids:
            await stores[0].submit(RunStart(run_id=run_id, kind="k"))

        async def drain(store: S3Store) -> list[str]:
            taken = []
            while claim := await store.claim_next(["k"], owner="w", lease=3600):
                taken.append(claim.record.run_id)
            return taken

        claimed = [r for taken in await asyncio.gather(*map(drain, stores)) for r in taken]
    finally:
        for store in stores:
            await store.close()
    assert sorted(claimed) == run_ids


def test_the_spread_keeps_oldest_first_until_claims_are_lost() -> None:
    spread = ClaimSpread(limit=4, rng=random.Random(7))  # noqa: S311 - a seeded test
    candidates = list(range(10))
    assert all(spread.order(candidates) == candidates for _ in range(20))
    spread.lost()
    spread.lost()
    spread.lost()
    assert spread.window == 4  # doubled per loss, up to the limit
    starts = {spread.order(candidates)[0] for _ in range(200)}
    assert starts == {0, 1, 2, 3}
    assert sorted(spread.order(candidates)) == candidates  # every candidate, once
    order = spread.order(candidates)
    assert order == [*candidates[order[0] :], *candidates[: order[0]]]  # wraps round
    spread.won(first_try=False)
    assert spread.window == 4
    spread.won(first_try=True)
    spread.won(first_try=True)
    spread.won(first_try=True)
    assert spread.window == 1
    assert spread.order([]) == []
