"""Damaged and foreign state objects: quarantined (a stub keeps the damaged
bytes beside it), or, for another format version, left alone; and runs
written by outlast-s3 0.1 are still found, claimed and finished."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from s3_testing import DAMAGE, corrupt_message, corrupt_record, s3_store, stored_objects

import outlast
from outlast.adapter import (
    CheckpointState,
    CorruptCheckpoint,
    LeaseLost,
    Message,
    RunStart,
    RunStatus,
)
from outlast_s3.layout import SegmentName


def _state(*texts: str) -> CheckpointState:
    return CheckpointState(tuple(Message.user(text) for text in texts))


def _types(objects: dict[str, bytes]) -> list[str]:
    """The document type of each object, "damaged" for the kept copies."""
    return sorted(
        "damaged" if "/damaged/" in key else json.loads(body)["type"]
        for key, body in objects.items()
    )


@pytest.mark.asyncio
async def test_a_state_object_that_does_not_parse_becomes_a_stub_keeping_its_bytes(
    s3_url: str, s3_endpoint: str, s3_prefix: str
) -> None:
    store = s3_store(outlast.open(s3_url))
    try:
        writer = await store.begin(RunStart(run_id="r", kind="k", owner="a"))
        await writer.save(_state("a"))
        await writer.release()
        await corrupt_record(store, "r", "default")
        assert await store.interrupted() == []  # quarantined as the work list was read
        stored = await store.load("r")
        kept = stored_objects(s3_endpoint, f"{s3_prefix}/")
        with pytest.raises(LeaseLost, match="the run was quarantined"):
            await writer.save(_state("a", "b"))
        assert await store.claim("r", owner="b", lease=30) is None
        assert await store.quarantine("r", "CorruptCheckpoint: again") is False
        assert await store.delete("r") is True
        left = stored_objects(s3_endpoint, f"{s3_prefix}/")
    finally:
        await store.close()
    assert stored is not None
    record = stored.record
    assert (record.status, record.kind, record.epoch) == (RunStatus.FAILED, "", 0)
    assert record.error is not None and record.error.startswith("CorruptCheckpoint: ")
    # The stub, the damaged bytes beside it, the transcript kept for
    # forensics, and the fence that stopped the writer; no running marker.
    assert _types(kept) == ["damaged", "fence", "segment", "state"]
    assert [b for k, b in kept.items() if "/damaged/" in k] == [DAMAGE.encode()]
    assert _types(left) == ["fence"]


@pytest.mark.asyncio
async def test_a_run_whose_transcript_does_not_parse_is_quarantined_and_its_writer_fenced(
    s3_url: str, s3_endpoint: str, s3_prefix: str
) -> None:
    store = s3_store(outlast.open(s3_url))
    try:
        writer = await store.begin(RunStart(run_id="r", kind="k", owner="a"))
        await writer.save(_state("a", "b"))
        await writer.release()
        await corrupt_message(store, "r", "default")
        with pytest.raises(CorruptCheckpoint):
            await store.claim("r", owner="b", lease=30)
        assert await store.quarantine("r", "CorruptCheckpoint: test") is True
        with pytest.raises(LeaseLost, match="the run was quarantined"):
            await writer.save(_state("a", "b", "c"))
        failed = (await store.list(status=RunStatus.FAILED)).records
        assert await store.purge(0) == 1
        left = stored_objects(s3_endpoint, f"{s3_prefix}/")
    finally:
        await store.close()
    assert [(r.run_id, r.epoch, r.error) for r in failed] == [("r", 2, "CorruptCheckpoint: test")]
    assert _types(left) == ["fence"]  # the damaged segment went with the run


@pytest.mark.asyncio
async def test_a_state_object_of_another_format_version_is_left_alone(s3_url: str) -> None:
    store = s3_store(outlast.open(s3_url))
    key = store.layout.state("default", "newer")
    body = json.dumps({"v": 99, "type": "state", "status": "running"}).encode()
    try:
        await store.objects.put(store.layout.running_marker("default", "newer", "x"), b"{}")
        await store.objects.put(key, body)
        assert await store.interrupted() == []
        assert await store.quarantine("newer", "CorruptCheckpoint: x") is False
        got = await store.objects.get(key)
    finally:
        await store.close()
    assert got is not None and got.body == body


@pytest.mark.asyncio
async def test_a_run_written_by_outlast_s3_0_1_is_found_claimed_and_finished(
    s3_url: str, s3_endpoint: str, s3_prefix: str
) -> None:
    # 0.1 kept lease and incarnation beside the record (no crash count) and
    # one running marker per run id.
    store = s3_store(outlast.open(s3_url))
    incarnation = uuid.uuid4().hex
    now = time.time()
    state = {
        "v": 1,
        "type": "state",
        **{"run_id": "old", "namespace": "default", "kind": "k", "input": {"n": 1}},
        **{"status": "running", "epoch": 1, "attempts": 1, "owner": "gone"},
        **{"lease_expires_at": now - 60, "created_at": now - 120, "updated_at": now - 90},
        **{"result": None, "error": None, "lease": 30.0, "incarnation": incarnation},
        **{"compaction": None, "rev": 3, "writer": "w"},
    }
    segment = {
        "v": 1,
        "type": "segment",
        **{"epoch": 1, "seq": 0, "at": now - 100, "first_phase": 0, "phases": []},
        **{"segment": 0, "first_message": 0, "messages": [Message.user("hello").to_json()]},
    }
    try:
        layout = store.layout
        await store.objects.put(layout.legacy_running_marker("default", "old"), b"{}")
        await store.objects.put(layout.state("default", "old"), json.dumps(state).encode())
        await store.objects.put(
            layout.segment("default", "old", incarnation, SegmentName(1, 0)),
            json.dumps(segment).encode(),
        )
        found = await store.interrupted()
        claim = await store.claim("old", owner="new", lease=30)
        assert claim is not None
        await claim.checkpointer.complete("done")
        left = stored_objects(s3_endpoint, f"{s3_prefix}/")
    finally:
        await store.close()
    assert [(r.run_id, r.crashes, r.lease, r.incarnation) for r in found] == [
        ("old", 0, 30.0, incarnation)
    ]
    assert claim.resume.history == (Message.user("hello"),)
    assert (claim.record.attempts, claim.record.crashes) == (2, 1)  # its lease had expired
    assert _types(left) == ["fence", "state"]  # the 0.1 marker went with the run's end
