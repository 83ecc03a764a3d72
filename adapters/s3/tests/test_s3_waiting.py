"""Waiting runs on S3: a wait is one state swap that leaves the running marker
(so a wait that times out is found by the work list) and the transcript;
the writer that parked the run refuses its own writes without a request,
and whoever takes the run over (a claim after a send or a timeout, a cancel,
a quarantine, a delete) fences the parked epoch as it fences any other.
State objects written before waiting runs existed still load."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable

import pytest
from s3_testing import corrupt_message, s3_store, stored_objects

import outlast
from outlast.adapter import (
    JSON,
    CheckpointState,
    LeaseLost,
    Message,
    NotWaiting,
    RunStart,
    RunStatus,
    transitions,
)
from outlast_s3 import S3Checkpointer, S3Store
from outlast_s3.layout import SegmentName

REQUEST: JSON = {"ask": "approve?"}


def _state(*texts: str) -> CheckpointState:
    return CheckpointState(tuple(Message.user(text) for text in texts))


def _texts(state: CheckpointState) -> list[str]:
    return [m.text for m in state.history]


def _at(epoch: int, seq: int) -> str:
    return str(SegmentName(epoch, seq)).removesuffix(".json")


def _sequence(endpoint: str, prefix: str) -> dict[str, dict[str, JSON]]:
    """The segment folders' objects: ``<epoch>-<seq>`` -> the parsed document."""
    return {
        key.rsplit("/", 1)[1].removesuffix(".json"): json.loads(body)
        for key, body in stored_objects(endpoint, f"{prefix}/").items()
        if "/seg/" in key
    }


def _types(sequence: dict[str, dict[str, JSON]]) -> dict[str, JSON]:
    return {name: doc["type"] for name, doc in sequence.items()}


async def _markers(store: S3Store) -> list[str]:
    return await store.objects.list_keys(store.layout.running_index("default"))


async def _parked(
    store: S3Store, run_id: str, *texts: str, timeout: float | None = None
) -> S3Checkpointer:
    """A run that saved ``texts`` and waits for REQUEST; the checkpointer that parked it."""
    writer = await store.begin(RunStart(run_id=run_id, kind="k", owner="a", lease=3600))
    if texts:
        await writer.save(_state(*texts))
    await writer.wait(REQUEST, timeout)
    return writer


async def _refused_writes(writer: S3Checkpointer, *saved: str) -> list[str]:
    """Every write of ``writer`` (which saved ``saved``); the names of those
    that did not raise LeaseLost."""
    writes: dict[str, Callable[[], Awaitable[object]]] = {
        "save": lambda: writer.save(_state(*saved, "zombie")),
        "renew": writer.renew,
        "release": writer.release,
        "wait": lambda: writer.wait(REQUEST, None),
        "complete": lambda: writer.complete("zombie"),
        "fail": lambda: writer.fail("zombie"),
    }
    unrefused = []
    for name, write in writes.items():
        try:
            await write()
        except LeaseLost:
            continue
        unrefused.append(name)
    return unrefused


@pytest.mark.asyncio
async def test_a_wait_is_one_state_swap_and_its_writer_is_refused_without_a_request(
    s3_url: str, s3_endpoint: str, s3_prefix: str
) -> None:
    store = s3_store(outlast.open(s3_url))
    try:
        writer = await store.begin(RunStart(run_id="r", kind="k", owner="a", lease=3600))
        await writer.save(_state("a", "b"))
        before = store.requests
        await writer.wait(REQUEST, None)
        wait_cost = store.requests - before
        before = store.requests
        unrefused = await _refused_writes(writer, "a", "b")
        refused_cost = store.requests - before
        markers = await _markers(store)
        loaded = await store.load("r")
    finally:
        await store.close()
    assert wait_cost == 1  # state CAS (If-Match)
    assert unrefused == []
    assert refused_cost == 0  # judged from the record the wait wrote
    assert loaded is not None
    assert (loaded.record.status, loaded.record.wait) == (RunStatus.WAITING, REQUEST)
    assert _texts(loaded.state) == ["a", "b"]
    # The marker stays (a wait that times out is found through it); nothing is fenced yet.
    assert markers == [store.layout.running_marker("default", "r", loaded.record.incarnation)]
    assert _types(_sequence(s3_endpoint, s3_prefix)) == {_at(1, 0): "segment"}


