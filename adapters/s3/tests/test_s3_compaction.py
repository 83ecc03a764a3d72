"""Compaction: a run's many segment objects fold into one compacted object."""

from __future__ import annotations

import uuid

import pytest
from s3_testing import BUCKET, admin_client, s3_store

import outlast
from outlast import ToolCall
from outlast.adapter import CheckpointState, Message, PhaseOutput, RunStart, codec
from outlast_s3 import S3Checkpointer, S3Store
from outlast_s3.documents import (
    Segment,
    Snapshot,
    decode_snapshot,
    decode_state,
    encode_message,
    encode_segment,
    encode_snapshot,
)
from outlast_s3.layout import Layout, SegmentName
from outlast_s3.objects import ObjectClient
from outlast_s3.progress import ProgressReader


def _keys(endpoint: str, prefix: str) -> list[str]:
    client = admin_client(endpoint)
    try:
        listing = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return [item["Key"] for item in listing.get("Contents", ())]
    finally:
        client.close()


def _history(count: int) -> tuple[Message, ...]:
    return tuple(Message.user(f"m{i} ✓") for i in range(count))


@pytest.mark.asyncio
async def test_many_saves_compact_into_one_object_and_load_back_exactly(
    s3_url: str, s3_endpoint: str, s3_prefix: str
) -> None:
    store = s3_store(outlast.open(s3_url, compact_after="4"))
    reopened = outlast.open(s3_url)
    try:
        checkpointer = await store.begin(RunStart(run_id="long", kind="k", owner="w"))
        for count in range(1, 12):
            await checkpointer.save(CheckpointState(_history(count)))
            # Each compaction done before the next save: saves made while one
            # is in flight start none, so they would add to the segments kept.
            await checkpointer.settled()
        loaded = await reopened.load("long")
    finally:
        await store.close()
        await reopened.close()
    keys = _keys(s3_endpoint, f"{s3_prefix}/")
    segments = [k for k in keys if "/seg/" in k]
    compacted = [k for k in keys if "/compact/" in k]
    assert len(compacted) == 1  # the previous compacted object was deleted
    assert len(segments) <= 5  # 11 saves, at most compact_after + 1 segments kept
    assert loaded is not None
    assert loaded.state.history == _history(11)


@pytest.mark.asyncio
async def test_compacted_run_resumes_across_phases_after_a_claim(s3_url: str) -> None:
    store = outlast.open(s3_url, compact_after="3")
    try:
        first = await store.begin(RunStart(run_id="plan", kind="k", owner="w"))
        phases = (PhaseOutput("research", {"found": [1, 2]}),)
        for count in range(1, 5):
            await first.save(CheckpointState(_history(count)))
        for count in range(1, 4):
            await first.save(CheckpointState(_history(count), phases))
        await first.release()
        claim = await store.claim("plan", owner="next", lease=30)
        assert claim is not None
        for count in range(4, 9):
            await claim.checkpointer.save(CheckpointState(_history(count), phases))
        loaded = await store.load("plan")
    finally:
        await store.close()
    assert claim.resume.completed_phases == phases
    assert claim.resume.history == _history(3)
    assert loaded is not None
    assert loaded.state == CheckpointState(_history(8), phases)


@pytest.mark.asyncio
async def test_reader_holding_the_state_from_before_a_compaction_reads_again(
    s3_url: str,
) -> None:
    store = s3_store(outlast.open(s3_url, compact_after="3"))
    objects = ObjectClient(store.options)
    layout = Layout(store.options.prefix)
    try:
        checkpointer = await store.begin(RunStart(run_id="r", kind="k", owner="w"))
        for count in range(1, 3):
            await checkpointer.save(CheckpointState(_history(count)))
        before = await objects.get(layout.state("default", "r"))
        assert before is not None
        for count in range(3, 10):  # compacts and deletes the segments `before` knew
            await checkpointer.save(CheckpointState(_history(count)))
        await checkpointer.settled()
        stale = decode_state(before.body, "r")
        progress = await ProgressReader(objects, layout).read(stale, before.etag)
    finally:
        await objects.close()
        await store.close()
    assert progress.run.compaction is not None
    assert progress.state.history == _history(9)


