"""``s3://bucket/prefix``: the S3 CheckpointerFactory.

Every change of a record reads the state object, applies the transition of
:mod:`outlast.transitions` to its record and writes the result with a
compare-and-swap (If-Match on the ETag read), or with If-None-Match for a
begin or a submit. Lease expiry (and a wait's timeout) is judged by this
process's clock (S3 has no server clock to ask). Safety does not depend on
it: a claim is a compare-and-swap of the state object and fences the old
epoch, so a stale writer is harmless whatever the clocks say; skew only makes
a run count as abandoned (or its wait as timed out) early or late by the skew
between the workers' clocks.

S3 has no notifications: the store is no ChangeNotifier, and a fleet's
workers and result waiters poll it (outlast.Store's front does); a run that
was released or sent its input is found at a worker's next poll.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace

from outlast.adapter import (
    DEFAULT_NAMESPACE,
    JSON,
    Claim,
    CorruptCheckpoint,
    ResumeState,
    RunExists,
    RunPage,
    RunRecord,
    RunStart,
    RunStatus,
    SaveCursor,
    StoredRun,
    StoreError,
    UnknownFormat,
    codec,
    transitions,
)
from outlast_s3.checkpointer import Change, S3Checkpointer
from outlast_s3.documents import RunState, decode_state, encode_state
from outlast_s3.fences import Fences
from outlast_s3.layout import Layout
from outlast_s3.objects import ObjectClient, PreconditionFailed, StoredObject, best_effort
from outlast_s3.options import S3Options
from outlast_s3.probe import ConditionalWritesProbe
from outlast_s3.progress import ProgressReader
from outlast_s3.spread import ClaimSpread

log = logging.getLogger("outlast_s3")

_MARKER = codec.dumps({"v": codec.FORMAT_VERSION, "type": "running-marker"}).encode()
_CLOSE_WAIT = 60.0
"""Seconds ``close`` waits for compactions in flight before cancelling them."""
_ATTEMPTS = 5
"""Compare-and-swaps tried while the state object keeps changing under a
quarantine or a delete (a renew, a release)."""


class S3Store:
    """A CheckpointerFactory keeping runs as objects in one S3 bucket.

    ``objects`` (the bucket's client) and ``layout`` (the keys) are public
    for the store's checkpointers, tools and tests.
    """

    def __init__(self, options: S3Options) -> None:
        self.options = options
        self.objects = ObjectClient(options)
        self.layout = Layout(options.prefix)
        self._fences = Fences(self.objects, self.layout)
        self._probe = ConditionalWritesProbe(self.objects, options)
        self._spread = ClaimSpread()
        self._background: set[asyncio.Task[None]] = set()
        """Compactions in flight (the checkpointers' background tasks)."""

    def __repr__(self) -> str:
        return f"S3Store({self.options.url!r})"

    @property
    def requests(self) -> int:
        """S3 requests sent so far (botocore's automatic retries not counted)."""
        return self.objects.requests

    async def begin(self, start: RunStart) -> S3Checkpointer:
        stored_input = codec.loads(codec.dumps(start.input), start.run_id)
        run, etag = await self._create(transitions.begin(start, stored_input, time.time()))
        return self._checkpointer(run, etag, SaveCursor(), ())

    async def submit(self, start: RunStart) -> None:
        stored_input = codec.loads(codec.dumps(start.input), start.run_id)
        await self._create(transitions.submit(start, stored_input, time.time()))

    async def claim_next(
        self,
        kinds: Sequence[str],
        *,
        owner: str,
        lease: float,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> Claim | None:
        """The claimable runs of ``kinds`` as ``interrupted`` finds them, tried
        from a start the spread picks (see spread.py), each with ``claim``'s
        compare-and-swap: a run another worker took is skipped."""
        wanted = set(kinds)
        candidates = [r for r in await self._claimable(namespace) if r.kind in wanted]
        first_try = True
        for record in self._spread.order(candidates):
            run_id = record.run_id
            try:
                claim = await self.claim(run_id, owner=owner, lease=lease, namespace=namespace)
            except UnknownFormat:
                continue  # a newer outlast's: not ours to judge
            except CorruptCheckpoint as exc:  # its progress does not parse
                await self._quarantine_logged(namespace, run_id, f"{type(exc).__name__}: {exc}")
                continue
            if claim is not None:
                self._spread.won(first_try=first_try)
                return claim
            self._spread.lost()  # another worker took it since the listing
            first_try = False
        return None

    async def cancel(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> RunRecord:
        """transitions.cancel with a compare-and-swap (judged again after a
        lost one). A run nobody owns is failed: the writer that may still hold
        it is fenced as a quarantine fences it. An owned one is flagged, and a
        cancel note is left where its owner saves next (see fences.py)."""
        run, cancelled = await self._update(
            namespace,
            run_id,
            lambda record, now: transitions.cancel(record, now, run_id, namespace),
            "cancelled",
        )
        if cancelled.status is RunStatus.RUNNING:
            try:
                await self._fences.ask_to_cancel(cancelled, cancelled.updated_at)
            except StoreError as exc:  # the request is stored: a renewal reports it
                log.warning(
                    "run %r: no cancel note for its owner, who sees the request at its "
                    "next lease renewal instead: %s",
                    run_id,
                    exc,
                )
            return cancelled
        epochs = range(_first_open_epoch(run), cancelled.epoch)
        if epochs:
            await self._fences.seal(
                namespace,
                run_id,
                incarnation=cancelled.incarnation,
                epochs=epochs,
                by_epoch=cancelled.epoch,
                cause="cancel",
            )
        await best_effort(
            self.objects.delete(self._markers(namespace, run_id, {cancelled.incarnation})),
            f"run {run_id!r}: remove the running marker",
        )
        return cancelled

    async def send(
        self, run_id: str, delivery: JSON, namespace: str = DEFAULT_NAMESPACE
    ) -> RunRecord:
        """transitions.send with a compare-and-swap (judged again after a lost
        one: of concurrent senders the first swap wins, and the others then
        find the run running and raise NotWaiting). The run keeps its running
        marker, so the next ``claim_next`` finds it; nothing is fenced: the
        writer that parked the run refuses its own writes."""
        stored = codec.loads(codec.dumps(delivery), run_id)
        _, sent = await self._update(
            namespace,
            run_id,
            lambda record, now: transitions.send(record, stored, now, run_id, namespace),
            "sent its input",
        )
        return sent

    async def interrupted(
        self, namespace: str = DEFAULT_NAMESPACE, limit: int = 100
    ) -> list[RunRecord]:
        return (await self._claimable(namespace))[:limit]

    async def claim(
        self, run_id: str, *, owner: str, lease: float, namespace: str = DEFAULT_NAMESPACE
    ) -> Claim | None:
        key = self.layout.state(namespace, run_id)
        got = await self.objects.get(key)
        if got is None:
            return None
        run = decode_state(got.body, run_id)
        claimed = transitions.claim(run.record, owner=owner, lease=lease, now=time.time())
        if claimed is None:
            return None
        await self._probe.ensure()
        # Read (and so validate) the progress before taking the run: a corrupt
        # transcript raises here and leaves the record as it was. A queued run
        # (epoch 0) has none: no writer ever held it, so there is nothing to
        # read and no epoch to fence.
        queued = run.record.queued
        reader = ProgressReader(self.objects, self.layout)
        if not queued:
            await reader.read(run, got.etag)
        taken = replace(run, record=claimed, rev=run.rev + 1, writer=uuid.uuid4().hex)
        try:
            etag = await self.objects.put(key, encode_state(taken), if_match=got.etag)
        except PreconditionFailed:
            return None  # another claimer (or a renew, or a delete) got there first
        if queued:
            checkpointer = self._checkpointer(taken, etag, SaveCursor(), ())
            return Claim(checkpointer, ResumeState(), claimed)
        progress = await self._fences.after_claim(reader, taken, etag)
        state = progress.state
        cursor = SaveCursor(phases=len(state.phases), messages=len(state.history))
        checkpointer = self._checkpointer(
            progress.run, progress.etag, cursor, progress.data_keys, progress.leftovers
        )
        return Claim(checkpointer, ResumeState(state.history, state.phases), progress.record)

    async def quarantine(
        self, run_id: str, reason: str, namespace: str = DEFAULT_NAMESPACE
    ) -> bool:
        key = self.layout.state(namespace, run_id)
        for _ in range(_ATTEMPTS):
            got = await self.objects.get(key)
            if got is None:
                return False
            try:
                run = decode_state(got.body, run_id)
            except UnknownFormat:
                return False  # a newer outlast's: not ours to judge
            except CorruptCheckpoint:
                return await self._quarantine_damaged(namespace, run_id, reason, got)
            failed = transitions.quarantine(run.record, reason, time.time())
            if failed is None:
                return False
            await self._probe.ensure()
            new = replace(run, record=failed, rev=run.rev + 1, writer=uuid.uuid4().hex)
            if await self._swap(key, encode_state(new), got.etag):
                break
        else:
            raise StoreError(f"run {run_id!r} kept changing while it was quarantined; try again")
        # Stop the writers the quarantine superseded (the epoch it ended, and
        # one a claimer that died mid-claim left unfenced).
        await self._fences.seal(
            namespace,
            run_id,
            incarnation=failed.incarnation,
            epochs=range(_first_open_epoch(run), failed.epoch),
            by_epoch=failed.epoch,
            cause="quarantine",
        )
        await best_effort(
            self.objects.delete(self._markers(namespace, run_id, {failed.incarnation})),
            f"run {run_id!r}: remove the running marker",
        )
        return True

    async def load(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> StoredRun | None:
        got = await self.objects.get(self.layout.state(namespace, run_id))
        if got is None:
            return None
        run = decode_state(got.body, run_id)
        progress = await ProgressReader(self.objects, self.layout).read(run, got.etag)
        return StoredRun(progress.record, progress.state)

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
        """Fence the run's writers, delete its state object (If-Match on the
        ETag read, so a run begun again since is never removed), then the
        deleted incarnation's own objects. Fences stay (see fences.py)."""
        key = self.layout.state(namespace, run_id)
        deleting: str | None = None  # the incarnation being deleted ("" for a stub)
        seen = False
        for _ in range(_ATTEMPTS):
            got = await self.objects.get(key)
            if got is None:
                return seen
            run = _parsed(got.body, run_id)
            incarnation = None if run is None else run.record.incarnation
            if seen and incarnation and incarnation != deleting:
                return True  # ours is gone: this is a run begun again since
            seen, deleting = True, incarnation
            await self._probe.ensure()
            sealed = await self._fences.seal(
                namespace,
                run_id,
                incarnation=incarnation or None,
                epochs=range(0) if run is None else _live_epochs(run),
                by_epoch=0 if run is None else run.record.epoch,
                cause="delete",
            )
            try:
                await self.objects.delete_if_match(key, got.etag)
            except PreconditionFailed:
                continue  # it changed (a renew, a claim, a quarantine): look again
            # From here the run is gone for every reader; what follows removes
            # only keys of the deleted incarnation, which no new begin uses.
            owned = {incarnation} if incarnation else sealed.incarnations
            doomed = [*sealed.doomed, *self._markers(namespace, run_id, owned)]
            if run is not None and run.damaged is not None:
                doomed.append(run.damaged)
            await self.objects.delete(doomed)
            return True
        raise StoreError(f"run {run_id!r} kept changing while it was deleted; try again")

    async def purge(self, older_than: float, namespace: str = DEFAULT_NAMESPACE) -> int:
        now = time.time()
        records = await self._records(namespace, await self._run_ids(namespace))
        doomed = [r.run_id for r in records if transitions.purgeable(r, older_than, now)]
        removed = await asyncio.gather(*(self.delete(run_id, namespace) for run_id in doomed))
        return sum(removed)

    async def close(self) -> None:
        # Let the compactions in flight finish (a few requests each) before
        # the client goes; one cut short is harmless, but leaves objects behind.
        loop = asyncio.get_running_loop()
        pending = [t for t in self._background if t.get_loop() is loop and not t.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=_CLOSE_WAIT)
            for task in late:
                task.cancel()
        await self.objects.close()

    def _track(self, task: asyncio.Task[None]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _create(self, record: RunRecord) -> tuple[RunState, str]:
        """Store the record a begin or a submit made: its running marker first,
        then the state object with If-None-Match (RunExists when the id is
        taken). The state object and its ETag."""
        run = RunState(record, writer=uuid.uuid4().hex)
        body = encode_state(run)
        await self._probe.ensure()
        key = self.layout.state(record.namespace, record.run_id)
        marker = self.layout.running_marker(record.namespace, record.run_id, record.incarnation)
        # The marker goes first: a crash between the two writes leaves a marker
        # without a run (skipped), never a running run that recovery cannot find.
        await self.objects.put(marker, _MARKER)
        try:
            etag = await self.objects.put(key, body, if_none_match=True)
        except PreconditionFailed:
            got = await self.objects.get(key)
            if got is None or got.body != body:
                # The marker is this begin's own (its key holds the new
                # incarnation): no other run needs it.
                await best_effort(
                    self.objects.delete([marker]), f"run {record.run_id!r}: remove a marker"
                )
                raise RunExists(record.run_id, record.namespace) from None
            etag = got.etag  # our own write, retried by botocore after it landed
        return run, etag

    async def _update(
        self, namespace: str, run_id: str, change: Change, what: str
    ) -> tuple[RunState, RunRecord]:
        """Apply ``change`` (a transition that raises when it is refused, as
        RunNotFound for a missing run) to the run's record with a
        compare-and-swap, judged again after a lost one. The state object it
        replaced and the record written."""
        key = self.layout.state(namespace, run_id)
        for _ in range(_ATTEMPTS):
            got = await self.objects.get(key)
            run = None if got is None else decode_state(got.body, run_id)
            changed = change(None if run is None else run.record, time.time())
            assert got is not None and run is not None  # change raised RunNotFound
            await self._probe.ensure()
            new = replace(run, record=changed, rev=run.rev + 1, writer=uuid.uuid4().hex)
            if await self._swap(key, encode_state(new), got.etag):
                return run, changed
        raise StoreError(f"run {run_id!r} kept changing while it was {what}; try again")

    async def _claimable(self, namespace: str) -> builtins.list[RunRecord]:
        """Every claimable run of ``namespace`` (queued, released, expired, or
        waiting past its wait's timeout: a waiting run keeps its marker) in
        ``transitions.interrupted_order``: one LIST of the running markers, then
        their state objects (read in parallel, as many at once as the store
        has threads). A state object that does not parse is quarantined; one of
        another format version is skipped."""
        index = self.layout.running_index(namespace)
        run_ids = sorted(
            {
                run_id
                for key in await self.objects.list_keys(index)
                if (run_id := self.layout.run_id_of_marker(namespace, key)) is not None
            }
        )
        gotten = await self._states(namespace, run_ids)
        now = time.time()
        found: builtins.list[RunRecord] = []
        damaged: builtins.list[tuple[str, str]] = []  # (run id, why it does not parse)
        for run_id, got in zip(run_ids, gotten, strict=True):
            if got is None:
                continue  # a begin in progress, or a marker a delete left behind
            try:
                record = decode_state(got.body, run_id).record
            except UnknownFormat:
                continue  # a newer outlast's: not ours to judge
            except CorruptCheckpoint as exc:
                damaged.append((run_id, f"{type(exc).__name__}: {exc}"))
                continue
            if transitions.is_interrupted(record, now):
                found.append(record)
        for run_id, reason in damaged:
            await self._quarantine_logged(namespace, run_id, reason)
        found.sort(key=transitions.interrupted_order)
        return found

    async def _quarantine_logged(self, namespace: str, run_id: str, reason: str) -> None:
        """Quarantine a run found damaged on the way, and say so in the log."""
        try:
            quarantined = await self.quarantine(run_id, reason, namespace)
        except StoreError as exc:  # the healthy runs are still the work list
            log.warning("could not quarantine run %r (next time then): %s", run_id, exc)
            return
        if quarantined:
            log.error("quarantined run %r in namespace %r: %s", run_id, namespace, reason)

    async def _quarantine_damaged(
        self, namespace: str, run_id: str, reason: str, got: StoredObject
    ) -> bool:
        """Replace a state object that does not parse by a failed stub
        (:func:`outlast.transitions.quarantined_stub`), its bytes kept beside it."""
        await self._probe.ensure()
        copy = self.layout.damaged(namespace, run_id, uuid.uuid4().hex)
        await self.objects.put(copy, got.body)
        stub = transitions.quarantined_stub(run_id, namespace, reason, time.time())
        body = encode_state(RunState(stub, damaged=copy, writer=uuid.uuid4().hex))
        if not await self._swap(self.layout.state(namespace, run_id), body, got.etag):
            # Changed meanwhile (another worker quarantined it, or it was deleted).
            await best_effort(self.objects.delete([copy]), f"run {run_id!r}: remove a copy")
            return False
        # Its incarnation and epoch were in the damaged bytes: fence every
        # writer the listing shows, and remove those incarnations' markers.
        sealed = await self._fences.seal(
            namespace, run_id, incarnation=None, epochs=range(0), by_epoch=0, cause="quarantine"
        )
        await best_effort(
            self.objects.delete(self._markers(namespace, run_id, sealed.incarnations)),
            f"run {run_id!r}: remove the running markers",
        )
        return True

    async def _swap(self, key: str, body: bytes, etag: str) -> bool:
        """Replace the state object at ``key`` if its ETag is still ``etag``."""
        try:
            await self.objects.put(key, body, if_match=etag)
        except PreconditionFailed:
            got = await self.objects.get(key)
            return got is not None and got.body == body  # our write, retried after it landed
        return True

    def _markers(
        self, namespace: str, run_id: str, incarnations: set[str] | frozenset[str]
    ) -> builtins.list[str]:
        """The running markers of ``incarnations``, and 0.1's marker of the run id."""
        markers = [self.layout.running_marker(namespace, run_id, i) for i in sorted(incarnations)]
        return [*markers, self.layout.legacy_running_marker(namespace, run_id)]

    async def _run_ids(self, namespace: str) -> builtins.list[str]:
        return [
            run_id
            for folder in await self.objects.list_folders(self.layout.runs(namespace))
            if (run_id := self.layout.run_id_of_folder(namespace, folder)) is not None
        ]

    async def _states(
        self, namespace: str, run_ids: builtins.list[str]
    ) -> builtins.list[StoredObject | None]:
        return await asyncio.gather(
            *(self.objects.get(self.layout.state(namespace, run_id)) for run_id in run_ids)
        )

    async def _records(
        self, namespace: str, run_ids: builtins.list[str]
    ) -> builtins.list[RunRecord]:
        """The records of ``run_ids`` in that order; absent and corrupt ones skipped."""
        records: builtins.list[RunRecord] = []
        for run_id, got in zip(run_ids, await self._states(namespace, run_ids), strict=True):
            if got is None:
                continue
            try:
                records.append(decode_state(got.body, run_id).record)
            except CorruptCheckpoint as exc:
                log.warning("skipping run %r in namespace %r: %s", run_id, namespace, exc)
        return records

    def _checkpointer(
        self,
        run: RunState,
        etag: str,
        cursor: SaveCursor,
        data_keys: tuple[str, ...],
        leftovers: tuple[str, ...] = (),
    ) -> S3Checkpointer:
        return S3Checkpointer(
            objects=self.objects,
            layout=self.layout,
            run=run,
            etag=etag,
            cursor=cursor,
            data_keys=data_keys,
            compact_after=self.options.compact_after,
            leftovers=leftovers,
            track=self._track,
        )


def _parsed(body: bytes, run_id: str) -> RunState | None:
    """The state object, or None when it does not parse (of any format version)."""
    try:
        return decode_state(body, run_id)
    except CorruptCheckpoint:
        return None


def _first_open_epoch(run: RunState) -> int:
    """The oldest epoch whose writer may still write: segments before the
    compacted object are never read, so epochs before it need no fence."""
    return max(run.compaction.through.epoch, 1) if run.compaction is not None else 1


def _live_epochs(run: RunState) -> range:
    """The epochs a delete fences: every one a writer may still hold. A
    finished run's own epoch is not one (its writer finished it); a waiting
    run's is (its parked writer refuses its own writes, and the fence makes
    that hold for any other copy of it too)."""
    last = run.record.epoch - 1 if run.record.status.terminal else run.record.epoch
    return range(_first_open_epoch(run), last + 1)
