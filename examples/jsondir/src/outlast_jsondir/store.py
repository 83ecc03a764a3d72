"""``jsondir://``: each run is a folder of JSON files (layout: runfiles.py).

This is a document store: every operation reads a run's ``run.json``, lets
:mod:`outlast.transitions` decide the new record (or refuse: LeaseLost,
RunExists, None), and commits the result, all under the store-wide flock, so
each read-decide-write is atomic for every process on this machine. The
store keeps no rule of its own about records; it only knows its files.

Lease expiry uses this machine's clock (all workers share it: the store is
local to one machine).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

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
"""A fenced transition bound to one checkpointer: (stored record or None, now)
-> the new record, or LeaseLost."""


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
    ) -> None:
        """Commit ``transition`` of the stored record, and ``change`` of the
        run's files, iff this checkpointer still owns the run."""

        def job() -> None:
            run = self._files.read(self._namespace, self._run_id)
            # transitions.owned, inside every fenced transition, raises LeaseLost
            # (before anything is written) unless the run exists, is the
            # incarnation we began or claimed, holds our epoch and is running.
            record = transition(None if run is None else run.record, time.time())
            assert run is not None  # a missing run raised LeaseLost above
            changed = replace(run, record=record)
            self._files.commit(changed if change is None else change(changed))

        await self._files.locked(job, exclusive=True)

    async def save(self, state: CheckpointState) -> None:
        delta = self._cursor.delta(state)
        # Even an empty save goes through the fence: a fenced writer learns it.
        await self._write(
            lambda record, now: transitions.save(
                record, self._epoch, self._incarnation, now, self._run_id
            ),
            lambda run: self._files.append(run, delta),
        )
        self._cursor = delta.after  # only once the delta is durable

    async def complete(self, result: JSON) -> None:
        stored = codec.loads(codec.dumps(result), self._run_id)  # ValueError before any write
        await self._write(
            lambda record, now: transitions.complete(
                record, self._epoch, self._incarnation, stored, now, self._run_id
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

    async def renew(self) -> None:
        await self._write(
            lambda record, now: transitions.renew(
                record, self._epoch, self._incarnation, now, self._run_id
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
        stored_input = codec.loads(codec.dumps(start.input), start.run_id)  # ValueError first

        def job() -> RunRecord:
            exists = self.files.exists(start.namespace, start.run_id)
            record = transitions.begin(start, stored_input, time.time(), exists=exists)
            self.files.commit(RunDocument(record))
            return record

        record = await self.files.locked(job, exclusive=True)
        return JsonDirCheckpointer(self.files, record, SaveCursor())

    async def interrupted(
        self, namespace: str = DEFAULT_NAMESPACE, limit: int = 100
    ) -> list[RunRecord]:
        def job() -> list[RunRecord]:
            now = time.time()
            records, damaged = self.files.records(namespace)
            for error in damaged:
                # A newer outlast's record is not ours to judge; any other
                # that does not parse leaves the work list for good.
                if not isinstance(error, UnknownFormat):
                    reason = f"{type(error).__name__}: {error}"
                    if self._quarantine(namespace, error.run_id, reason, now):
                        log.error("quarantined run %r: %s", error.run_id, reason)
            found = [r for r in records if transitions.is_interrupted(r, now)]
            return sorted(found, key=transitions.interrupted_order)[:limit]

        # Exclusive: reading the work list may quarantine what it finds damaged.
        return await self.files.locked(job, exclusive=True)

    async def claim(
        self, run_id: str, *, owner: str, lease: float, namespace: str = DEFAULT_NAMESPACE
    ) -> Claim | None:
        def job() -> tuple[RunRecord, CheckpointState] | None:
            run = self.files.read(namespace, run_id)
            if run is None:
                return None
            claimed = transitions.claim(run.record, owner=owner, lease=lease, now=time.time())
            if claimed is None:
                return None
            # Read before the commit: a transcript that does not parse raises
            # CorruptCheckpoint here and the run stays as it was.
            progress = self.files.progress(run)
            self.files.commit(replace(run, record=claimed))
            return claimed, progress

        won = await self.files.locked(job, exclusive=True)
        if won is None:
            return None
        record, progress = won
        cursor = SaveCursor(phases=len(progress.phases), messages=len(progress.history))
        checkpointer = JsonDirCheckpointer(self.files, record, cursor)
        return Claim(checkpointer, ResumeState(progress.history, progress.phases), record)

    async def quarantine(
        self, run_id: str, reason: str, namespace: str = DEFAULT_NAMESPACE
    ) -> bool:
        return await self.files.locked(
            lambda: self._quarantine(namespace, run_id, reason, time.time()), exclusive=True
        )

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