@pytest.mark.asyncio
async def test_complete_deletes_the_progress_objects(
    s3_url: str, s3_endpoint: str, s3_prefix: str
) -> None:
    store = outlast.open(s3_url, compact_after="2")
    try:
        run_id = f"run-{uuid.uuid4().hex[:6]}"
        checkpointer = await store.begin(RunStart(run_id=run_id, kind="k", owner="w"))
        for count in range(1, 6):
            await checkpointer.save(CheckpointState(_history(count)))
        await checkpointer.complete({"answer": 42})
        loaded = await store.load(run_id)
    finally:
        await store.close()
    keys = _keys(s3_endpoint, f"{s3_prefix}/")
    assert [k.rsplit("/", 1)[1] for k in keys] == ["state.json"]  # marker gone too
    assert loaded is not None
    assert loaded.record.result == {"answer": 42}
    assert loaded.state == CheckpointState()


async def _compacted(store: S3Store, run_id: str) -> Snapshot:
    got = await store.objects.get(store.layout.state("default", run_id))
    assert got is not None
    run = decode_state(got.body, run_id)
    assert run.compaction is not None
    body = await store.objects.get(run.compaction.key)
    assert body is not None
    return decode_snapshot(body.body, run_id)


@pytest.mark.asyncio
async def test_compacted_objects_hold_the_transcript_after_a_claim_and_a_phase(
    s3_url: str,
) -> None:
    """A compaction joins the messages the saves encoded; a claimer's first
    one also encodes those it resumed, and a phase starts a new transcript."""
    store = s3_store(outlast.open(s3_url, compact_after="3"))
    phases = (PhaseOutput("one", {"n": 1}),)
    try:
        first = await store.begin(RunStart(run_id="p", kind="k", owner="w"))
        for count in (1, 2):
            await first.save(CheckpointState(_history(count)))
        await first.release()
        claim = await store.claim("p", owner="next", lease=30)
        assert claim is not None
        checkpointer = claim.checkpointer
        assert isinstance(checkpointer, S3Checkpointer)
        for count in range(3, 6):
            await checkpointer.save(CheckpointState(_history(count)))
            await checkpointer.settled()
        resumed = await _compacted(store, "p")
        for count in range(6, 10):
            await checkpointer.save(CheckpointState(_history(count)))
            await checkpointer.settled()
        again = await _compacted(store, "p")
        for count in range(1, 6):
            await checkpointer.save(CheckpointState(_history(count), phases))
            await checkpointer.settled()
        phased = await _compacted(store, "p")
    finally:
        await store.close()
    # The claim resumed 2 segments: its second save makes 4 (2 of them resumed).
    assert resumed.through == SegmentName(2, 1) and resumed.messages == _history(4)
    assert again.through == SegmentName(2, 4) and again.messages == _history(7)
    assert phased.through == SegmentName(2, 10)
    assert (phased.phases, phased.segment, phased.messages) == (phases, 1, _history(4))


def test_joined_documents_are_the_bytes_the_codec_writes() -> None:
    messages = (
        Message.user('é ✓ "quoted" \u2028 \\'),
        Message.assistant(None, (ToolCall("c1", "t", {"a": [1, 2.5, None, True]}),)),
        Message.tool("c1", "t", "result"),
    )
    phases = (PhaseOutput("plan", {"steps": ["x"]}, summary="s"),)
    texts = [encode_message(m) for m in messages]
    segment = Segment(SegmentName(3, 4), 1.5, 0, phases, 1, 2, messages)
    snapshot = Snapshot(SegmentName(3, 4), 2.0, phases, 1, messages)
    whole_segment = codec.dumps(
        {
            "v": codec.FORMAT_VERSION,
            "type": "segment",
            "epoch": 3,
            "seq": 4,
            "at": 1.5,
            "first_phase": 0,
            "phases": [p.to_json() for p in phases],
            "segment": 1,
            "first_message": 2,
            "messages": [m.to_json() for m in messages],
        }
    ).encode()
    assert encode_segment(segment) == encode_segment(segment, texts) == whole_segment
    assert encode_snapshot(snapshot, texts) == encode_snapshot(snapshot)
    assert decode_snapshot(encode_snapshot(snapshot, texts), "r") == snapshot
    empty = Snapshot(SegmentName(1, 0), 0.0)
    assert decode_snapshot(encode_snapshot(empty, []), "r") == empty
