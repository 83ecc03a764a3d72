"""``jsondir://``: each run is a folder of JSON files (layout: runfiles.py).

This is a document store: every operation reads a run's ``run.json``, lets
:mod:`outlast.transitions` decide the new record (or refuse: LeaseLost,
RunExists, None), and commits the result, all under the store-wide flock, so
each read-decide-write is atomic for every process on this machine. The
store keeps no rule of its own about records; it only knows its files.

The fleet's operations follow the same pattern: ``submit`` is ``begin``
with :func:`outlast.transitions.submit`; ``claim_next`` walks the work list
``interrupted`` reads and claims the first run of a wanted kind, all under
one exclusive lock, so no two workers take the same run; ``cancel`` applies
:func:`outlast.transitions.cancel`. The store has no notifications (no
``wait_for_change``): the store front makes workers and waiters poll.

Waiting for outside input is the same pattern again: a checkpointer's
``wait`` is a fenced write (:func:`outlast.transitions.wait`), and ``send``
applies :func:`outlast.transitions.send` under the exclusive lock, so of
concurrent senders exactly one finds the run still waiting. A wait that
timed out is claimable because ``transitions.is_interrupted`` says so; the
store has no rule of its own for it.

Lease expiry and wait timeouts use this machine's clock (all workers share
it: the store is local to one machine).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from outlast.adapter import (
    DEFAULT_NAMESPACE,
    JSON,
    CheckpointState,
    Claim,
    CorruptCheckpoint,
    ResumeState,
    RunPage,
    RunRecord,
    RunStart,
    RunStatus,
    SaveCursor,
    StoredRun,
    UnknownFormat,
    codec,
    transitions,
)
from outlast_jsondir.runfiles import RunDocument, RunFiles

log = logging.getLogger("outlast_jsondir")

Transition = Callable[[RunRecord | None, float], RunRecord]
"""A transition of one run's record: (stored record or None, now) -> the new
record. It refuses by raising (LeaseLost when a checkpointer is fenced,
RunNotFound, RunFinished, NotWaiting), before anything is written."""


class Creation(Protocol):
    """How a run comes to be: :func:`outlast.transitions.begin` or
    :func:`outlast.transitions.submit` (RunExists when the id ``exists``)."""

    def __call__(self, start: RunStart, input: JSON, now: float, *, exists: bool) -> RunRecord: ...


class JsonDirCheckpointer:
    """One run's files, written by the worker holding its epoch and incarnation."""

    def __init__(self, files: RunFiles, record: RunRecord, cursor: SaveCursor) -> None:
        self._files = files  # shared with the store: the checkpointer needs nothing else of it
        self._namespace = record.namespace
        self._run_id = record.run_id
        self._epoch = record.epoch
        self._incarnation = record.incarnation
        self._cursor = cursor

    def __repr__(self) -> str:
        return f"JsonDirCheckpointer(run_id={self._run_id!r}, epoch={self._epoch})"

    @property
    def run_id(self) -> str:
        return self._run_id

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def epoch(self) -> int:
        return self._epoch

    async def _write(
        self, transition: Transition, change: Callable[[RunDocument], RunDocument] | None = None
    ) -> RunRecord:
        """Commit ``transition`` of the stored record, and ``change`` of the
        run's files, iff this checkpointer still owns the run; the record
        committed."""

        def job() -> RunRecord:
            run = self._files.read(self._namespace, self._run_id)
            # transitions.owned, inside every fenced transition, raises LeaseLost
            # (before anything is written) unless the run exists, is the
            # incarnation we began or claimed, holds our epoch and is running.
            record = transition(None if run is None else run.record, time.time())
            assert run is not None  # a missing run raised LeaseLost above
            changed = replace(run, record=record)
            self._files.commit(changed if change is None else change(changed))
            return record

        return await self._files.locked(job, exclusive=True)

    async def save(self, state: CheckpointState) -> bool:
        delta = self._cursor.delta(state)
        # Even an empty save goes through the fence: a fenced writer learns it.
        saved = await self._write(
            lambda record, now: transitions.save(
                record, self._epoch, self._incarnation, now, self._run_id
            ),
            lambda run: self._files.append(run, delta),
        )
        self._cursor = delta.after  # only once the delta is durable
        return saved.cancel_requested  # a cancel asked for: our caller fails the run

    async def complete(self, result: JSON, usage: JSON = None) -> None:
        stored = codec.loads(codec.dumps(result), self._run_id)  # ValueError before any write
        stored_usage = codec.loads(codec.dumps(usage), self._run_id)
        await self._write(
            lambda record, now: transitions.complete(
                record,
                self._epoch,
                self._incarnation,
                stored,
                now,
                self._run_id,
                usage=stored_usage,
            ),
            lambda run: replace(run, phases=(), committed=0, lines=0),
        )

    async def fail(self, error: str) -> None:
        await self._write(
            lambda record, now: transitions.fail(
                record, self._epoch, self._incarnation, error, now, self._run_id
            )
        )

    async def release(self) -> None:
        await self._write(
            lambda record, now: transitions.release(
                record, self._epoch, self._incarnation, now, self._run_id
            )
        )

    async def renew(self) -> bool:
        renewed = await self._write(
            lambda record, now: transitions.renew(
                record, self._epoch, self._incarnation, now, self._run_id
            )
        )
        return renewed.cancel_requested

    async def wait(self, request: JSON, timeout: float | None) -> None:
        stored = codec.loads(codec.dumps(request), self._run_id)  # ValueError before any write
        # Only the record changes: the executor saved the progress first.
        await self._write(
            lambda record, now: transitions.wait(
                record, self._epoch, self._incarnation, stored, timeout, now, self._run_id
            )
        )


