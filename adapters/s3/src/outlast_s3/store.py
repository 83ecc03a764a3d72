"""``s3://bucket/prefix``: the S3 CheckpointerFactory.

Lease expiry is judged by this process's clock (S3 has no server clock to
ask). Safety does not depend on it: a claim is a compare-and-swap of the state
object and fences the old epoch, so a stale writer is harmless whatever the
clocks say; skew only makes a run count as abandoned early or late by the
skew between the workers' clocks.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
import uuid
from dataclasses import replace
from typing import NoReturn

from outlast import codec
from outlast.delta import SaveCursor
from outlast.errors import ConfigurationError, CorruptCheckpoint, RunExists, StoreError
from outlast.ports import (
    DEFAULT_NAMESPACE,
    CheckpointState,
    Claim,
    ResumeState,
    RunPage,
    RunRecord,
    RunStart,
    RunStatus,
    StoredRun,
    validate_lease,
    validate_start,
)
from outlast_s3.checkpointer import S3Checkpointer
from outlast_s3.documents import (
    Fence,
    RunState,
    decode_state,
    encode_fence,
    encode_state,
)
from outlast_s3.layout import Layout, SegmentName
from outlast_s3.objects import ObjectClient, PreconditionFailed
from outlast_s3.options import S3Options
from outlast_s3.progress import Progress, ProgressReader

log = logging.getLogger("outlast_s3")

_MARKER = codec.dumps({"v": codec.FORMAT_VERSION, "type": "running-marker"}).encode()
_FENCE_ATTEMPTS = 100


class S3Store:
    """A CheckpointerFactory keeping runs as objects in one S3 bucket."""

    def __init__(self, options: S3Options) -> None:
        self.options = options
        self._objects = ObjectClient(options)
        self._layout = Layout(options.prefix)
        self._conditional_writes_checked = False
        self._probe_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"S3Store({self.options.url!r})"

    @property
    def requests(self) -> int:
        """S3 requests sent so far (botocore's automatic retries not counted)."""
        return self._objects.requests

    async def begin(self, start: RunStart) -> S3Checkpointer:
        validate_start(start)
        stored_input = codec.loads(codec.dumps(start.input), start.run_id)
        now = time.time()
        record = RunRecord.begun(start, now, stored_input)
        run = RunState(record, start.lease, incarnation=uuid.uuid4().hex, writer=uuid.uuid4().hex)
        body = encode_state(run)
        await self._check_conditional_writes()
        key = self._layout.state(start.namespace, start.run_id)
        # The marker goes first: a crash between the two writes leaves a marker
        # without a run (skipped), never a running run that recovery cannot find.
        await self._objects.put(self._layout.running_marker(start.namespace, start.run_id), _MARKER)
        try:
            etag = await self._objects.put(key, body, if_none_match=True)
        except PreconditionFailed:
            got = await self._objects.get(key)
            if got is None or got.body != body:
                raise RunExists(start.run_id, start.namespace) from None
            etag = got.etag  # our own write, retried by botocore after it landed
        return self._checkpointer(run, etag, SaveCursor(), ())

    async def interrupted(
        self, namespace: str = DEFAULT_NAMESPACE, limit: int = 100
    ) -> list[RunRecord]:
        index = self._layout.running_index(namespace)
        run_ids = [
            run_id
            for key in await self._objects.list_keys(index)
            if (run_id := self._layout.run_id_of_marker(namespace, key)) is not None
        ]
        now = time.time()
        found = [
            record
            for record in await self._records(namespace, run_ids)
            if record.status is RunStatus.RUNNING
            and (record.lease_expires_at is None or record.lease_expires_at <= now)
        ]
        found.sort(key=lambda r: (r.lease_expires_at or 0.0, r.run_id))
        return found[:limit]

    async def claim(
        self, run_id: str, *, owner: str, lease: float, namespace: str = DEFAULT_NAMESPACE
    ) -> Claim | None:
        validate_lease(lease)
        key = self._layout.state(namespace, run_id)
        got = await self._objects.get(key)
        if got is None:
            return None
        run = decode_state(got.body, run_id)
        now = time.time()
        expires = run.record.lease_expires_at
        if run.record.status is not RunStatus.RUNNING or (expires is not None and expires > now):
            return None
        await self._check_conditional_writes()
        # Read (and so validate) the progress before taking the run: a corrupt
        # transcript raises here and leaves the record as it was.
        reader = ProgressReader(self._objects, self._layout)
        await reader.read(run, got.etag)
        claimed = replace(
            run,
            record=replace(
                run.record,
                epoch=run.record.epoch + 1,
                attempts=run.record.attempts + 1,
                owner=owner,
                lease_expires_at=now + lease,
                updated_at=now,
            ),
            lease=lease,
            rev=run.rev + 1,
            writer=uuid.uuid4().hex,
        )
        try:
            etag = await self._objects.put(key, encode_state(claimed), if_match=got.etag)
        except PreconditionFailed:
            return None  # another claimer (or a renew, or a delete) got there first
        progress = await self._fence(reader, claimed, etag)
        state = progress.state
        cursor = SaveCursor(phases=len(state.phases), messages=len(state.history))
        checkpointer = self._checkpointer(progress.run, progress.etag, cursor, progress.data_keys)
        return Claim(checkpointer, ResumeState(state.history, state.phases), progress.run.record)

    async def load(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> StoredRun | None:
        got = await self._objects.get(self._layout.state(namespace, run_id))
        if got is None:
            return None
        run = decode_state(got.body, run_id)
        if run.record.status is RunStatus.COMPLETED:
            return StoredRun(run.record, CheckpointState())
        progress = await ProgressReader(self._objects, self._layout).read(run, got.etag)
        return StoredRun(progress.run.record, progress.state)

    async def list(
        self,
        namespace: str = DEFAULT_NAMESPACE,
        status: RunStatus | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> RunPage:
        run_ids = sorted(
            run_id for run_id in await self._run_ids(namespace) if cursor is None or run_id > cursor
        )
        wanted: builtins.list[RunRecord] = []
        batch = max(limit + 1, 16)
        for start in range(0, len(run_ids), batch):
            records = await self._records(namespace, run_ids[start : start + batch])
            wanted.extend(r for r in records if status is None or r.status is status)
            if len(wanted) > limit:
                break
        page = tuple(wanted[:limit])
        more = len(wanted) > limit
        return RunPage(page, page[-1].run_id if more and page else None)

    async def delete(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> bool:
        key = self._layout.state(namespace, run_id)
        existed = await self._objects.get(key) is not None
        # The state object goes first: from then on the run is gone for every
        # reader, and the rest is cleanup.
        await self._objects.delete([key])
        folder = await self._objects.list_keys(self._layout.run(namespace, run_id))
        await self._objects.delete([*folder, self._layout.running_marker(namespace, run_id)])
        return existed

    async def purge(self, older_than: float, namespace: str = DEFAULT_NAMESPACE) -> int:
        cutoff = time.time() - older_than
        records = await self._records(namespace, await self._run_ids(namespace))
        doomed = [
            r.run_id for r in records if r.status is not RunStatus.RUNNING and r.updated_at < cutoff
        ]
        removed = await asyncio.gather(*(self.delete(run_id, namespace) for run_id in doomed))
        return sum(removed)

    async def close(self) -> None:
        await self._objects.close()

    async def corrupt(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> None:
        """Test helper: damage the run's saved transcript, leaving its state
        object intact, so load and claim raise CorruptCheckpoint (what the
        conformance suite's corrupt-record tests need)."""
        got = await self._objects.get(self._layout.state(namespace, run_id))
        if got is None:
            raise StoreError(f"no run {run_id!r} in namespace {namespace!r} to corrupt")
        run = decode_state(got.body, run_id)
        progress = await ProgressReader(self._objects, self._layout).read(run, got.etag)
        epoch = run.record.epoch
        name = SegmentName(epoch, progress.next_seq.get(epoch, 0))
        key = self._layout.segment(namespace, run_id, run.incarnation, name)
        await self._objects.put(key, b"{not json")

    async def _check_conditional_writes(self) -> None:
        """Once per factory, before its first write: prove the endpoint honours
        If-None-Match and If-Match. A store that silently ignores them would let
        two claimers both win, so refuse to run on it."""
        if self._conditional_writes_checked:
            return
        async with self._probe_lock:
            if not self._conditional_writes_checked:  # another task may have probed
                await self._probe_conditional_writes()
            self._conditional_writes_checked = True

    async def _probe_conditional_writes(self) -> None:
        root = f"{self.options.prefix}/" if self.options.prefix else ""
        key = f"{root}.outlast-probe-{uuid.uuid4().hex}"
        await self._objects.put(key, _MARKER, if_none_match=True)
        try:
            if not await self._refused(key, if_none_match=True):
                self._conditional_writes_missing("If-None-Match")
            if not await self._refused(key, if_match=f'"{"0" * 32}"'):
                self._conditional_writes_missing("If-Match")
        finally:
            await self._objects.delete([key])

    async def _refused(
        self, key: str, *, if_match: str | None = None, if_none_match: bool = False
    ) -> bool:
        try:
            await self._objects.put(key, _MARKER, if_match=if_match, if_none_match=if_none_match)
        except PreconditionFailed:
            return True
        return False

    def _conditional_writes_missing(self, header: str) -> NoReturn:
        raise ConfigurationError(
            f"the S3 endpoint of {self.options.url!r} ignored {header} on PutObject; "
            "outlast-s3 needs S3 conditional writes (If-None-Match and If-Match) to fence "
            "runs safely: use Amazon S3 or an S3-compatible store that supports them"
        )

    async def _fence(self, reader: ProgressReader, run: RunState, etag: str) -> Progress:
        """Fence every superseded epoch not fenced yet, then read the progress.

        A fence goes at the epoch's next sequence number. When it loses to the
        old writer's late segment, that segment counts (its save returned
        success) and the fence moves one further.
        """
        for _ in range(_FENCE_ATTEMPTS):
            progress = await reader.read(run, etag)
            if progress.run.record.epoch != run.record.epoch:
                raise StoreError(f"run {run.record.run_id!r} was claimed again while claiming")
            stale = {
                epoch: seq for epoch, seq in progress.next_seq.items() if epoch < run.record.epoch
            }
            if not stale:
                return progress
            fences = [SegmentName(epoch, seq) for epoch, seq in stale.items()]
            landed = await asyncio.gather(
                *(self._put_fence(run.record, run.incarnation, name) for name in fences)
            )
            if all(landed):
                # Nothing can have been written at or after a fence that landed
                # where the old writer's next segment would go: this read is final.
                return replace(
                    progress,
                    next_seq={e: s for e, s in progress.next_seq.items() if e not in stale},
                    fences=progress.fences | set(fences),
                )
            # A fence lost to a late segment: read again; that segment counts
            # (its save returned success) and the fence moves one further.
        raise StoreError(
            f"run {run.record.run_id!r}: could not fence the previous owner; try the claim again"
        )

    async def _put_fence(self, record: RunRecord, incarnation: str, name: SegmentName) -> bool:
        key = self._layout.segment(record.namespace, record.run_id, incarnation, name)
        body = encode_fence(Fence(name, by_epoch=record.epoch))
        try:
            await self._objects.put(key, body, if_none_match=True)
        except PreconditionFailed:
            return False
        return True

    async def _run_ids(self, namespace: str) -> builtins.list[str]:
        return [
            run_id
            for folder in await self._objects.list_folders(self._layout.runs(namespace))
            if (run_id := self._layout.run_id_of_folder(namespace, folder)) is not None
        ]

    async def _records(
        self, namespace: str, run_ids: builtins.list[str]
    ) -> builtins.list[RunRecord]:
        """The records of ``run_ids`` in that order; absent and corrupt ones skipped."""
        gotten = await asyncio.gather(
            *(self._objects.get(self._layout.state(namespace, run_id)) for run_id in run_ids)
        )
        records: builtins.list[RunRecord] = []
        for run_id, got in zip(run_ids, gotten, strict=True):
            if got is None:
                continue
            try:
                records.append(decode_state(got.body, run_id).record)
            except CorruptCheckpoint as exc:
                log.warning("skipping run %r in namespace %r: %s", run_id, namespace, exc)
        return records

    def _checkpointer(
        self, run: RunState, etag: str, cursor: SaveCursor, data_keys: tuple[str, ...]
    ) -> S3Checkpointer:
        return S3Checkpointer(
            objects=self._objects,
            layout=self._layout,
            run=run,
            etag=etag,
            cursor=cursor,
            data_keys=data_keys,
            compact_after=self.options.compact_after,
        )
