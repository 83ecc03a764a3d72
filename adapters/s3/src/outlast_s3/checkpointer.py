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

**Compaction** (folding the segments into one compacted object once there are
more than ``compact_after``) runs in a background task started by the save
that crossed the line, after that save is durable and without delaying its
return: no save waits for it. One task at a time per checkpointer; its failure
is logged and a later save tries again. It can never damage what a reader or
a new owner needs:

* the compacted object is written at a key of its own (If-None-Match) and only
  becomes part of the run by a compare-and-swap of the state object, which
  requires this checkpointer to still own the run (same epoch and
  incarnation, running): a fenced writer's swap fails, and the writer then
  deletes its compacted object only when the state object does not point at it;
* the folded segments are deleted only after the swap landed, and they are
  all covered by the compacted object the state object now points at; a
  reader holding an older state object finds a gap and reads the state again;
* a swap whose outcome is unknown (the request failed in transit) keeps its
  compacted object: it is deleted after a later swap (which replaces it for
  sure) or by ``complete``;
* a crash at any point leaves either the old state object (the compacted
  object is never read) or the new one (the segments it covers are never
  read); the next claimer finds these leftovers in its listing and its
  checkpointer deletes them with its own first compaction or completion.

The terminal and lease-ending writes (``complete``, ``fail``, ``wait``,
``release``) first wait for a compaction in flight; every state write of one
checkpointer is serialised, so a compaction's swap and a renewal never race
each other.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from outlast.adapter import (
    JSON,
    CheckpointState,
    CorruptCheckpoint,
    Delta,
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
    encode_message,
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


Track = Callable[["asyncio.Task[None]"], None]
"""Hands a background task to the store, which waits for it on close."""


@dataclass(slots=True)
class _Encoded:
    """The JSON text of the current transcript segment's messages (segment
    ``segment``, from position ``first``), as the saves encoded them: a
    compaction joins them instead of encoding the whole transcript again.
    Messages before ``first`` (a claim resumed them) are encoded by the first
    compaction, which then keeps them too. A list is only ever appended to
    (or prepended, by a compaction once it is done with it) or replaced."""

    segment: int
    first: int
    texts: list[str] = field(default_factory=list)

    def add(self, delta: Delta, texts: list[str]) -> None:
        if delta.segment != self.segment or delta.first_message != self.first + len(self.texts):
            # A phase ended: the new transcript segment starts at 0.
            self.segment, self.first, self.texts = delta.segment, delta.first_message, []
        self.texts.extend(texts)


class _Keep(enum.Enum):
    """``compaction=KEEP``: a state write that leaves the compacted object as is."""

    KEEP = enum.auto()


KEEP = _Keep.KEEP


class S3Checkpointer:
    """A Checkpointer writing segments and compare-and-swapping the state object.

    ``data_keys`` are the segment objects that count, oldest first
    (compaction and completion delete them; fences are never among them).
    ``leftovers`` are objects a compaction that died midway left behind
    (never read again; found by the claim that made this checkpointer): its
    first compaction or its completion deletes them. ``track`` receives each
    background compaction task (the store waits for them when it closes).
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
        leftovers: tuple[str, ...] = (),
        track: Track | None = None,
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
        self._encoded = _Encoded(cursor.phases, cursor.messages)
        self._state_lock = asyncio.Lock()
        self._track = track
        self._compaction: asyncio.Task[None] | None = None
        self._saves = 0
        self._retry_at = 0
        """The save count before which no compaction is tried (after a failure)."""
        self._retry_gap = max(1, compact_after // 4)
        self._strays: set[str] = set(leftovers)
        """Objects that are (or may be) nothing the run needs once this
        checkpointer's next compaction swap lands: leftovers of a dead
        compaction, and compacted objects whose swap's outcome is unknown."""

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
        texts = [encode_message(m) for m in delta.messages]
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
                ),
                texts,
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
        self._encoded.add(delta, texts)
        self._saves += 1
        # Compaction starts here, in the background: it first runs when the
        # caller next yields to the event loop, after this save returned.
        self._start_compaction(state, name, saved.updated_at)
        return self._cancel_requested

    async def settled(self) -> None:
        """Wait until no compaction of this checkpointer is in flight (for
        tests, benchmarks and the writes that end a lease). Never raises what
        the compaction raised: a compaction that failed is tried again later."""
        task = self._compaction
        if task is None or task is asyncio.current_task():
            return
        await asyncio.wait([task])
        _retrieve(task)

    async def complete(self, result: JSON, usage: JSON = None) -> None:
        stored = codec.loads(codec.dumps(result), self.run_id)
        stored_usage = codec.loads(codec.dumps(usage), self.run_id)
        await self.settled()
        compaction = self._run.compaction
        replaced = await self._write_state(
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
        doomed = [*self._data_keys, *sorted(self._strays)]
        for folded in (compaction, replaced.compaction):
            if folded is not None and folded.key not in doomed:
                doomed.append(folded.key)
        self._data_keys = []
        self._strays.clear()
        # Fences stay: a zombie of an older epoch must keep failing.
        await best_effort(
            self._objects.delete([*doomed, *self._markers()]),
            f"run {self.run_id!r}: clear the finished run's progress",
        )

    async def fail(self, error: str) -> None:
        await self.settled()
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
        await self.settled()
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
        await self.settled()
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
    ) -> RunState:
        """Compare-and-swap the state object with ``change`` applied to its
        record, re-reading it after a conflict (``change`` raises LeaseLost
        when this checkpointer no longer owns the run). Returns the state
        object it replaced. One at a time per checkpointer."""
        async with self._state_lock:
            return await self._swap_state(change, compaction)

    async def _swap_state(self, change: Change, compaction: Compaction | _Keep | None) -> RunState:
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
                    return current
                current = None if got is None else decode_state(got.body, self.run_id)
                etag = "" if got is None else got.etag
                continue
            self._run, self._etag = new, new_etag
            return current
        raise StoreError(f"run {self.run_id!r}: its state kept changing; try again")

    def _start_compaction(self, state: CheckpointState, through: SegmentName, at: float) -> None:
        """Start folding the run's segments into one compacted object, in the
        background, when it holds more than ``compact_after`` of them (and no
        compaction is in flight, and none failed in the last few saves)."""
        if len(self._data_keys) <= self._compact_after or self._saves < self._retry_at:
            return
        if self._compaction is not None:
            if not self._compaction.done():
                return  # never two at once: a later save starts the next one
            _retrieve(self._compaction)
        keys = tuple(self._data_keys)  # the last one is the segment at ``through``
        encoded = self._encoded
        held = len(encoded.texts)
        if encoded.segment != len(state.phases) or encoded.first + held != len(state.history):
            held = -1  # not the transcript of ``state`` (never expected): encode it all
        task = asyncio.get_running_loop().create_task(
            self._compact(state, through, at, keys, (encoded.texts, encoded.first, held)),
            name=f"outlast-s3 compaction of {self.run_id}",
        )
        self._compaction = task
        if self._track is not None:
            self._track(task)

    async def _compact(
        self,
        state: CheckpointState,
        through: SegmentName,
        at: float,
        keys: tuple[str, ...],
        texts: _Texts,
    ) -> None:
        """Fold ``keys`` (the counted segments through ``through``, whose
        content ``state`` is) into one object. Best effort: the saves are
        durable without it, so a failure is logged and a later save tries again."""
        try:
            folded = await self._fold(state, through, at, keys, texts)
        except StoreError as exc:
            log.warning("run %r: compaction failed, will retry later: %s", self.run_id, exc)
            folded = False
        except Exception:  # a background task: nothing may escape it unlogged
            log.exception("run %r: compaction failed, will retry later", self.run_id)
            folded = False
        if not folded:
            self._retry_at = self._saves + self._retry_gap

    async def _fold(
        self,
        state: CheckpointState,
        through: SegmentName,
        at: float,
        keys: tuple[str, ...],
        texts: _Texts,
    ) -> bool:
        key = self._layout.compacted(self.namespace, self.run_id, self._incarnation, through)
        snapshot = Snapshot(
            through=through,
            at=at,
            phases=state.phases,
            segment=len(state.phases),
            messages=state.history,
        )
        # Built off the event loop: the whole transcript, the one part of
        # compaction whose cost grows with the run, is joined from the texts
        # the saves encoded (only messages a claim resumed are encoded here).
        held, first, count = texts

        def build() -> tuple[bytes, list[str]]:
            if count < 0:
                return encode_snapshot(snapshot), []
            resumed = [encode_message(m) for m in state.history[:first]]
            return encode_snapshot(snapshot, [*resumed, *held[:count]]), resumed

        body, resumed = await asyncio.to_thread(build)
        encoded = self._encoded
        if resumed and encoded.texts is held and encoded.first == first:
            held[0:0] = resumed  # kept: the next compaction joins them too
            encoded.first = 0
        if not await self._put_compacted(key, body):
            return False
        previous = self._run.compaction
        try:
            replaced = await self._write_state(
                self._owned_unchanged, compaction=Compaction(key, through)
            )
        except LeaseLost as exc:
            # The run is another writer's now (or gone, or finished), and a
            # swap of ours can never land any more: the If-Match it carried is
            # of a state object that was replaced. The compacted object is
            # removed unless the state object points at it (our swap landed,
            # its answer was lost, and the claimer carried it over).
            log.info("run %r: compaction dropped, the run was lost: %s", self.run_id, exc)
            if not await self._pointed_at(key):
                await best_effort(self._objects.delete([key]), f"run {self.run_id!r}: remove {key}")
            return False
        except StoreError as exc:
            # The swap's outcome is unknown (the state object may point at the
            # compacted object now): keep it until a later swap replaces it.
            log.warning("run %r: compaction failed, will retry later: %s", self.run_id, exc)
            self._strays.add(key)
            return False
        # Every folded segment is covered by the compacted object the state
        # points at now. Keep the segment at ``through`` itself: a reader
        # holding an older state object then sees a gap and re-reads the
        # state (see progress.py). Older compacted objects are replaced.
        doomed = list(keys[:-1])
        stale = {c.key for c in (previous, replaced.compaction) if c is not None} | self._strays
        doomed.extend(sorted(stale - {key}))
        if tuple(self._data_keys[: len(keys)]) == keys:  # saves only ever append
            del self._data_keys[: len(keys) - 1]
        self._strays.clear()
        await best_effort(
            self._objects.delete(doomed), f"run {self.run_id!r}: delete compacted segments"
        )
        return True

    async def _put_compacted(self, key: str, body: bytes) -> bool:
        """Write the compacted object (If-None-Match): True once it is there."""
        try:
            await self._objects.put(key, body, if_none_match=True)
            return True
        except PreconditionFailed:
            # Only this writer compacts through its own segments: a taken key
            # is our own earlier attempt, retried by botocore after it landed.
            got = await self._objects.get(key)
            if got is not None and got.body == body:
                return True
            log.warning("run %r: compaction found %s taken, will retry later", self.run_id, key)
        except StoreError as exc:
            log.warning("run %r: compaction failed, will retry later: %s", self.run_id, exc)
            self._strays.add(key)  # it may have landed: nothing points at it
        return False

    async def _pointed_at(self, key: str) -> bool:
        """Whether the state object (read again) points at compacted ``key``;
        True when that cannot be told (it does not parse, or the read failed)."""
        try:
            got = await self._objects.get(self._layout.state(self.namespace, self.run_id))
            if got is None:
                return False
            current = decode_state(got.body, self.run_id)
        except StoreError:  # CorruptCheckpoint included
            return True
        return current.compaction is not None and current.compaction.key == key


_Texts = tuple[list[str], int, int]
"""A compaction's view of :class:`_Encoded`: its list, ``first``, and how
many texts of the list are the transcript compacted (-1: encode it all)."""


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a finished task's outcome as seen (what it raised was logged)."""
    if not task.cancelled():
        task.exception()