@pytest.mark.asyncio
async def test_the_claim_after_a_send_fences_the_parked_epoch(
    s3_url: str, s3_endpoint: str, s3_prefix: str
) -> None:
    first = s3_store(outlast.open(s3_url))
    second = s3_store(outlast.open(s3_url))
    try:
        parked = await _parked(first, "r", "a", "b")
        before = second.requests
        sent = await second.send("r", {"approved": True})
        send_cost = second.requests - before - 4  # the factory's first write probes first
        claim = await second.claim_next(["k"], owner="b", lease=3600)
        assert claim is not None
        unrefused = await _refused_writes(parked, "a", "b")
        await claim.checkpointer.save(_state("a", "b", "c"))
        loaded = await second.load("r")
    finally:
        await first.close()
        await second.close()
    assert send_cost == 2  # GET state, state CAS
    assert (sent.status, sent.lease_expires_at, sent.epoch) == (RunStatus.RUNNING, None, 1)
    record = claim.record
    assert (record.epoch, record.crashes, record.wait, record.delivery) == (
        2,
        0,
        REQUEST,
        {"approved": True},
    )
    assert _texts(CheckpointState(claim.resume.history)) == ["a", "b"]
    assert unrefused == []
    sequence = _sequence(s3_endpoint, s3_prefix)
    assert _types(sequence) == {
        _at(1, 0): "segment",
        _at(1, 1): "fence",  # where the parked writer would save next
        _at(2, 0): "segment",
    }
    assert (sequence[_at(1, 1)]["cause"], sequence[_at(1, 1)]["by_epoch"]) == ("claim", 2)
    assert loaded is not None and _texts(loaded.state) == ["a", "b", "c"]


@pytest.mark.asyncio
async def test_only_a_wait_that_timed_out_is_listed_and_claimed(s3_url: str) -> None:
    store = s3_store(outlast.open(s3_url))
    try:
        await _parked(store, "never", "a")
        await _parked(store, "later", "a", timeout=3600)
        await _parked(store, "due", "a", timeout=0)  # timed out as soon as it is written
        listed = [r.run_id for r in await store.interrupted()]
        claim = await store.claim_next(["k"], owner="b", lease=3600)
        again = await store.claim_next(["k"], owner="b", lease=3600)
        claims = [await store.claim(run_id, owner="b", lease=60) for run_id in ("never", "later")]
        with pytest.raises(NotWaiting):
            await store.send("due", {"late": True})
        waiting = [r.run_id for r in (await store.list(status=RunStatus.WAITING)).records]
    finally:
        await store.close()
    assert listed == ["due"]
    assert claim is not None and claim.record.run_id == "due"
    assert (claim.record.crashes, claim.record.wait, claim.record.delivery) == (0, REQUEST, None)
    assert again is None and claims == [None, None]
    assert waiting == ["later", "never"]


@pytest.mark.asyncio
async def test_a_cancel_asked_of_the_owner_outlives_its_wait(
    s3_url: str, s3_endpoint: str, s3_prefix: str
) -> None:
    """The cancel flags the owned run and leaves its note; the owner then
    parks the run. The flag stays in the record, so the owner after the send
    sees it; the note holds its key and adds nothing; the claim fences after it."""
    store = s3_store(outlast.open(s3_url))
    try:
        owner = await store.begin(RunStart(run_id="r", kind="k", owner="a", lease=3600))
        await owner.save(_state("a"))
        await store.cancel("r")
        await owner.wait(REQUEST, None)
        waiting = await store.load("r")
        await store.send("r", None)
        claim = await store.claim("r", owner="b", lease=3600)
        assert claim is not None
        asked = await claim.checkpointer.save(_state("a", "b"))
    finally:
        await store.close()
    assert waiting is not None
    assert (waiting.record.status, waiting.record.cancel_requested) == (RunStatus.WAITING, True)
    assert claim.record.cancel_requested is True and asked is True
    assert _texts(CheckpointState(claim.resume.history)) == ["a"]
    assert _types(_sequence(s3_endpoint, s3_prefix)) == {
        _at(1, 0): "segment",
        _at(1, 1): "cancel-request",
        _at(1, 2): "fence",
        _at(2, 0): "segment",
    }


@pytest.mark.asyncio
async def test_a_cancel_of_a_waiting_run_fences_its_epoch_and_removes_its_marker(
    s3_url: str, s3_endpoint: str, s3_prefix: str
) -> None:
    store = s3_store(outlast.open(s3_url))
    try:
        parked = await _parked(store, "r", "a")
        cancelled = await store.cancel("r")
        markers = await _markers(store)
        with pytest.raises(LeaseLost):
            await parked.save(_state("a", "zombie"))
    finally:
        await store.close()
    assert (cancelled.status, cancelled.error, cancelled.epoch) == (
        RunStatus.FAILED,
        transitions.CANCELLED,
        2,
    )
    assert markers == []
    sequence = _sequence(s3_endpoint, s3_prefix)
    assert _types(sequence) == {_at(1, 0): "segment", _at(1, 1): "fence"}
    assert sequence[_at(1, 1)]["cause"] == "cancel"


