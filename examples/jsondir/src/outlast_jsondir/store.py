"""``jsondir://``: each run is a directory of JSON files.

Layout under the store's root directory::

    .lock                          the store-wide flock (see files.py)
    _<namespace>/_<run id>/run.json        the record and completed phases
    _<namespace>/_<run id>/segment-N.jsonl the transcript of segment N

``run.json`` is small and replaced atomically on every write; it carries the
epoch that fences writers and ``committed``: how many bytes of the current
segment's transcript are durable. A save appends the new messages to the
segment file first and then commits them by replacing ``run.json``, so a crash
between the two leaves bytes that are never read and are overwritten by the
next save. Every record carries ``v`` (outlast.codec.FORMAT_VERSION).

Lease expiry uses this machine's clock (all workers share it: the store is
local to one machine).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from outlast import (
    DEFAULT_NAMESPACE,
    JSON,
    CheckpointState,
    Claim,
    CorruptCheckpoint,
    LeaseLost,
    Message,
    PhaseOutput,
    ResumeState,
    RunExists,
    RunNotFound,
    RunPage,
    RunRecord,
    RunStart,
    RunStatus,
    SaveCursor,
    StoredRun,
    codec,
)
from outlast.ports import validate_lease, validate_start
from outlast_jsondir.files import (
    append_at,
    decode_name,
    encode_name,
    locked,
    read_prefix,
    write_atomically,
)

T = TypeVar("T")
RUN_FILE = "run.json"


@dataclass(frozen=True, slots=True)
class _Run:
    """One run's ``run.json``: its record, lease length, phases, and how much
    of the current segment is committed (bytes and messages)."""

    record: RunRecord
    lease: float
    phases: tuple[PhaseOutput, ...] = ()
    committed: int = 0
    lines: int = 0

    def to_bytes(self) -> bytes:
        data: dict[str, JSON] = {
            "v": codec.FORMAT_VERSION,
            **self.record.to_json(),
            "lease": self.lease,
            "phases": [p.to_json() for p in self.phases],
            "committed": self.committed,
            "lines": self.lines,
        }
        return codec.dumps(data).encode()

    @classmethod
    def from_bytes(cls, data: bytes, run_id: str) -> _Run:
        """Parse ``run.json``; anything unexpected is CorruptCheckpoint naming the run."""
        parsed = codec.loads(data, run_id)
        if not isinstance(parsed, dict):
            raise CorruptCheckpoint(run_id, "run.json is not a JSON object")
        codec.check_version(parsed.get("v"), run_id)
        obj: dict[str, Any] = parsed  # field types are checked by the conversions below
        try:
            record = RunRecord.from_json(obj)
            phases = tuple(PhaseOutput.from_json(p) for p in obj["phases"])
            return cls(
                record, float(obj["lease"]), phases, int(obj["committed"]), int(obj["lines"])
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptCheckpoint(run_id, f"run.json does not parse ({exc})") from exc


class JsonDirCheckpointer:
    """One run's files, written at one epoch."""

    def __init__(
        self, store: JsonDirStore, namespace: str, run_id: str, epoch: int, cursor: SaveCursor
    ) -> None:
        self._store = store
        self._namespace = namespace
        self._run_id = run_id
        self._epoch = epoch
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

    async def save(self, state: CheckpointState) -> None:
        delta = self._cursor.delta(state)
        data = b"".join(codec.encode_message(m).encode() + b"\n" for m in delta.messages)

        def write(run: _Run, folder: Path) -> _Run:
            if delta.empty:
                return run  # still checked against the epoch: a fenced save raises
            segment = folder / f"segment-{delta.segment}.jsonl"
            committed, lines = (0, 0) if delta.phases else (run.committed, run.lines)
            if delta.first_message != lines:  # not expected: the cursor tracks `lines`
                committed = _offset_of_line(segment, committed, delta.first_message)
            if data:
                committed = append_at(segment, committed, data)
            return replace(
                run,
                phases=run.phases + delta.phases,
                committed=committed,
                lines=delta.first_message + len(delta.messages),
            )

        await self._store._write(self, write)
        self._cursor = delta.after

    async def complete(self, result: JSON) -> None:
        codec.dumps(result)  # refuse non-JSON before touching the record

        def write(run: _Run, folder: Path) -> _Run:
            for segment in folder.glob("segment-*.jsonl"):
                segment.unlink()
            return replace(
                run,
                record=replace(
                    run.record, status=RunStatus.COMPLETED, result=result, lease_expires_at=None
                ),
                phases=(),
                committed=0,
                lines=0,
            )

        await self._store._write(self, write)

    async def fail(self, error: str) -> None:
        def write(run: _Run, folder: Path) -> _Run:
            record = replace(
                run.record, status=RunStatus.FAILED, error=error, lease_expires_at=None
            )
            return replace(run, record=record)

        await self._store._write(self, write)

    async def release(self) -> None:
        def write(run: _Run, folder: Path) -> _Run:
            return replace(run, record=replace(run.record, lease_expires_at=None))

        await self._store._write(self, write)

    async def renew(self) -> None:
        def write(run: _Run, folder: Path) -> _Run:
            expires = time.time() + run.lease
            return replace(run, record=replace(run.record, lease_expires_at=expires))

        await self._store._write(self, write)


