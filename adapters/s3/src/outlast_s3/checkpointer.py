"""One run's durable record in S3, held at one epoch.

``save`` is one PUT of a new, immutable segment object at
``<epoch>-<seq>`` with If-None-Match: *. Whoever ends this writer's hold on
the run (a claimer, a quarantine, a cancel, a delete) first writes a fence
object at this epoch's next sequence number, so the writer's next segment PUT
fails its precondition: it raises LeaseLost and nothing it wrote after that is
ever read. Lease and status changes (a wait included) apply
:mod:`outlast.transitions` to the record and replace the small state object
with If-Match on its ETag (compare-and-swap), re-reading it after a conflict.
A checkpointer whose own write ended its hold on the run (complete, fail,
wait) refuses every later write from the record it holds, without a request.

``save`` and ``renew`` return whether a cancel was asked: renew from the
state object it swaps (re-read after the cancel's swap made its If-Match
fail), save from a cancel note the canceller left at this epoch's next
sequence number (see fences.py), or from the state object last read.
"""

from __future__ import annotations

import enum
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace

from outlast.adapter import (
    JSON,
    CheckpointState,
    CorruptCheckpoint,
    LeaseLost,
    RunRecord,
    SaveCursor,
    StoreError,
    codec,
    transitions,
)
from outlast_s3.documents import (
    CancelNote,
    Compaction,
    Fence,
    RunState,
    Segment,
    Snapshot,
    decode_sequence_object,
    decode_state,
    encode_segment,
    encode_snapshot,
    encode_state,
)
from outlast_s3.layout import Layout, SegmentName
from outlast_s3.objects import ObjectClient, PreconditionFailed, best_effort

log = logging.getLogger("outlast_s3")

_CAS_ATTEMPTS = 5

Change = Callable[[RunRecord | None, float], RunRecord]
"""A transition given the stored record (None when the run is gone) and the
clock: the record to store, or LeaseLost."""


class _Keep(enum.Enum):
    """``compaction=KEEP``: a state write that leaves the compacted object as is."""

    KEEP = enum.auto()


KEEP = _Keep.KEEP