@pytest.mark.asyncio
async def test_a_delete_of_a_waiting_run_fences_its_epoch(
    s3_url: str, s3_endpoint: str, s3_prefix: str
) -> None:
    """The parked writer refuses its writes itself; the delete's fence keeps
    its epoch's next key taken anyway, after the id is begun again too."""
    store = s3_store(outlast.open(s3_url))
    try:
        await _parked(store, "r", "a")
        assert await store.delete("r") is True
        left = _sequence(s3_endpoint, s3_prefix)
        fresh = await store.begin(RunStart(run_id="r", kind="k", owner="fresh"))
        await fresh.save(_state("fresh"))
        loaded = await store.load("r")
    finally:
        await store.close()
    assert _types(left) == {_at(1, 1): "fence"}
    assert left[_at(1, 1)]["cause"] == "delete"
    assert loaded is not None and _texts(loaded.state) == ["fresh"]


@pytest.mark.asyncio
async def test_a_timed_out_wait_whose_transcript_does_not_parse_is_quarantined(
    s3_url: str, s3_endpoint: str, s3_prefix: str
) -> None:
    """claim_next quarantines it (it is claimable) and fences the parked
    epoch; a waiting run with no timeout is never read, so never judged."""
    store = s3_store(outlast.open(s3_url))
    try:
        for run_id, timeout in (("due", 0.0), ("never", None)):
            await _parked(store, run_id, "a", timeout=timeout)
            await corrupt_message(store, run_id, "default")
        assert await store.claim_next(["k"], owner="b", lease=3600) is None
        failed = (await store.list(status=RunStatus.FAILED)).records
        waiting = (await store.list(status=RunStatus.WAITING)).records
        markers = await _markers(store)
    finally:
        await store.close()
    assert [(r.run_id, r.epoch) for r in failed] == [("due", 2)]
    assert failed[0].error is not None and failed[0].error.startswith("CorruptCheckpoint: ")
    assert [r.run_id for r in waiting] == ["never"]
    assert [store.layout.run_id_of_marker("default", key) for key in markers] == ["never"]
    fences = [
        doc["cause"] for doc in _sequence(s3_endpoint, s3_prefix).values() if doc["type"] == "fence"
    ]
    assert fences == ["quarantine"]  # the timed-out wait's epoch; the other is untouched


@pytest.mark.asyncio
async def test_a_state_object_written_before_waiting_runs_loads_waits_and_keeps_usage(
    s3_url: str,
) -> None:
    """A state object of the previous release has no ``wait``, ``delivery``
    or ``usage``: it reads as None for all three, and its run waits, takes a
    delivery and completes with its usage like any other."""
    store = s3_store(outlast.open(s3_url))
    incarnation = uuid.uuid4().hex
    now = time.time()
    state = {
        "v": 1,
        "type": "state",
        **{"run_id": "old", "namespace": "default", "kind": "k", "input": {"n": 1}},
        **{"status": "running", "epoch": 1, "attempts": 1, "crashes": 0, "owner": "gone"},
        **{"lease": 30.0, "lease_expires_at": None, "created_at": now - 9, "updated_at": now - 5},
        **{"result": None, "error": None, "incarnation": incarnation, "cancel_requested": False},
        **{"compaction": None, "damaged": None, "rev": 2, "writer": "w"},
    }
    usage: JSON = {"input_tokens": 10, "output_tokens": 2}
    try:
        layout = store.layout
        await store.objects.put(layout.running_marker("default", "old", incarnation), b"{}")
        await store.objects.put(layout.state("default", "old"), json.dumps(state).encode())
        before = await store.load("old")
        claim = await store.claim("old", owner="b", lease=3600)
        assert claim is not None
        await claim.checkpointer.wait(REQUEST, None)
        await store.send("old", {"approved": True})
        resumed = await store.claim("old", owner="c", lease=3600)
        assert resumed is not None
        await resumed.checkpointer.complete("done", usage)
        got = await store.objects.get(layout.state("default", "old"))
    finally:
        await store.close()
    assert before is not None
    assert (before.record.wait, before.record.delivery, before.record.usage) == (None, None, None)
    assert (resumed.record.wait, resumed.record.delivery) == (REQUEST, {"approved": True})
    assert got is not None
    stored = json.loads(got.body)
    assert (stored["status"], stored["result"], stored["usage"]) == ("completed", "done", usage)
    assert (stored["wait"], stored["delivery"]) == (REQUEST, {"approved": True})
