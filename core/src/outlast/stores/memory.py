"""``memory://[name]``: an in-process store for tests and demos.

Each ``memory://`` URL without a name opens a new, empty store. ``memory://NAME``
opens the store of that name shared by the whole process, so a fresh factory
sees what an earlier one saved (as a durable store would). Records are kept as
encoded JSON text, exactly as the durable stores keep them, so what round-trips
here round-trips there. Lease expiry uses this process's clock.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field, replace

from outlast import codec
from outlast.delta import SaveCursor
from outlast.errors import LeaseLost, RunExists
from outlast.messages import JSON
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

_Key = tuple[str, str]


@dataclass
class _Run:
    record: RunRecord
    lease: float
    input_text: str
    phases: list[str] = field(default_factory=list)
    segments: dict[int, list[str]] = field(default_factory=dict)
    version: int = codec.FORMAT_VERSION


@dataclass
class _Space:
    runs: dict[_Key, _Run] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


_named: dict[str, _Space] = {}
_named_lock = threading.Lock()


def _space(name: str) -> _Space:
    if not name:
        return _Space()
    with _named_lock:
        return _named.setdefault(name, _Space())


class MemoryCheckpointer:
    def __init__(self, store: MemoryStore, key: _Key, epoch: int, cursor: SaveCursor) -> None:
        self._store = store
        self._key = key
        self._epoch = epoch
        self._cursor = cursor

    def __repr__(self) -> str:
        return f"MemoryCheckpointer(run_id={self.run_id!r}, epoch={self._epoch})"

    @property
    def run_id(self) -> str:
        return self._key[1]

    @property
    def namespace(self) -> str:
        return self._key[0]

    @property
    def epoch(self) -> int:
        return self._epoch

    def _owned(self) -> _Run:
        run = self._store._space.runs.get(self._key)
        if run is None or run.record.epoch != self._epoch:
            raise LeaseLost(self.run_id, self._epoch)
        if run.record.status is not RunStatus.RUNNING:
            raise LeaseLost(self.run_id, self._epoch, f"the run is {run.record.status}")
        return run

    async def save(self, state: CheckpointState) -> None:
        delta = self._cursor.delta(state)
        encoded_phases = [codec.encode_phase(p) for p in delta.phases]
        encoded_messages = [codec.encode_message(m) for m in delta.messages]
        with self._store._space.lock:
            run = self._owned()
            run.phases[delta.first_phase :] = encoded_phases
            segment = run.segments.setdefault(delta.segment, [])
            segment[delta.first_message :] = encoded_messages
            run.record = replace(run.record, updated_at=time.time())
        self._cursor = delta.after

    async def complete(self, result: JSON) -> None:
        text = codec.dumps(result)
        with self._store._space.lock:
            run = self._owned()
            run.phases.clear()
            run.segments.clear()
            run.record = replace(
                run.record,
                status=RunStatus.COMPLETED,
                result=codec.loads(text, self.run_id),
                lease_expires_at=None,
                updated_at=time.time(),
            )

    async def fail(self, error: str) -> None:
        with self._store._space.lock:
            run = self._owned()
            run.record = replace(
                run.record,
                status=RunStatus.FAILED,
                error=error,
                lease_expires_at=None,
                updated_at=time.time(),
            )

    async def release(self) -> None:
        with self._store._space.lock:
            run = self._owned()
            run.record = replace(run.record, lease_expires_at=None, updated_at=time.time())

    async def renew(self) -> None:
        with self._store._space.lock:
            run = self._owned()
            now = time.time()
            run.record = replace(run.record, lease_expires_at=now + run.lease, updated_at=now)


class MemoryStore:
    """A CheckpointerFactory kept in this process's memory."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._space = _space(name)

    def __repr__(self) -> str:
        return f"MemoryStore(name={self.name!r})"

    async def begin(self, start: RunStart) -> MemoryCheckpointer:
        validate_start(start)
        key = (start.namespace, start.run_id)
        input_text = codec.dumps(start.input)
        now = time.time()
        record = RunRecord.begun(start, now, codec.loads(input_text, start.run_id))
        with self._space.lock:
            if key in self._space.runs:
                raise RunExists(start.run_id, start.namespace)
            self._space.runs[key] = _Run(record, start.lease, input_text)
        return MemoryCheckpointer(self, key, 1, SaveCursor())

    async def interrupted(
        self, namespace: str = DEFAULT_NAMESPACE, limit: int = 100
    ) -> list[RunRecord]:
        now = time.time()
        with self._space.lock:
            found = [
                run.record
                for (ns, _), run in self._space.runs.items()
                if ns == namespace
                and run.version == codec.FORMAT_VERSION
                and run.record.status is RunStatus.RUNNING
                and (run.record.lease_expires_at is None or run.record.lease_expires_at <= now)
            ]
        found.sort(key=lambda r: (r.lease_expires_at or 0.0, r.run_id))
        return found[:limit]

    async def claim(
        self, run_id: str, *, owner: str, lease: float, namespace: str = DEFAULT_NAMESPACE
    ) -> Claim | None:
        validate_lease(lease)
        key = (namespace, run_id)
        with self._space.lock:
            run = self._space.runs.get(key)
            now = time.time()
            if (
                run is None
                or run.record.status is not RunStatus.RUNNING
                or (run.record.lease_expires_at is not None and run.record.lease_expires_at > now)
            ):
                return None
            state = self._state(run)
            run.lease = lease
            run.record = replace(
                run.record,
                epoch=run.record.epoch + 1,
                attempts=run.record.attempts + 1,
                owner=owner,
                lease_expires_at=now + lease,
                updated_at=now,
            )
            record = run.record
        cursor = SaveCursor(phases=len(state.phases), messages=len(state.history))
        checkpointer = MemoryCheckpointer(self, key, record.epoch, cursor)
        return Claim(checkpointer, ResumeState(state.history, state.phases), record)

    async def load(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> StoredRun | None:
        with self._space.lock:
            run = self._space.runs.get((namespace, run_id))
            if run is None:
                return None
            return StoredRun(run.record, self._state(run))

    async def list(
        self,
        namespace: str = DEFAULT_NAMESPACE,
        status: RunStatus | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> RunPage:
        with self._space.lock:
            records = sorted(
                (
                    run.record
                    for (ns, run_id), run in self._space.runs.items()
                    if ns == namespace
                    and run.version == codec.FORMAT_VERSION
                    and (status is None or run.record.status is status)
                    and (cursor is None or run_id > cursor)
                ),
                key=lambda r: r.run_id,
            )
        page = tuple(itertools.islice(records, limit))
        more = len(records) > limit
        return RunPage(page, page[-1].run_id if more and page else None)

    async def delete(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> bool:
        with self._space.lock:
            return self._space.runs.pop((namespace, run_id), None) is not None

    async def purge(self, older_than: float, namespace: str = DEFAULT_NAMESPACE) -> int:
        cutoff = time.time() - older_than
        with self._space.lock:
            doomed = [
                key
                for key, run in self._space.runs.items()
                if key[0] == namespace
                and run.record.status is not RunStatus.RUNNING
                and run.record.updated_at < cutoff
            ]
            for key in doomed:
                del self._space.runs[key]
        return len(doomed)

    async def close(self) -> None:
        """Nothing to release: named stores live as long as the process."""

    def corrupt(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> None:
        """Damage a run's saved transcript (for the conformance suite's corrupt-record tests)."""
        with self._space.lock:
            run = self._space.runs[(namespace, run_id)]
            run.segments.setdefault(len(run.phases), []).append("{not json")

    @staticmethod
    def _state(run: _Run) -> CheckpointState:
        run_id = run.record.run_id
        if run.version != codec.FORMAT_VERSION:
            codec.check_version(run.version, run_id)
        phases = codec.decode_all(run.phases, run_id, codec.decode_phase)
        history = codec.decode_all(run.segments.get(len(phases), ()), run_id, codec.decode_message)
        return CheckpointState(history, phases)