class S3Checkpointer:
    """A Checkpointer writing segments and compare-and-swapping the state object.

    ``data_keys`` are the segment objects that count, oldest first
    (compaction and completion delete them; fences are never among them).
    """

    def __init__(
        self,
        *,
        objects: ObjectClient,
        layout: Layout,
        run: RunState,
        etag: str,
        cursor: SaveCursor,
        data_keys: tuple[str, ...] = (),
        compact_after: int,
    ) -> None:
        self._objects = objects
        self._layout = layout
        self._run = run
        self._etag = etag
        self._epoch = run.record.epoch
        self._incarnation = run.record.incarnation
        self._cursor = cursor
        self._next_seq = 0
        self._data_keys = list(data_keys)
        self._compact_after = compact_after
        self._writer = uuid.uuid4().hex
        self._cancel_seen = False

    def __repr__(self) -> str:
        return f"S3Checkpointer(run_id={self.run_id!r}, epoch={self._epoch})"

    @property
    def run_id(self) -> str:
        return self._run.record.run_id

    @property
    def namespace(self) -> str:
        return self._run.record.namespace

    @property
    def epoch(self) -> int:
        return self._epoch

    async def save(self, state: CheckpointState) -> bool:
        # One segment PUT whatever the delta, an empty one too: taking the next
        # key is both the ownership check (a fence holds it once this writer
        # lost the run) and the record of the save's time, which readers take
        # as the record's updated_at (the state object is not touched). A
        # cancel request reaches the save the same way, as a note holding the
        # key: that costs the save two more requests once, never one per save.
        delta = self._cursor.delta(state)
        # Refused here, without a request, when this checkpointer ended the run.
        saved = transitions.save(
            self._run.record, self._epoch, self._incarnation, time.time(), self.run_id
        )
        for _ in range(_CAS_ATTEMPTS):
            name = SegmentName(self._epoch, self._next_seq)
            body = encode_segment(
                Segment(
                    name=name,
                    at=saved.updated_at,
                    first_phase=delta.first_phase,
                    phases=delta.phases,
                    segment=delta.segment,
                    first_message=delta.first_message,
                    messages=delta.messages,
                )
            )
            key = self._layout.segment(self.namespace, self.run_id, self._incarnation, name)
            written = await self._put_segment(key, body)
            self._next_seq += 1
            self._data_keys.append(key)  # a note too: compaction and complete remove it
            if written:
                break
            self._cancel_seen = True
        else:
            raise StoreError(f"run {self.run_id!r}: could not write a segment; try again")
        self._cursor = delta.after
        if len(self._data_keys) > self._compact_after:
            await self._compact(state, name)
        return self._cancel_requested

    async def complete(self, result: JSON, usage: JSON = None) -> None:
        stored = codec.loads(codec.dumps(result), self.run_id)
        stored_usage = codec.loads(codec.dumps(usage), self.run_id)
        compaction = self._run.compaction
        await self._write_state(
            lambda record, now: transitions.complete(
                record,
                self._epoch,
                self._incarnation,
                stored,
                now,
                self.run_id,
                usage=stored_usage,
            ),
            compaction=None,
        )
        doomed = list(self._data_keys)
        if compaction is not None:
            doomed.append(compaction.key)
        self._data_keys = []
        # Fences stay: a zombie of an older epoch must keep failing.
        await best_effort(
            self._objects.delete([*doomed, *self._markers()]),
            f"run {self.run_id!r}: clear the finished run's progress",
        )

    async def fail(self, error: str) -> None:
        await self._write_state(
            lambda record, now: transitions.fail(
                record, self._epoch, self._incarnation, error, now, self.run_id
            )
        )
        # The transcript stays for post-mortems; only the marker goes.
        await best_effort(
            self._objects.delete(self._markers()), f"run {self.run_id!r}: remove the marker"
        )

    async def release(self) -> None:
        await self._write_state(
            lambda record, now: transitions.release(
                record, self._epoch, self._incarnation, now, self.run_id
            )
        )

    async def renew(self) -> bool:
        await self._write_state(
            lambda record, now: transitions.renew(
                record, self._epoch, self._incarnation, now, self.run_id
            )
        )
        return self._cancel_requested

    async def wait(self, request: JSON, timeout: float | None) -> None:
        # The transcript and the running marker stay: the marker keeps the run
        # in the work list, where it is claimable once its wait times out (and
        # at once after a send). This checkpointer's record is now waiting, so
        # its later writes raise LeaseLost without a request; the claimer that
        # takes the run over fences this epoch as it fences any superseded one.
        stored = codec.loads(codec.dumps(request), self.run_id)
        await self._write_state(
            lambda record, now: transitions.wait(
                record, self._epoch, self._incarnation, stored, timeout, now, self.run_id
            )
        )

    @property
    def _cancel_requested(self) -> bool:
        """Whether a cancel was asked: the state object this checkpointer last
        read or wrote says so, or one of its saves found a cancel note."""
        return self._cancel_seen or self._run.record.cancel_requested

    def _owned(self, record: RunRecord | None) -> RunRecord:
        """``record``, or LeaseLost unless this checkpointer may write it."""
        return transitions.owned(record, self._epoch, self._incarnation, self.run_id)

    def _owned_unchanged(self, record: RunRecord | None, now: float) -> RunRecord:
        """The change of a bookkeeping write (compaction): the record as it is."""
        return self._owned(record)

    def _markers(self) -> list[str]:
        return [
            self._layout.running_marker(self.namespace, self.run_id, self._incarnation),
            self._layout.legacy_running_marker(self.namespace, self.run_id),
        ]

    async def _put_segment(self, key: str, body: bytes) -> bool:
        """Write a segment at ``key``: True once it is there, False when a
        cancel note holds the key (the segment goes to the next one); LeaseLost
        when anything else does (a fence)."""
        for _ in range(_CAS_ATTEMPTS):
            try:
                await self._objects.put(key, body, if_none_match=True)
                return True
            except PreconditionFailed:
                existing = await self._objects.get(key)
            if existing is None:
                continue  # 409: a concurrent conditional write (a fence) lost; try again
            if existing.body == body:
                return True  # our own earlier attempt landed; botocore retried it
            name = SegmentName.parse(key.rsplit("/", 1)[-1])
            try:
                found = None if name is None else decode_sequence_object(existing.body, "", name)
            except CorruptCheckpoint:
                found = None
            if isinstance(found, CancelNote):
                return False
            if isinstance(found, Fence):
                raise LeaseLost(self.run_id, self._epoch, found.explain())
            raise LeaseLost(
                self.run_id, self._epoch, f"another writer took segment {key.rsplit('/', 1)[-1]}"
            )
        raise StoreError(f"run {self.run_id!r}: could not write segment {key!r}; try again")

    async def _write_state(
        self, change: Change, *, compaction: Compaction | _Keep | None = KEEP
    ) -> None:
        """Compare-and-swap the state object with ``change`` applied to its
        record, re-reading it after a conflict (``change`` raises LeaseLost
        when this checkpointer no longer owns the run)."""
        key = self._layout.state(self.namespace, self.run_id)
        current: RunState | None = self._run
        etag = self._etag
        for _ in range(_CAS_ATTEMPTS):
            record = change(None if current is None else current.record, time.time())
            assert current is not None  # change() raised LeaseLost for a deleted run
            new = replace(
                current,
                record=record,
                compaction=current.compaction if compaction is KEEP else compaction,
                rev=current.rev + 1,
                writer=self._writer,
            )
            body = encode_state(new)
            try:
                new_etag = await self._objects.put(key, body, if_match=etag)
            except PreconditionFailed:
                got = await self._objects.get(key)
                if got is not None and got.body == body:
                    self._run, self._etag = new, got.etag  # our retried write landed
                    return
                current = None if got is None else decode_state(got.body, self.run_id)
                etag = "" if got is None else got.etag
                continue
            self._run, self._etag = new, new_etag
            return
        raise StoreError(f"run {self.run_id!r}: its state kept changing; try again")

    async def _compact(self, state: CheckpointState, through: SegmentName) -> None:
        """Fold the segments into one object. Best effort: the save is already
        durable, so a failure is logged and compaction is tried at a later save."""
        previous = self._run.compaction
        key = self._layout.compacted(self.namespace, self.run_id, self._incarnation, through)
        snapshot = Snapshot(
            through=through,
            at=time.time(),
            phases=state.phases,
            segment=len(state.phases),
            messages=state.history,
        )
        try:
            await self._objects.put(key, encode_snapshot(snapshot), if_none_match=True)
        except (StoreError, PreconditionFailed) as exc:
            log.warning("run %r: compaction failed, will retry later: %s", self.run_id, exc)
            return
        try:
            await self._write_state(self._owned_unchanged, compaction=Compaction(key, through))
        except StoreError as exc:
            log.warning("run %r: compaction failed, will retry later: %s", self.run_id, exc)
            # Nothing points at the compacted object: remove it, so a delete
            # racing this save leaves nothing behind.
            await best_effort(self._objects.delete([key]), f"run {self.run_id!r}: remove {key}")
            return
        # Keep the segment at ``through`` itself: a reader holding the previous
        # state object then sees a gap and re-reads the state (see progress.py).
        doomed = self._data_keys[:-1]
        if previous is not None:
            doomed.append(previous.key)
        self._data_keys = self._data_keys[-1:]
        await best_effort(
            self._objects.delete(doomed), f"run {self.run_id!r}: delete compacted segments"
        )
