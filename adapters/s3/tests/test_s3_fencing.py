"""Conditional writes: a claim fences the old epoch, and a fenced writer's
segment write fails its If-None-Match and leaves nothing that counts."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from s3_testing import BUCKET, admin_client, s3_store

import outlast
from outlast.adapter import CheckpointState, LeaseLost, Message, RunExists, RunStart
from outlast_s3 import S3Checkpointer, S3Store
from outlast_s3.layout import SegmentName


def _messages(*texts: str) -> tuple[Message, ...]:
    return tuple(Message.user(text) for text in texts)


def _objects(endpoint: str, prefix: str) -> dict[str, Any]:
    """Every object under ``prefix``: key -> parsed JSON body."""
    client = admin_client(endpoint)
    try:
        found = {}
        listing = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        for item in listing.get("Contents", ()):
            body = client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
            found[item["Key"]] = json.loads(body)
        return found
    finally:
        client.close()


async def _begun(store: S3Store, *texts: str) -> S3Checkpointer:
    checkpointer = await store.begin(
        RunStart(run_id=f"run-{uuid.uuid4().hex[:8]}", kind="k", owner="first")
    )
    if texts:
        await checkpointer.save(CheckpointState(_messages(*texts)))
    return checkpointer


@pytest.mark.asyncio
async def test_fenced_writer_hits_the_fence_and_writes_nothing(
    s3_url: str, s3_endpoint: str, s3_prefix: str
) -> None:
    first = s3_store(outlast.open(s3_url))
    second = s3_store(outlast.open(s3_url))
    try:
        old = await _begun(first, "a", "b")
        await old.release()
        claim = await second.claim(old.run_id, owner="second", lease=30)
        assert claim is not None
        with pytest.raises(LeaseLost):
            await old.save(CheckpointState(_messages("a", "b", "zombie")))
        await claim.checkpointer.save(CheckpointState(_messages("a", "b", "new owner")))
        loaded = await second.load(old.run_id)
    finally:
        await first.close()
        await second.close()
    assert loaded is not None
    assert [m.text for m in loaded.state.history] == ["a", "b", "new owner"]
    segments = {
        key.rsplit("/", 1)[1]: doc
        for key, doc in _objects(s3_endpoint, f"{s3_prefix}/").items()
        if "/seg/" in key
    }
    # The zombie's next key (epoch 1, seq 1) holds the claimer's fence.
    assert segments[str(SegmentName(1, 1))]["type"] == "fence"
    assert segments[str(SegmentName(1, 1))]["by_epoch"] == 2
    assert all("zombie" not in json.dumps(doc) for doc in segments.values())


@pytest.mark.asyncio
async def test_segment_landing_before_the_fence_counts_and_the_next_is_fenced(
    s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race a single PUT per save must survive: the old owner's segment
    # lands after the claimer took the state object but before its fence.
    first = s3_store(outlast.open(s3_url))
    second = s3_store(outlast.open(s3_url))
    try:
        old = await _begun(first, "a")
        await old.release()
        stored = await first.load(old.run_id)
        assert stored is not None
        # The claimer's first fence goes where the old owner's next segment would.
        fence_key = second.layout.segment(
            "default", old.run_id, stored.record.incarnation, SegmentName(1, 1)
        )
        real_put = second.objects.put
        raced: list[bool] = []

        async def late_save_then_put(key: str, body: bytes, **conditions: Any) -> str:
            if key == fence_key and not raced:
                raced.append(True)
                await old.save(CheckpointState(_messages("a", "late")))
            return await real_put(key, body, **conditions)

        monkeypatch.setattr(second.objects, "put", late_save_then_put)
        claim = await second.claim(old.run_id, owner="second", lease=30)
        assert claim is not None
        with pytest.raises(LeaseLost):
            await old.save(CheckpointState(_messages("a", "late", "too late")))
    finally:
        await first.close()
        await second.close()
    assert raced
    # The late save returned success, so the claimer resumes with it.
    assert [m.text for m in claim.resume.history] == ["a", "late"]


@pytest.mark.asyncio
async def test_fenced_writer_cannot_change_the_state_object(s3_url: str) -> None:
    first = s3_store(outlast.open(s3_url))
    second = s3_store(outlast.open(s3_url))
    try:
        old = await _begun(first, "a")
        await old.release()
        claim = await second.claim(old.run_id, owner="second", lease=30)
        assert claim is not None
        for write in (old.renew(), old.release(), old.fail("zombie"), old.complete("zombie")):
            with pytest.raises(LeaseLost):
                await write
        loaded = await second.load(old.run_id)
    finally:
        await first.close()
        await second.close()
    assert loaded is not None
    assert loaded.record.owner == "second"
    assert loaded.record.epoch == 2
    assert loaded.record.error is None and loaded.record.result is None


@pytest.mark.asyncio
async def test_second_claim_fences_every_older_epoch(s3_url: str) -> None:
    stores = [s3_store(outlast.open(s3_url)) for _ in range(3)]
    try:
        first = await _begun(stores[0], "a")
        await first.release()
        claim2 = await stores[1].claim(first.run_id, owner="2", lease=30)
        assert claim2 is not None
        await claim2.checkpointer.save(CheckpointState(_messages("a", "b")))
        await claim2.checkpointer.release()
        claim3 = await stores[2].claim(first.run_id, owner="3", lease=30)
        assert claim3 is not None
        for zombie, texts in ((first, ("a", "x")), (claim2.checkpointer, ("a", "b", "y"))):
            with pytest.raises(LeaseLost):
                await zombie.save(CheckpointState(_messages(*texts)))
        loaded = await stores[2].load(first.run_id)
    finally:
        for store in stores:
            await store.close()
    assert [m.text for m in claim3.resume.history] == ["a", "b"]
    assert loaded is not None
    assert [m.text for m in loaded.state.history] == ["a", "b"]
    assert loaded.record.attempts == 3


@pytest.mark.asyncio
async def test_begin_of_an_existing_run_is_a_conditional_write_conflict(s3_url: str) -> None:
    store = s3_store(outlast.open(s3_url))
    try:
        run = await _begun(store)
        with pytest.raises(RunExists):
            await store.begin(RunStart(run_id=run.run_id, kind="k", owner="other"))
        loaded = await store.load(run.run_id)
        markers = await store.objects.list_keys(store.layout.running_index("default"))
    finally:
        await store.close()
    assert loaded is not None
    assert loaded.record.owner == "first"
    # The losing begin removed the marker it wrote (its own incarnation's key).
    assert markers == [
        store.layout.running_marker("default", run.run_id, loaded.record.incarnation)
    ]


@pytest.mark.asyncio
async def test_a_zombie_of_a_deleted_and_begun_again_run_is_fenced(s3_url: str) -> None:
    store = s3_store(outlast.open(s3_url))
    try:
        zombie = await _begun(store, "old")
        assert await store.delete(zombie.run_id)
        fresh = await store.begin(RunStart(run_id=zombie.run_id, kind="k", owner="fresh"))
        # The delete fenced the old incarnation where its next segment would go.
        with pytest.raises(LeaseLost, match="the run was deleted"):
            await zombie.save(CheckpointState(_messages("old", "zombie")))
        await fresh.save(CheckpointState(_messages("fresh")))
        # Same run id, same epoch 1: the record's incarnation tells them apart.
        for write in (zombie.renew(), zombie.complete("zombie")):
            with pytest.raises(LeaseLost, match="deleted and begun again"):
                await write
        loaded = await store.load(zombie.run_id)
    finally:
        await store.close()
    assert loaded is not None
    assert [m.text for m in loaded.state.history] == ["fresh"]
    assert (loaded.record.owner, loaded.record.status) == ("fresh", "running")
