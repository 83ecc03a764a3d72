"""delete: every writer of the deleted run is fenced, only fences stay, and a
run begun again under the id is never touched by the delete of the old one."""

from __future__ import annotations

import json
from typing import Any

import pytest
from s3_testing import s3_store, stored_objects

import outlast
from outlast.adapter import CheckpointState, LeaseLost, Message, RunStart
from outlast_s3.layout import SegmentName


def _state(*texts: str) -> CheckpointState:
    return CheckpointState(tuple(Message.user(text) for text in texts))


def _documents(endpoint: str, prefix: str) -> dict[str, Any]:
    return {key: json.loads(body) for key, body in stored_objects(endpoint, prefix).items()}


@pytest.mark.asyncio
async def test_delete_leaves_only_fences_and_every_writer_stays_fenced(
    s3_url: str, s3_endpoint: str, s3_prefix: str
) -> None:
    store = s3_store(outlast.open(s3_url))
    try:
        first = await store.begin(RunStart(run_id="r", kind="k", owner="a"))
        await first.save(_state("a", "b"))
        await first.release()
        claim = await store.claim("r", owner="b", lease=30)
        assert claim is not None
        await claim.checkpointer.save(_state("a", "b", "c"))
        assert await store.delete("r") is True
        with pytest.raises(LeaseLost, match="epoch 2 claimed the run"):
            await first.save(_state("a", "b", "zombie"))
        with pytest.raises(LeaseLost, match="the run was deleted"):
            await claim.checkpointer.save(_state("a", "b", "c"))  # nothing new: still fenced
        assert await store.load("r") is None
        assert await store.delete("r") is False
    finally:
        await store.close()
    left = _documents(s3_endpoint, f"{s3_prefix}/")
    # No state object, marker, segment or message: the two fences, kept so the
    # two writers above keep failing.
    assert sorted((d["type"], d["epoch"], d["seq"], d["cause"]) for d in left.values()) == [
        ("fence", 1, 1, "claim"),
        ("fence", 2, 1, "delete"),
    ]


@pytest.mark.asyncio
async def test_a_save_landing_before_the_deletes_fence_is_deleted_with_the_run(
    s3_url: str, s3_endpoint: str, s3_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = s3_store(outlast.open(s3_url))
    writer_store = s3_store(outlast.open(s3_url))
    try:
        writer = await writer_store.begin(RunStart(run_id="r", kind="k", owner="a"))
        await writer.save(_state("a"))
        stored = await store.load("r")
        assert stored is not None
        fence_key = store.layout.segment(
            "default", "r", stored.record.incarnation, SegmentName(1, 1)
        )
        real_put = store.objects.put
        raced: list[bool] = []

        async def late_save_then_put(key: str, body: bytes, **conditions: Any) -> str:
            if key == fence_key and not raced:
                raced.append(True)
                await writer.save(_state("a", "late"))  # takes the fence's key first
            return await real_put(key, body, **conditions)

        monkeypatch.setattr(store.objects, "put", late_save_then_put)
        assert await store.delete("r") is True
        with pytest.raises(LeaseLost, match="the run was deleted"):
            await writer.save(_state("a", "late", "after"))
    finally:
        await store.close()
        await writer_store.close()
    assert raced
    left = _documents(s3_endpoint, f"{s3_prefix}/")
    # The fence moved past the late segment, and the late segment went with the run.
    assert [(d["type"], d["epoch"], d["seq"]) for d in left.values()] == [("fence", 1, 2)]


@pytest.mark.asyncio
async def test_a_delete_whose_state_was_replaced_never_removes_the_run_begun_again(
    s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The delete read the old run's state; before its conditional DeleteObject
    # another worker deleted that run and began a new one under the same id.
    store = s3_store(outlast.open(s3_url))
    other = s3_store(outlast.open(s3_url))
    try:
        old = await store.begin(RunStart(run_id="r", kind="k", input="old", owner="a"))
        await old.save(_state("old"))
        real_delete = store.objects.delete_if_match
        begun_again: list[Any] = []

        async def replaced_meanwhile(key: str, etag: str) -> None:
            if not begun_again:
                assert await other.delete("r") is True
                fresh = await other.begin(RunStart(run_id="r", kind="k", input="new", owner="b"))
                await fresh.save(_state("new"))
                begun_again.append(fresh)
            await real_delete(key, etag)

        monkeypatch.setattr(store.objects, "delete_if_match", replaced_meanwhile)
        assert await store.delete("r") is True
        stored = await store.load("r")
        await begun_again[0].release()
        found = await store.interrupted()
    finally:
        await store.close()
        await other.close()
    assert stored is not None, "the delete of the old run removed the new one"
    assert (stored.record.input, stored.state) == ("new", _state("new"))
    assert [r.run_id for r in found] == ["r"], "the new run lost its running marker"