class JsonDirStore:
    """A CheckpointerFactory keeping runs as files under ``root``."""

    def __init__(self, root: Path | str) -> None:
        self.files = RunFiles(Path(root))

    def __repr__(self) -> str:
        return f"JsonDirStore(root={str(self.root)!r})"

    @property
    def root(self) -> Path:
        return self.files.root

    async def begin(self, start: RunStart) -> JsonDirCheckpointer:
        record = await self._create(start, transitions.begin)
        return JsonDirCheckpointer(self.files, record, SaveCursor())

    async def submit(self, start: RunStart) -> None:
        await self._create(start, transitions.submit)

    async def _create(self, start: RunStart, creation: Creation) -> RunRecord:
        """Commit the record ``creation`` makes for a new run; RunExists
        (writing nothing) when the run id exists, readable or not."""
        stored_input = codec.loads(codec.dumps(start.input), start.run_id)  # ValueError first

        def job() -> RunRecord:
            exists = self.files.exists(start.namespace, start.run_id)
            record = creation(start, stored_input, time.time(), exists=exists)
            self.files.commit(RunDocument(record))
            return record

        return await self.files.locked(job, exclusive=True)

    async def claim_next(
        self,
        kinds: Sequence[str],
        *,
        owner: str,
        lease: float,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> Claim | None:
        wanted = set(kinds)

        def job() -> tuple[RunRecord, CheckpointState] | None:
            # The pick and the claim under one exclusive lock: a run an
            # earlier caller took is no longer interrupted when the next one
            # looks, so it is skipped, and no two callers get the same run.
            now = time.time()
            for record in self._interrupted(namespace, now):
                if record.kind not in wanted:
                    continue
                try:
                    won = self._claim(namespace, record.run_id, owner, lease, now)
                except UnknownFormat:
                    continue  # a newer outlast's transcript: left alone
                except CorruptCheckpoint as exc:  # its transcript does not parse
                    self._quarantine_damaged(namespace, exc, now)
                    continue
                if won is not None:
                    return won
            return None

        won = await self.files.locked(job, exclusive=True)
        return None if won is None else self._claimed(*won)

    async def send(
        self, run_id: str, delivery: JSON, namespace: str = DEFAULT_NAMESPACE
    ) -> RunRecord:
        stored = codec.loads(codec.dumps(delivery), run_id)  # ValueError before any write
        # NotWaiting unless the run waits: under the lock, exactly one of
        # concurrent senders still finds it waiting.
        return await self._change(
            namespace,
            run_id,
            lambda record, now: transitions.send(record, stored, now, run_id, namespace),
        )

    async def cancel(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> RunRecord:
        # RunFinished when there is nothing left to cancel.
        return await self._change(
            namespace,
            run_id,
            lambda record, now: transitions.cancel(record, now, run_id, namespace),
        )

    async def _change(self, namespace: str, run_id: str, transition: Transition) -> RunRecord:
        """Commit ``transition`` of a run nobody needs to own (cancel, send);
        the record committed. The transition raises, before anything is
        written, to refuse (RunNotFound when there is no run); the run's
        transcript stays as it is."""

        def job() -> RunRecord:
            run = self.files.read(namespace, run_id)
            changed = transition(None if run is None else run.record, time.time())
            assert run is not None  # a missing run raised RunNotFound above
            self.files.commit(replace(run, record=changed))
            return changed

        return await self.files.locked(job, exclusive=True)

    async def interrupted(
        self, namespace: str = DEFAULT_NAMESPACE, limit: int = 100
    ) -> list[RunRecord]:
        # Exclusive: reading the work list may quarantine what it finds damaged.
        found = await self.files.locked(
            lambda: self._interrupted(namespace, time.time()), exclusive=True
        )
        return found[:limit]

    def _interrupted(self, namespace: str, now: float) -> list[RunRecord]:
        """Every interrupted run of ``namespace`` in ``interrupted`` order,
        inside the exclusive lock; records that do not parse are quarantined
        on the way."""
        records, damaged = self.files.records(namespace)
        for error in damaged:
            # A newer outlast's record is not ours to judge; any other that
            # does not parse leaves the work list for good.
            if not isinstance(error, UnknownFormat):
                self._quarantine_damaged(namespace, error, now)
        found = [r for r in records if transitions.is_interrupted(r, now)]
        return sorted(found, key=transitions.interrupted_order)

    async def claim(
        self, run_id: str, *, owner: str, lease: float, namespace: str = DEFAULT_NAMESPACE
    ) -> Claim | None:
        won = await self.files.locked(
            lambda: self._claim(namespace, run_id, owner, lease, time.time()), exclusive=True
        )
        return None if won is None else self._claimed(*won)

    def _claim(
        self, namespace: str, run_id: str, owner: str, lease: float, now: float
    ) -> tuple[RunRecord, CheckpointState] | None:
        """claim(), inside the exclusive lock: the claimed record and the
        progress to resume from, or None when the run is not claimable."""
        run = self.files.read(namespace, run_id)
        if run is None:
            return None
        claimed = transitions.claim(run.record, owner=owner, lease=lease, now=now)
        if claimed is None:
            return None
        # Read before the commit: a transcript that does not parse raises
        # CorruptCheckpoint here and the run stays as it was.
        progress = self.files.progress(run)
        self.files.commit(replace(run, record=claimed))
        return claimed, progress

    def _claimed(self, record: RunRecord, progress: CheckpointState) -> Claim:
        """The Claim a won claim hands out: a checkpointer that saves after
        the stored progress."""
        cursor = SaveCursor(phases=len(progress.phases), messages=len(progress.history))
        checkpointer = JsonDirCheckpointer(self.files, record, cursor)
        return Claim(checkpointer, ResumeState(progress.history, progress.phases), record)

    async def quarantine(
        self, run_id: str, reason: str, namespace: str = DEFAULT_NAMESPACE
    ) -> bool:
        return await self.files.locked(
            lambda: self._quarantine(namespace, run_id, reason, time.time()), exclusive=True
        )

    def _quarantine_damaged(self, namespace: str, error: CorruptCheckpoint, now: float) -> None:
        """Quarantine the run ``error`` names (inside the exclusive lock), and say so."""
        reason = f"{type(error).__name__}: {error}"
        if self._quarantine(namespace, error.run_id, reason, now):
            log.error("quarantined run %r in namespace %r: %s", error.run_id, namespace, reason)

    def _quarantine(self, namespace: str, run_id: str, reason: str, now: float) -> bool:
        """quarantine(), inside the exclusive lock."""
        try:
            run = self.files.read(namespace, run_id)
        except UnknownFormat:
            return False  # a newer outlast may own it
        except CorruptCheckpoint:
            # Too damaged to read at all: a failed stub takes its place and
            # the damaged bytes are kept beside it.
            self.files.set_aside(namespace, run_id)
            stub = transitions.quarantined_stub(run_id, namespace, reason, now)
            self.files.commit(RunDocument(stub))
            return True
        if run is None:
            return False
        failed = transitions.quarantine(run.record, reason, now)
        if failed is None:
            return False
        self.files.commit(replace(run, record=failed))  # its transcript stays
        return True

    async def load(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> StoredRun | None:
        def job() -> StoredRun | None:
            run = self.files.read(namespace, run_id)
            return None if run is None else StoredRun(run.record, self.files.progress(run))

        return await self.files.locked(job, exclusive=False)

    async def list(
        self,
        namespace: str = DEFAULT_NAMESPACE,
        status: RunStatus | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> RunPage:
        def job() -> list[RunRecord]:
            records, damaged = self.files.records(namespace)
            for error in damaged:
                log.warning("list skips run %r: %s", error.run_id, error)
            return [
                r
                for r in records
                if (status is None or r.status is status) and (cursor is None or r.run_id > cursor)
            ]

        records = await self.files.locked(job, exclusive=False)
        page = tuple(records[:limit])
        more = len(records) > limit
        return RunPage(page, page[-1].run_id if more and page else None)

    async def delete(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> bool:
        return await self.files.locked(lambda: self.files.remove(namespace, run_id), exclusive=True)

    async def purge(self, older_than: float, namespace: str = DEFAULT_NAMESPACE) -> int:
        def job() -> int:
            now = time.time()
            records, _damaged = self.files.records(namespace)
            doomed = [r for r in records if transitions.purgeable(r, older_than, now)]
            for record in doomed:
                self.files.remove(namespace, record.run_id)
            return len(doomed)

        return await self.files.locked(job, exclusive=True)

    async def close(self) -> None:
        """Nothing to release: every operation opens and closes its own files."""
