"""Compaction off the save path: it runs in the background after the save
that crossed ``compact_after`` returned, one at a time, and neither its
failure, nor a crash at any point of it, nor a claim that fences its writer
mid-way can lose or damage what a reader or the new owner needs.

Deterministic: compaction steps are held (an event) or crashed (an exception
no handler catches, so nothing after it runs, as when the process dies) by
wrapping the store's object client; faults on the wire come from the
loopback proxy. No timing: every step is awaited or counted.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from s3_testing import BUCKET, Fault, FaultProxy, admin_client, s3_store

import outlast
from outlast.adapter import (
    CheckpointState,
    LeaseLost,
    Message,
    RunStart,
)
from outlast_s3 import S3Checkpointer, S3Store
from outlast_s3.objects import PreconditionFailed

Put = Callable[..., Awaitable[str]]
Delete = Callable[..., Awaitable[None]]


class Crash(BaseException):
    """The process died here: no handler of the adapter catches it."""


def _history(count: int) -> tuple[Message, ...]:
    return tuple(Message.user(f"m{i} ✓") for i in range(count))


def _state(count: int) -> CheckpointState:
    return CheckpointState(_history(count))


def _objects(endpoint: str, prefix: str) -> dict[str, dict[str, Any]]:
    """Every object under ``prefix``: key -> parsed JSON body."""
    client = admin_client(endpoint)
    try:
        found = {}
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", ()):
                body = client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
                found[item["Key"]] = json.loads(body)
        return found
    finally:
        client.close()


def _kinds(endpoint: str, prefix: str) -> dict[str, list[str]]:
    """The run's objects by kind: ``compact``, ``fence``, ``segment``, ``other``."""
    kinds: dict[str, list[str]] = {"compact": [], "fence": [], "segment": [], "other": []}
    for key, doc in sorted(_objects(endpoint, f"{prefix}/").items()):
        if "/compact/" in key:
            kinds["compact"].append(key)
        elif "/seg/" in key:
            kinds["fence" if doc["type"] == "fence" else "segment"].append(key)
        else:
            kinds["other"].append(key)
    return kinds


def _compacting(key: str) -> bool:
    return "/compact/" in key


async def _begin(store: S3Store, *, lease: float = 30.0) -> S3Checkpointer:
    return await store.begin(
        RunStart(run_id=f"run-{uuid.uuid4().hex[:8]}", kind="k", owner="w", lease=lease)
    )


HANG = 60.0
"""Seconds after which an await that should have returned is a hang."""

EXPIRED = 1e-6
"""A lease that has expired by the time anyone else looks: the run of a
worker that died is claimable at once, without a release (which a dead
worker never sends)."""


