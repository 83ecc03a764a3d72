"""Fences: how a writer of a run is stopped (and how its owner hears of a cancel).

A save is one PUT of the writer's next segment key with If-None-Match: *, so
the one way to stop a writer is to take that key first: a **fence** object is
written there (If-None-Match too). When the fence loses to the writer's late
segment, that segment landed first (its save returned success) and the fence
moves one further. Fences stay as long as anything of the run's id does, and
a delete keeps them too (they are tiny), so a zombie of a deleted run keeps
failing.

Where a writer writes next is found in one of two ways:

* after a claim (:meth:`Fences.after_claim`), from the progress the claim
  reads anyway: it knows every object's type, and a late segment joins the
  state the claimer resumes from;
* for a quarantine, a cancel or a delete (:meth:`Fences.seal`), without
  parsing the transcript (it may be what is damaged), from the listing. A
  fence is always the last key of its epoch (a writer never gets past it, and
  an epoch is fenced once), so reading the last object of each epoch tells
  which epochs are fenced already, and which keys are fences to keep.

The same key carries a cancel request to a run's live owner without costing
its saves a request: :meth:`Fences.ask_to_cancel` leaves a **cancel note** at
the owner's next sequence number; its next save finds the key taken, reads
the note, reports the request and writes its segment one further. A note is
never placed after a fence (that writer is stopped already), so a fence stays
the last key of its epoch.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

from outlast.adapter import CorruptCheckpoint, RunRecord, StoreError
from outlast_s3.documents import (
    CancelNote,
    Fence,
    RunState,
    decode_sequence_object,
    encode_cancel_note,
    encode_fence,
)
from outlast_s3.layout import DataKey, Layout, SegmentName
from outlast_s3.objects import ObjectClient, PreconditionFailed
from outlast_s3.progress import Progress, ProgressReader

_ATTEMPTS = 100
"""Fence placements tried before giving up: each retry follows a segment that
landed first, and a writer cannot land many while its fence is being placed."""

_Slot = tuple[str, int]
"""(incarnation, epoch): the sequence of one writer."""


@dataclass(frozen=True, slots=True)
class Sealed:
    """What :meth:`Fences.seal` found once every writer it had to stop was
    fenced: ``doomed``, the keys of every data object (segments, compacted
    objects; fences excluded), and the ``incarnations`` that have objects."""

    doomed: tuple[str, ...]
    incarnations: frozenset[str]


class Fences:
    """Places fences in one bucket prefix (shared by a store's operations)."""

    def __init__(self, objects: ObjectClient, layout: Layout) -> None:
        self._objects = objects
        self._layout = layout

    async def put(
        self,
        namespace: str,
        run_id: str,
        incarnation: str,
        name: SegmentName,
        *,
        by_epoch: int,
        cause: str,
    ) -> bool:
        """Write a fence at ``name``; False when an object holds that key already."""
        key = self._layout.segment(namespace, run_id, incarnation, name)
        body = encode_fence(Fence(name, by_epoch, cause))
        try:
            await self._objects.put(key, body, if_none_match=True)
        except PreconditionFailed:
            return False
        return True

    async def after_claim(self, reader: ProgressReader, run: RunState, etag: str) -> Progress:
        """Fence every epoch ``run`` (just claimed) superseded that is not
        fenced yet, then return the progress to resume from.

        A fence that loses to the old writer's late segment makes the reader
        read again: that segment counts (its save returned success).
        """
        record = run.record
        for _ in range(_ATTEMPTS):
            progress = await reader.read(run, etag)
            if progress.run.record.epoch != record.epoch:
                raise StoreError(f"run {record.run_id!r} was claimed again while claiming")
            stale = {epoch: seq for epoch, seq in progress.next_seq.items() if epoch < record.epoch}
            if not stale:
                return progress
            fences = [SegmentName(epoch, seq) for epoch, seq in stale.items()]
            landed = await asyncio.gather(
                *(
                    self.put(
                        record.namespace,
                        record.run_id,
                        record.incarnation,
                        name,
                        by_epoch=record.epoch,
                        cause="claim",
                    )
                    for name in fences
                )
            )
            if all(landed):
                # Nothing can have been written at or after a fence that landed
                # where the old writer's next segment would go: this read is final.
                return replace(
                    progress,
                    next_seq={e: s for e, s in progress.next_seq.items() if e not in stale},
                    fences=progress.fences | set(fences),
                )
        raise StoreError(
            f"run {record.run_id!r}: could not fence the previous owner; try the claim again"
        )

    async def seal(
        self,
        namespace: str,
        run_id: str,
        *,
        incarnation: str | None,
        epochs: range,
        by_epoch: int,
        cause: str,
    ) -> Sealed:
        """Fence ``epochs`` of ``incarnation`` where they are not fenced yet,
        reading no transcript; say which objects are data.

        With ``incarnation`` None (the state object does not parse, so the
        live incarnation and epoch are unknown) every epoch of every
        incarnation that has segment objects is fenced: a writer that never
        saved in its epoch leaves nothing to find, and is not.
        """
        layout = self._layout
        scope = (
            layout.run(namespace, run_id)
            if incarnation is None
            else layout.data(namespace, run_id, incarnation)
        )
        for _ in range(_ATTEMPTS):
            keys = [
                found
                for key in await self._objects.list_keys(scope)
                if (found := layout.data_key(namespace, run_id, key)) is not None
                and (incarnation is None or found.incarnation == incarnation)
            ]
            last = _last_segments(keys)
            kinds = await asyncio.gather(*(self._is_fence(k, run_id) for k in last.values()))
            if any(kind is None for kind in kinds):
                continue  # compaction deleted one meanwhile: list again
            fenced = {slot for slot, kind in zip(last, kinds, strict=True) if kind}
            wanted = set(last) if incarnation is None else {(incarnation, e) for e in epochs}
            open_slots = sorted(wanted - fenced)
            landed = await asyncio.gather(
                *(
                    self.put(
                        namespace,
                        run_id,
                        slot[0],
                        SegmentName(slot[1], last[slot].name.seq + 1 if slot in last else 0),
                        by_epoch=by_epoch,
                        cause=cause,
                    )
                    for slot in open_slots
                )
            )
            if all(landed):
                kept = {last[slot].key for slot in fenced}
                return Sealed(
                    doomed=tuple(k.key for k in keys if k.key not in kept),
                    incarnations=frozenset(k.incarnation for k in keys),
                )
            # A fence lost to a segment that landed first: list again, fence after it.
        raise StoreError(f"run {run_id!r}: could not fence its writer; try again")

    async def ask_to_cancel(self, record: RunRecord, at: float) -> bool:
        """Leave a cancel note where the owner of ``record``'s epoch saves
        next. False when nothing needs one: that epoch is fenced already, or
        its last object is a note the owner has not saved past yet."""
        layout = self._layout
        ns, run_id, incarnation = record.namespace, record.run_id, record.incarnation
        folder = layout.segments(ns, run_id, incarnation)
        for _ in range(_ATTEMPTS):
            listed = await self._objects.list_keys(
                layout.epoch_segments(ns, run_id, incarnation, record.epoch)
            )
            names = [n for key in listed if (n := SegmentName.parse(key[len(folder) :]))]
            name = SegmentName(record.epoch, 0)
            if names:
                last = max(names)
                got = await self._objects.get(layout.segment(ns, run_id, incarnation, last))
                if got is None:
                    continue  # compaction deleted it meanwhile: list again
                try:
                    found = decode_sequence_object(got.body, run_id, last)
                except CorruptCheckpoint:
                    found = None  # a damaged segment is data: the note goes after it
                if isinstance(found, Fence | CancelNote):
                    return False
                name = SegmentName(record.epoch, last.seq + 1)
            key = layout.segment(ns, run_id, incarnation, name)
            try:
                await self._objects.put(
                    key, encode_cancel_note(CancelNote(name, at)), if_none_match=True
                )
            except PreconditionFailed:
                continue  # a save (or a fence, or another note) took the key first
            return True
        raise StoreError(f"run {run_id!r}: could not leave the cancel request for its owner")

    async def _is_fence(self, key: DataKey, run_id: str) -> bool | None:
        """Whether the object at ``key`` is a fence; None when it vanished."""
        got = await self._objects.get(key.key)
        if got is None:
            return None
        try:
            return isinstance(decode_sequence_object(got.body, run_id, key.name), Fence)
        except CorruptCheckpoint:
            return False  # a damaged segment: data, and its epoch is not fenced


def _last_segments(keys: list[DataKey]) -> dict[_Slot, DataKey]:
    """The last segment object of each (incarnation, epoch)."""
    last: dict[_Slot, DataKey] = {}
    for key in keys:
        if not key.segment:
            continue
        slot = (key.incarnation, key.name.epoch)
        if slot not in last or last[slot].name.seq < key.name.seq:
            last[slot] = key
    return last
