"""One run's durable record in S3, held at one epoch.

``save`` is one PUT of a new, immutable segment object at
``<epoch>-<seq>`` with If-None-Match: *. A claimer fences the superseded epoch
by writing a fence object at that epoch's next sequence number first, so the
fenced writer's next segment PUT fails its precondition: it raises LeaseLost
and nothing it wrote after the claim is ever read. Lease and status changes
replace the small state object with If-Match on its ETag (compare-and-swap).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace

from outlast import codec
from outlast.delta import SaveCursor
from outlast.errors import LeaseLost, StoreError
from outlast.messages import JSON
from outlast.ports import CheckpointState, RunStatus
from outlast_s3.documents import (
    Compaction,
    RunState,
    Segment,
    Snapshot,
    decode_state,
    encode_segment,
    encode_snapshot,
    encode_state,
)
from outlast_s3.layout import Layout, SegmentName
from outlast_s3.objects import ObjectClient, PreconditionFailed

log = logging.getLogger("outlast_s3")

_CAS_ATTEMPTS = 5


class S3Checkpointer:
    """A Checkpointer writing segments and compare-and-swapping the state object.

    ``fences`` are the fence objects the claim found (kept when the run
    completes, so a zombie of an older epoch stays fenced); ``data_keys`` the
    segment objects that count, oldest first (compaction deletes them).
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
        self._cursor = cursor
        self._next_seq = 0
        self._data_keys = list(data_keys)
        self._compact_after = compact_after
        self._writer = uuid.uuid4().hex
        self._finished: RunStatus | None = None

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

    async def save(self, state: CheckpointState) -> None:
        delta = self._cursor.delta(state)
        self._check_not_finished()
        if delta.empty:
            await self._verify_owner()
            return
        name = SegmentName(self._epoch, self._next_seq)
        body = encode_segment(
            Segment(
                name=name,
                at=time.time(),
                first_phase=delta.first_phase,
                phases=delta.phases,
                segment=delta.segment,
                first_message=delta.first_message,
                messages=delta.messages,
            )
        )
        key = self._layout.segment(self.namespace, self.run_id, self._run.incarnation, name)
        await self._put_segment(key, body)
        self._next_seq += 1
        self._data_keys.append(key)
        self._cursor = delta.after
        if len(self._data_keys) > self._compact_after:
            await self._compact(state, name)

    async def complete(self, result: JSON) -> None:
        stored = codec.loads(codec.dumps(result), self.run_id)
        now = time.time()
        compaction = self._run.compaction
        await self._write_state(
            lambda run: replace(
                run,
                record=replace(
                    run.record,
                    status=RunStatus.COMPLETED,
                    result=stored,
                    lease_expires_at=None,
                    updated_at=now,
                ),
                compaction=None,
            )
        )
        self._finished = RunStatus.COMPLETED
        await self._best_effort(
            self._clear_progress(compaction), "clear the finished run's progress"
        )

    async def fail(self, error: str) -> None:
        now = time.time()
        await self._write_state(
            lambda run: replace(
                run,
                record=replace(
                    run.record,
                    status=RunStatus.FAILED,
                    error=error,
                    lease_expires_at=None,
                    updated_at=now,
                ),
            )
        )
        self._finished = RunStatus.FAILED
        marker = self._layout.running_marker(self.namespace, self.run_id)
        await self._best_effort(self._objects.delete([marker]), "remove the running marker")

    async def release(self) -> None:
        now = time.time()
        await self._write_state(
            lambda run: replace(
                run, record=replace(run.record, lease_expires_at=None, updated_at=now)
            )
        )

    async def renew(self) -> None:
        now = time.time()
        await self._write_state(
            lambda run: replace(
                run, record=replace(run.record, lease_expires_at=now + run.lease, updated_at=now)
            )
        )

    async def _put_segment(self, key: str, body: bytes) -> None:
        for _ in range(_CAS_ATTEMPTS):
            try:
                await self._objects.put(key, body, if_none_match=True)
                return
            except PreconditionFailed:
                existing = await self._objects.get(key)
            if existing is None:
                continue  # 409: a concurrent conditional write (a fence) lost; try again
            if existing.body == body:
                return  # our own earlier attempt landed; botocore retried it
            raise LeaseLost(self.run_id, self._epoch, "a claimer fenced this epoch")
        raise StoreError(f"run {self.run_id!r}: could not write segment {key!r}; try again")

    async def _verify_owner(self) -> None:
        got = await self._objects.get(self._layout.state(self.namespace, self.run_id))
        if got is None:
            raise LeaseLost(self.run_id, self._epoch, "the run was deleted")
        self._check_current(decode_state(got.body, self.run_id))

    def _check_current(self, current: RunState) -> None:
        if current.incarnation != self._run.incarnation:
            raise LeaseLost(self.run_id, self._epoch, "the run was deleted and begun again")
        if current.record.epoch != self._epoch:
            raise LeaseLost(self.run_id, self._epoch, f"epoch {current.record.epoch} owns it")
        if current.record.status is not RunStatus.RUNNING:
            raise LeaseLost(self.run_id, self._epoch, f"the run is {current.record.status}")

    def _check_not_finished(self) -> None:
        if self._finished is not None:
            raise LeaseLost(self.run_id, self._epoch, f"the run is {self._finished}")

    async def _write_state(self, change: Callable[[RunState], RunState]) -> None:
        """Compare-and-swap the state object, re-reading it after a conflict."""
        self._check_not_finished()
        key = self._layout.state(self.namespace, self.run_id)
        for _ in range(_CAS_ATTEMPTS):
            new = replace(change(self._run), rev=self._run.rev + 1, writer=self._writer)
            body = encode_state(new)
            try:
                etag = await self._objects.put(key, body, if_match=self._etag)
            except PreconditionFailed:
                got = await self._objects.get(key)
                if got is None:
                    raise LeaseLost(self.run_id, self._epoch, "the run was deleted") from None
                if got.body == body:
                    self._run, self._etag = new, got.etag  # our retried write landed
                    return
                current = decode_state(got.body, self.run_id)
                self._check_current(current)
                self._run, self._etag = current, got.etag
                continue
            self._run, self._etag = new, etag
            return
        raise StoreError(f"run {self.run_id!r}: its state kept changing; try again")

    async def _compact(self, state: CheckpointState, through: SegmentName) -> None:
        """Fold the segments into one object. Best effort: the save is already
        durable, so a failure is logged and compaction is tried at a later save."""
        previous = self._run.compaction
        key = self._layout.compacted(self.namespace, self.run_id, self._run.incarnation, through)
        snapshot = Snapshot(
            through=through,
            at=time.time(),
            phases=state.phases,
            segment=len(state.phases),
            messages=state.history,
        )
        try:
            await self._objects.put(key, encode_snapshot(snapshot), if_none_match=True)
            await self._write_state(lambda run: replace(run, compaction=Compaction(key, through)))
        except (StoreError, PreconditionFailed) as exc:
            log.warning("run %r: compaction failed, will retry later: %s", self.run_id, exc)
            return
        # Keep the segment at ``through`` itself: a reader holding the previous
        # state object then sees a gap and re-reads the state (see progress.py).
        doomed = self._data_keys[:-1]
        if previous is not None:
            doomed.append(previous.key)
        self._data_keys = self._data_keys[-1:]
        await self._best_effort(self._objects.delete(doomed), "delete compacted segments")

    async def _clear_progress(self, compaction: Compaction | None) -> None:
        """After complete: delete segments and compacted state, keep fences."""
        doomed = list(self._data_keys)
        if compaction is not None:
            doomed.append(compaction.key)
        doomed.append(self._layout.running_marker(self.namespace, self.run_id))
        self._data_keys = []
        await self._objects.delete(doomed)

    async def _best_effort(self, cleanup: Awaitable[None], what: str) -> None:
        try:
            await cleanup
        except StoreError as exc:
            log.warning(
                "run %r: could not %s (harmless; deleting the run removes it): %s",
                self.run_id,
                what,
                exc,
            )