def _offset_of_line(segment: Path, committed: int, line: int) -> int:
    """Byte offset where line number ``line`` of the committed transcript starts."""
    data = read_prefix(segment, committed)
    offset = 0
    for _ in range(line):
        offset = data.index(b"\n", offset) + 1
    return offset


class JsonDirStore:
    """A CheckpointerFactory keeping runs as files under ``root``."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"JsonDirStore(root={str(self.root)!r})"

    # -- layout --------------------------------------------------------------

    def _folder(self, namespace: str, run_id: str) -> Path:
        return self.root / encode_name(namespace) / encode_name(run_id)

    def _read(self, namespace: str, run_id: str) -> _Run | None:
        path = self._folder(namespace, run_id) / RUN_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return _Run.from_bytes(data, run_id)

    def _state(self, run: _Run) -> CheckpointState:
        folder = self._folder(run.record.namespace, run.record.run_id)
        segment = folder / f"segment-{len(run.phases)}.jsonl"
        lines = read_prefix(segment, run.committed).splitlines()
        history: tuple[Message, ...] = codec.decode_all(
            lines, run.record.run_id, codec.decode_message
        )
        return CheckpointState(history, run.phases)

    def _records(self, namespace: str) -> list[RunRecord]:
        """Every parseable record of a namespace (corrupt ones skipped), by run id."""
        space = self.root / encode_name(namespace)
        if not space.is_dir():
            return []
        records = []
        for folder in space.iterdir():
            try:
                run = self._read(namespace, decode_name(folder.name))
            except CorruptCheckpoint:
                continue  # listing goes on; load() reports it by name
            if run is not None:
                records.append(run.record)
        return sorted(records, key=lambda r: r.run_id)

    async def _locked(self, job: Callable[[], T], *, exclusive: bool) -> T:
        def run() -> T:
            with locked(self.root, exclusive=exclusive):
                return job()

        return await asyncio.to_thread(run)

    async def _write(self, cp: JsonDirCheckpointer, change: Callable[[_Run, Path], _Run]) -> None:
        """Apply ``change`` to the run iff ``cp`` still owns it (epoch and status)."""

        def job() -> None:
            run = self._read(cp.namespace, cp.run_id)
            if run is None or run.record.epoch != cp.epoch:
                raise LeaseLost(cp.run_id, cp.epoch)
            if run.record.status is not RunStatus.RUNNING:
                raise LeaseLost(cp.run_id, cp.epoch, f"the run is {run.record.status}")
            folder = self._folder(cp.namespace, cp.run_id)
            changed = change(run, folder)
            changed = replace(changed, record=replace(changed.record, updated_at=time.time()))
            write_atomically(folder / RUN_FILE, changed.to_bytes())

        await self._locked(job, exclusive=True)

    # -- the CheckpointerFactory protocol ---------------------------------------

    async def begin(self, start: RunStart) -> JsonDirCheckpointer:
        validate_start(start)
        input_value = codec.loads(codec.dumps(start.input), start.run_id)

        def job() -> None:
            folder = self._folder(start.namespace, start.run_id)
            if (folder / RUN_FILE).exists():
                raise RunExists(start.run_id, start.namespace)
            folder.mkdir(parents=True, exist_ok=True)
            now = time.time()
            record = RunRecord.begun(start, now, input_value)
            write_atomically(folder / RUN_FILE, _Run(record, start.lease).to_bytes())

        await self._locked(job, exclusive=True)
        return JsonDirCheckpointer(self, start.namespace, start.run_id, 1, SaveCursor())

    async def interrupted(
        self, namespace: str = DEFAULT_NAMESPACE, limit: int = 100
    ) -> list[RunRecord]:
        def job() -> list[RunRecord]:
            now = time.time()
            found = [
                r
                for r in self._records(namespace)
                if r.status is RunStatus.RUNNING
                and (r.lease_expires_at is None or r.lease_expires_at <= now)
            ]
            found.sort(key=lambda r: (r.lease_expires_at or 0.0, r.run_id))
            return found[:limit]

        return await self._locked(job, exclusive=False)

    async def claim(
        self, run_id: str, *, owner: str, lease: float, namespace: str = DEFAULT_NAMESPACE
    ) -> Claim | None:
        validate_lease(lease)

        def job() -> tuple[RunRecord, CheckpointState] | None:
            run = self._read(namespace, run_id)
            now = time.time()
            if (
                run is None
                or run.record.status is not RunStatus.RUNNING
                or (run.record.lease_expires_at is not None and run.record.lease_expires_at > now)
            ):
                return None
            state = self._state(run)  # CorruptCheckpoint here leaves the run untouched
            record = replace(
                run.record,
                epoch=run.record.epoch + 1,
                attempts=run.record.attempts + 1,
                owner=owner,
                lease_expires_at=now + lease,
                updated_at=now,
            )
            write_atomically(
                self._folder(namespace, run_id) / RUN_FILE,
                replace(run, record=record, lease=lease).to_bytes(),
            )
            return record, state

        won = await self._locked(job, exclusive=True)
        if won is None:
            return None
        record, state = won
        cursor = SaveCursor(phases=len(state.phases), messages=len(state.history))
        checkpointer = JsonDirCheckpointer(self, namespace, run_id, record.epoch, cursor)
        return Claim(checkpointer, ResumeState(state.history, state.phases), record)

    async def load(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> StoredRun | None:
        def job() -> StoredRun | None:
            run = self._read(namespace, run_id)
            return None if run is None else StoredRun(run.record, self._state(run))

        return await self._locked(job, exclusive=False)

    async def list(
        self,
        namespace: str = DEFAULT_NAMESPACE,
        status: RunStatus | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> RunPage:
        def job() -> list[RunRecord]:
            return [
                r
                for r in self._records(namespace)
                if (status is None or r.status is status) and (cursor is None or r.run_id > cursor)
            ]

        records = await self._locked(job, exclusive=False)
        page = tuple(records[:limit])
        more = len(records) > limit
        return RunPage(page, page[-1].run_id if more and page else None)

    async def delete(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> bool:
        def job() -> bool:
            folder = self._folder(namespace, run_id)
            if not folder.exists():
                return False
            shutil.rmtree(folder)
            return True

        return await self._locked(job, exclusive=True)

    async def purge(self, older_than: float, namespace: str = DEFAULT_NAMESPACE) -> int:
        def job() -> int:
            cutoff = time.time() - older_than
            doomed = [
                r.run_id
                for r in self._records(namespace)
                if r.status is not RunStatus.RUNNING and r.updated_at < cutoff
            ]
            for run_id in doomed:
                shutil.rmtree(self._folder(namespace, run_id))
            return len(doomed)

        return await self._locked(job, exclusive=True)

    async def close(self) -> None:
        """Nothing to release: every operation opens and closes its own files."""

    # -- for the conformance suite -----------------------------------------------

    async def corrupt(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> None:
        """Overwrite the run's ``run.json`` with text that is not JSON."""

        def job() -> None:
            path = self._folder(namespace, run_id) / RUN_FILE
            if not path.exists():
                raise RunNotFound(run_id, namespace)
            write_atomically(path, b"{not json")

        await self._locked(job, exclusive=True)