@pytest.mark.asyncio
async def test_no_save_waits_for_a_compaction_and_only_one_runs_at_a_time(
    s3_url: str, s3_endpoint: str, s3_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = s3_store(outlast.open(s3_url, compact_after="4"))
    real_put: Put = store.objects.put
    gate = asyncio.Event()
    compactions: list[str] = []

    async def held_put(key: str, body: bytes, **conditions: Any) -> str:
        if _compacting(key):
            compactions.append(key)
            await gate.wait()  # the compaction's first write never finishes until told
        return await real_put(key, body, **conditions)

    monkeypatch.setattr(store.objects, "put", held_put)
    try:
        checkpointer = await _begin(store)
        per_save = []
        for count in range(1, 16):
            before = store.requests
            # A save that waited for the held compaction would never return:
            # the bound turns that hang into a failure (it is no timing test).
            await asyncio.wait_for(checkpointer.save(_state(count)), HANG)
            per_save.append(store.requests - before)
        held = list(compactions)
        gate.set()
        before = store.requests
        await checkpointer.settled()
        background = store.requests - before
        await checkpointer.save(_state(16))  # 12 segments since: the next one starts
        await checkpointer.settled()
        loaded = await store.load(checkpointer.run_id)
    finally:
        await store.close()
    # Every save, those past the line included, was its one PUT and returned
    # while the compaction it started was stuck on its first write.
    assert per_save == [1] * 15
    # Saves 6 to 15 crossed the line again, but one compaction was in flight.
    assert len(held) == 1 and held[0].endswith("0000000001-0000000004.json")
    assert background == 3  # PUT compacted, swap the state, one DeleteObjects
    assert len(compactions) == 2 and compactions[1].endswith("0000000001-0000000015.json")
    assert loaded is not None and loaded.state == _state(16)
    kinds = _kinds(s3_endpoint, s3_prefix)
    assert kinds["compact"] == [compactions[1]]  # the first one was replaced


@pytest.mark.asyncio
async def test_a_crash_before_the_swap_leaves_a_run_that_loads_and_resumes_exactly(
    s3_url: str, s3_endpoint: str, s3_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dying = s3_store(outlast.open(s3_url, compact_after="4"))
    other = s3_store(outlast.open(s3_url, compact_after="4"))
    real_put: Put = dying.objects.put
    written: list[str] = []

    async def crash_at_the_swap(key: str, body: bytes, **conditions: Any) -> str:
        if written and key.endswith("/state.json"):
            raise Crash  # the compacted object is written, the state not swapped
        etag = await real_put(key, body, **conditions)
        if _compacting(key):
            written.append(key)
        return etag

    monkeypatch.setattr(dying.objects, "put", crash_at_the_swap)
    try:
        checkpointer = await _begin(dying, lease=EXPIRED)
        for count in range(1, 7):
            await checkpointer.save(_state(count))
        await checkpointer.settled()
        orphan = _kinds(s3_endpoint, s3_prefix)["compact"]
        loaded = await other.load(checkpointer.run_id)
        claim = await other.claim(checkpointer.run_id, owner="next", lease=30)
        assert claim is not None
        for count in range(7, 13):  # enough segments for the new owner to compact
            await claim.checkpointer.save(_state(count))
        await claim.checkpointer.settled()  # type: ignore[attr-defined]
        reloaded = await other.load(checkpointer.run_id)
        with pytest.raises(LeaseLost):
            await checkpointer.save(_state(7))
    finally:
        await dying.close()
        await other.close()
    assert orphan == written  # the crash left a compacted object nothing points at
    assert loaded is not None and loaded.state == _state(6)
    assert claim.resume.history == _history(6)
    assert reloaded is not None and reloaded.state == _state(12)
    kinds = _kinds(s3_endpoint, s3_prefix)
    # The new owner's compaction removed the orphan with its own folded segments.
    assert orphan[0] not in kinds["compact"] and len(kinds["compact"]) == 1


@pytest.mark.asyncio
async def test_a_crash_after_the_swap_leaves_a_half_compacted_run_that_is_cleaned_up(
    s3_url: str, s3_endpoint: str, s3_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = s3_store(outlast.open(s3_url, compact_after="4"))
    dying = s3_store(outlast.open(s3_url, compact_after="4"))
    other = s3_store(outlast.open(s3_url, compact_after="4"))

    real_delete: Delete = dying.objects.delete

    async def crash_at_the_deletes(keys: list[str]) -> None:
        if any("/seg/" in key for key in keys):
            raise Crash  # the state points at the compacted object; nothing deleted yet
        await real_delete(keys)

    monkeypatch.setattr(dying.objects, "delete", crash_at_the_deletes)
    try:
        # Epoch 1 saves twice and is released; epoch 2 claims it (a fence
        # closes epoch 1), saves past the line and dies deleting what it folded.
        begun = await _begin(first)
        run_id = begun.run_id
        for count in (1, 2):
            await begun.save(_state(count))
        await begun.release()
        taken = await dying.claim(run_id, owner="dying", lease=EXPIRED)
        assert taken is not None
        for count in range(3, 6):  # the fifth segment starts the compaction
            await taken.checkpointer.save(_state(count))
            await taken.checkpointer.settled()  # type: ignore[attr-defined]
        half = _kinds(s3_endpoint, s3_prefix)
        loaded = await other.load(run_id)
        claim = await other.claim(run_id, owner="next", lease=30)
        assert claim is not None
        await claim.checkpointer.save(_state(6))
        await claim.checkpointer.complete("done")
    finally:
        await first.close()
        await dying.close()
        await other.close()
    assert len(half["compact"]) == 1 and len(half["fence"]) == 1
    assert len(half["segment"]) == 5  # 2 + 3 segments, the folded ones still there
    assert loaded is not None and loaded.state == _state(5)
    assert claim.resume.history == _history(5)
    left = _kinds(s3_endpoint, s3_prefix)
    # complete removed the compacted object, the folded segments the crash
    # left and its own; the fences of both superseded epochs stay.
    assert left["compact"] == [] and left["segment"] == []
    assert len(left["fence"]) == 2
    assert [key.rsplit("/", 1)[1] for key in left["other"]] == ["state.json"]


@pytest.mark.asyncio
async def test_a_fenced_writers_compaction_leaves_the_new_owner_intact(
    s3_url: str, s3_endpoint: str, s3_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    zombie_store = s3_store(outlast.open(s3_url, compact_after="4"))
    owner_store = s3_store(outlast.open(s3_url, compact_after="4"))
    real_put: Put = zombie_store.objects.put
    gate = asyncio.Event()
    written: list[str] = []

    async def held_put(key: str, body: bytes, **conditions: Any) -> str:
        if _compacting(key):
            await gate.wait()
            written.append(key)
        return await real_put(key, body, **conditions)

    monkeypatch.setattr(zombie_store.objects, "put", held_put)
    try:
        zombie = await _begin(zombie_store, lease=EXPIRED)
        for count in range(1, 6):  # the fifth starts a compaction, held
            await zombie.save(_state(count))
        claim = await owner_store.claim(zombie.run_id, owner="next", lease=30)
        assert claim is not None
        for count in range(6, 16):  # the new owner compacts too, deleting epoch 1's segments
            await claim.checkpointer.save(_state(count))
            await claim.checkpointer.settled()  # type: ignore[attr-defined]
        before = _kinds(s3_endpoint, s3_prefix)
        gate.set()  # the zombie's compaction goes on: writes, fails its swap
        await zombie.settled()
        after = _kinds(s3_endpoint, s3_prefix)
        loaded = await owner_store.load(zombie.run_id)
        with pytest.raises(LeaseLost):
            await zombie.save(_state(6))
        await claim.checkpointer.save(_state(16))
        reloaded = await owner_store.load(zombie.run_id)
    finally:
        await zombie_store.close()
        await owner_store.close()
    # Nothing of the new owner's changed; the zombie's compacted object is gone.
    assert len(written) == 1 and written[0].endswith("/compact/0000000001-0000000004.json")
    assert after == before
    assert all("/compact/0000000001-" not in key for key in after["compact"])
    assert loaded is not None and loaded.state == _state(15)
    assert reloaded is not None and reloaded.state == _state(16)


@pytest.mark.asyncio
async def test_a_fenced_writer_whose_swap_landed_unseen_keeps_the_claimers_compaction(
    s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The zombie's swap lands but its answer is lost; before its retry reads
    the state, a claimer took the run, carrying the zombie's compacted object
    over as its own base. The zombie finds the run lost: it must not delete
    the compacted object the claimer's state points at."""
    zombie_store = s3_store(outlast.open(s3_url, compact_after="4"))
    owner_store = s3_store(outlast.open(s3_url, compact_after="4"))
    real_put: Put = zombie_store.objects.put
    claims: list[Any] = []

    async def swap_then_lose_the_answer(key: str, body: bytes, **conditions: Any) -> str:
        etag = await real_put(key, body, **conditions)
        if key.endswith("/state.json") and b"/compact/" in body and not claims:
            claims.append(await owner_store.claim(zombie.run_id, owner="next", lease=30))
            raise PreconditionFailed("412")  # what the retry of a landed swap gets
        return etag

    monkeypatch.setattr(zombie_store.objects, "put", swap_then_lose_the_answer)
    try:
        zombie = await _begin(zombie_store, lease=EXPIRED)
        for count in range(1, 6):
            await zombie.save(_state(count))
        await zombie.settled()
        claim = claims[0]
        assert claim is not None
        loaded = await owner_store.load(zombie.run_id)
        await claim.checkpointer.save(_state(6))
        reloaded = await owner_store.load(zombie.run_id)
    finally:
        await zombie_store.close()
        await owner_store.close()
    assert claim.resume.history == _history(5)
    assert loaded is not None and loaded.state == _state(5)
    assert reloaded is not None and reloaded.state == _state(6)


@pytest.mark.asyncio
async def test_a_swap_with_an_unknown_outcome_keeps_its_compacted_object(
    proxied_url: str, fault_proxy: FaultProxy, s3_endpoint: str, s3_prefix: str
) -> None:
    """The compaction's swap lands but the answer is an error botocore does
    not retry: the state object may point at the compacted object, so it stays
    (the run still loads); the next compaction's swap replaces it for sure and
    removes it."""
    store = s3_store(outlast.open(proxied_url, compact_after="4"))
    try:
        checkpointer = await _begin(store)
        for count in range(1, 5):
            await checkpointer.save(_state(count))
        lost = fault_proxy.inject(
            Fault("PUT", "/state.json", 403, "AccessDenied", times=1, forward=True)
        )
        await checkpointer.save(_state(5))
        await checkpointer.settled()
        first = _kinds(s3_endpoint, s3_prefix)["compact"]
        loaded = await store.load(checkpointer.run_id)
        await checkpointer.save(_state(6))  # one save later (the retry gap): again
        await checkpointer.settled()
        second = _kinds(s3_endpoint, s3_prefix)["compact"]
        for count in range(7, 11):  # and once more at the fifth segment since
            await checkpointer.save(_state(count))
            await checkpointer.settled()
        reloaded = await store.load(checkpointer.run_id)
        await checkpointer.renew()  # its view of the state object is right again
    finally:
        await store.close()
    assert lost.injected == 1
    assert [key.rsplit("/", 1)[1] for key in first] == ["0000000001-0000000004.json"]
    assert loaded is not None and loaded.state == _state(5)
    # The retry's swap replaced the state object that pointed at it, for sure.
    assert [key.rsplit("/", 1)[1] for key in second] == ["0000000001-0000000005.json"]
    assert reloaded is not None and reloaded.state == _state(10)
    assert _kinds(s3_endpoint, s3_prefix)["compact"] == [
        first[0].replace("0000000001-0000000004", "0000000001-0000000009")
    ]


@pytest.mark.asyncio
async def test_a_failed_compaction_costs_no_save_and_is_tried_again_later(
    proxied_url: str, fault_proxy: FaultProxy, s3_endpoint: str, s3_prefix: str
) -> None:
    store = s3_store(outlast.open(proxied_url, compact_after="4"))
    try:
        checkpointer = await _begin(store)
        denied = fault_proxy.inject(Fault("PUT", "/compact/", 403, "AccessDenied", times=1))
        per_save = []
        for count in range(1, 9):
            before = store.requests
            await checkpointer.save(_state(count))
            per_save.append(store.requests - before)
            await checkpointer.settled()
        loaded = await store.load(checkpointer.run_id)
    finally:
        await store.close()
    assert per_save == [1] * 8
    # Save 5 started one that was refused; save 6 (one save later: the retry
    # gap of compact_after 4) started the one that landed.
    assert denied.injected == 1 and denied.hits == 2
    assert loaded is not None and loaded.state == _state(8)
    kinds = _kinds(s3_endpoint, s3_prefix)
    assert [k.rsplit("/", 1)[1] for k in kinds["compact"]] == ["0000000001-0000000005.json"]


@pytest.mark.asyncio
async def test_complete_with_a_compaction_in_flight_leaves_nothing_behind(
    s3_url: str, s3_endpoint: str, s3_prefix: str
) -> None:
    store = s3_store(outlast.open(s3_url, compact_after="4"))
    try:
        checkpointer = await _begin(store)
        for count in range(1, 6):  # the fifth starts a compaction
            await checkpointer.save(_state(count))
        await checkpointer.complete("done")  # no settled() before it
        loaded = await store.load(checkpointer.run_id)
    finally:
        await store.close()
    assert loaded is not None and loaded.record.result == "done"
    kinds = _kinds(s3_endpoint, s3_prefix)
    assert kinds["compact"] == [] and kinds["segment"] == [] and kinds["fence"] == []
    assert [key.rsplit("/", 1)[1] for key in kinds["other"]] == ["state.json"]


@pytest.mark.asyncio
async def test_close_lets_a_compaction_in_flight_finish(
    s3_url: str, s3_endpoint: str, s3_prefix: str
) -> None:
    store = s3_store(outlast.open(s3_url, compact_after="4"))
    reader = outlast.open(s3_url)
    try:
        checkpointer = await _begin(store)
        for count in range(1, 6):
            await checkpointer.save(_state(count))
    finally:
        await store.close()  # the compaction the fifth save started finishes first
    try:
        loaded = await reader.load(checkpointer.run_id)
    finally:
        await reader.close()
    assert loaded is not None and loaded.state == _state(5)
    kinds = _kinds(s3_endpoint, s3_prefix)
    assert len(kinds["compact"]) == 1 and len(kinds["segment"]) == 1  # the one at `through`


@pytest.mark.asyncio
async def test_a_fenced_writer_never_starts_a_compaction_after_its_save_is_refused(
    s3_url: str, s3_endpoint: str, s3_prefix: str
) -> None:
    first = s3_store(outlast.open(s3_url, compact_after="4"))
    second = s3_store(outlast.open(s3_url, compact_after="4"))
    try:
        zombie = await _begin(first, lease=EXPIRED)
        for count in range(1, 5):
            await zombie.save(_state(count))
        claim = await second.claim(zombie.run_id, owner="next", lease=30)
        assert claim is not None
        with pytest.raises(LeaseLost):
            await zombie.save(_state(5))  # the fifth segment would have compacted
        await zombie.settled()
    finally:
        await first.close()
        await second.close()
    assert _kinds(s3_endpoint, s3_prefix)["compact"] == []
