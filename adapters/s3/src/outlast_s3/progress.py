"""Reading a run's saved progress: compacted state plus segments after it.

Which segment objects count (the visibility rule, see the README):

* an epoch's segments count from its first sequence number (0, or one past
  the compacted state's segment) up to the first gap or its fence; a cancel
  note among them holds its sequence number and adds nothing;
* epochs newer than the state object's epoch are ignored (a reader holding
  an older state object), so are segments at or before the compacted state.

A fenced writer's next segment would take exactly the key its fence holds, so
its If-None-Match write fails: nothing it writes after a claim ever counts.

Compaction and completion delete objects while a reader may be reading, so
a vanished object or a gap in an epoch's sequence makes the reader fetch the
state object again and start over when it changed; when it did not, the gap is
real and the record is corrupt. (Compaction keeps the segment it compacted
through, and fences are kept, so a reader holding an older state object always
sees such a gap.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from outlast.adapter import (
    CheckpointState,
    CorruptCheckpoint,
    Message,
    PhaseOutput,
    RunRecord,
    RunStatus,
    StoreError,
)
from outlast_s3.documents import (
    CancelNote,
    Fence,
    RunState,
    Segment,
    SequenceObject,
    Snapshot,
    decode_sequence_object,
    decode_snapshot,
    decode_state,
)
from outlast_s3.layout import Layout, SegmentName
from outlast_s3.objects import ObjectClient

_ATTEMPTS = 5

NO_SEGMENT = SegmentName(0, -1)


@dataclass(frozen=True, slots=True)
class Progress:
    """What a read found. ``next_seq`` is, per epoch that is not fenced, the
    sequence number its writer would use next; ``data_keys`` are the keys of
    the counted segments and cancel notes (compaction and cleanup delete
    them); ``saved_at`` is when the newest segment was written (0 when none).

    ``leftovers`` are objects a compaction that died midway left behind
    (never read again): segments before the compacted object's, fences
    excepted (see :func:`_leftovers`), and compacted objects the state object
    does not point at. Only a claimer may delete them, and only from a read
    after its claim: before it, the owner's compaction in flight may still
    make its compacted object the current one."""

    run: RunState
    etag: str
    state: CheckpointState
    next_seq: Mapping[int, int]
    fences: frozenset[SegmentName]
    data_keys: tuple[str, ...]
    saved_at: float = 0.0
    leftovers: tuple[str, ...] = ()

    @property
    def record(self) -> RunRecord:
        """The run's record, its ``updated_at`` moved on by the saves: a save
        is one segment object and leaves the state object alone."""
        record = self.run.record
        if self.saved_at <= record.updated_at:
            return record
        return replace(record, updated_at=self.saved_at)


class _Changed(Exception):
    """The run changed under the reader (objects vanished): read again."""


@dataclass
class _Assembly:
    phases: list[PhaseOutput] = field(default_factory=list)
    segments: dict[int, list[Message]] = field(default_factory=dict)

    def apply(self, segment: Segment, run_id: str) -> None:
        if segment.first_phase > len(self.phases):
            raise CorruptCheckpoint(
                run_id,
                f"segment {segment.name} starts at phase {segment.first_phase}, "
                f"only {len(self.phases)} are saved",
            )
        self.phases[segment.first_phase :] = segment.phases
        messages = self.segments.setdefault(segment.segment, [])
        if segment.first_message > len(messages):
            raise CorruptCheckpoint(
                run_id,
                f"segment {segment.name} starts at message {segment.first_message}, "
                f"only {len(messages)} are saved",
            )
        messages[segment.first_message :] = segment.messages

    def state(self) -> CheckpointState:
        return CheckpointState(tuple(self.segments.get(len(self.phases), ())), tuple(self.phases))


class ProgressReader:
    """Reads runs' progress, caching segment objects (they are written once)."""

    def __init__(self, objects: ObjectClient, layout: Layout) -> None:
        # One reader per operation: the cache must not outlive it, or a damaged
        # object would hide behind its cached copy.
        self._objects = objects
        self._layout = layout
        self._cache: dict[str, SequenceObject] = {}

    async def read(self, run: RunState, etag: str) -> Progress:
        """The progress of ``run`` (whose state object had ``etag``)."""
        record = run.record
        key = self._layout.state(record.namespace, record.run_id)
        for _ in range(_ATTEMPTS):
            if run.record.status is RunStatus.COMPLETED or not run.record.incarnation:
                # complete() cleared the progress (its cleanup may still be
                # deleting); a quarantine stub (no incarnation) has none.
                return Progress(run, etag, CheckpointState(), {}, frozenset(), ())
            try:
                return await self._read_once(run, etag)
            except _Changed:
                got = await self._objects.get(key)
                if got is None:
                    return Progress(run, etag, CheckpointState(), {}, frozenset(), ())
                if got.etag == etag:
                    raise CorruptCheckpoint(
                        record.run_id, "a segment object is missing (deleted outside outlast?)"
                    ) from None
                run, etag = decode_state(got.body, record.run_id), got.etag
        raise StoreError(f"run {record.run_id!r} kept changing while it was being read; try again")

    async def _read_once(self, run: RunState, etag: str) -> Progress:
        record = run.record
        # One listing of the incarnation's folder: its segments (and fences and
        # notes), and its compacted objects (for the leftovers).
        folder = self._layout.data(record.namespace, record.run_id, record.incarnation)
        listed: dict[SegmentName, str] = {}
        compacted: list[str] = []
        for key in await self._objects.list_keys(folder):
            found = self._layout.data_key(record.namespace, record.run_id, key)
            if found is None or found.incarnation != record.incarnation:
                continue
            if found.segment:
                listed[found.name] = key
            else:
                compacted.append(key)

        base = Snapshot(through=NO_SEGMENT, at=0.0)
        if run.compaction is not None:
            got = await self._objects.get(run.compaction.key)
            if got is None:
                raise _Changed
            base = decode_snapshot(got.body, record.run_id)
            if base.through != run.compaction.through:
                raise CorruptCheckpoint(record.run_id, "compacted state does not match its key")

        wanted = sorted(
            name
            for name in listed
            if (name.epoch, name.seq) > (base.through.epoch, base.through.seq)
            and name.epoch <= record.epoch
        )
        objects = await asyncio.gather(
            *(self._fetch(listed[name], name, record.run_id) for name in wanted)
        )

        assembly = _Assembly(list(base.phases), {base.segment: list(base.messages)})
        next_seq: dict[int, int] = {}
        fences: set[SegmentName] = set()
        fenced: set[int] = set()
        data_keys = [listed[base.through]] if base.through in listed else []
        saved_at = base.at
        for name, obj in zip(wanted, objects, strict=True):
            if name.epoch in fenced:
                continue  # nothing after a fence counts (and none should exist)
            if name.seq != next_seq.get(name.epoch, _first_seq(name.epoch, base.through)):
                raise _Changed  # a gap: objects were deleted meanwhile, or the run is damaged
            if isinstance(obj, Fence):
                fences.add(name)
                fenced.add(name.epoch)
                continue
            if not isinstance(obj, CancelNote):  # a note only holds its place
                assembly.apply(obj, record.run_id)
                saved_at = max(saved_at, obj.at)
            data_keys.append(listed[name])
            next_seq[name.epoch] = name.seq + 1
        open_epochs = {
            epoch: next_seq.get(epoch, _first_seq(epoch, base.through))
            for epoch in range(max(base.through.epoch, 1), record.epoch + 1)
            if epoch not in fenced
        }
        return Progress(
            run=run,
            etag=etag,
            state=assembly.state(),
            next_seq=open_epochs,
            fences=frozenset(fences),
            data_keys=tuple(data_keys),
            saved_at=saved_at,
            leftovers=_leftovers(run, listed, compacted),
        )

    async def _fetch(self, key: str, name: SegmentName, run_id: str) -> SequenceObject:
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        got = await self._objects.get(key)
        if got is None:
            raise _Changed
        obj = decode_sequence_object(got.body, run_id, name)
        self._cache[key] = obj
        return obj


def _leftovers(
    run: RunState, listed: Mapping[SegmentName, str], compacted: list[str]
) -> tuple[str, ...]:
    """What a compaction that died midway left: compacted objects other than
    the current one (written, but the swap never landed or was superseded),
    and segments before the current one's ``through`` (folded, not deleted
    yet). The segment at ``through`` stays (a reader holding an older state
    object must see a gap), and so does the last object of every older epoch:
    it may be a fence, which must stay as long as the run does."""
    current = run.compaction
    stray = [key for key in compacted if current is None or key != current.key]
    if current is None:
        return tuple(stray)
    through = current.through
    last: dict[int, int] = {}
    for name in listed:
        if name.epoch < through.epoch:
            last[name.epoch] = max(last.get(name.epoch, name.seq), name.seq)
    folded = [
        key
        for name, key in sorted(listed.items())
        if name < through and not (name.epoch < through.epoch and last[name.epoch] == name.seq)
    ]
    return (*folded, *stray)


def _first_seq(epoch: int, through: SegmentName) -> int:
    return through.seq + 1 if epoch == through.epoch else 0
