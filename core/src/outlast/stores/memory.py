"""``memory://[name]``: an in-process store for tests and demos.

Each ``memory://`` URL without a name opens a new, empty store. ``memory://NAME``
opens the store of that name shared by the whole process, so a fresh factory
sees what an earlier one saved (as a durable store would). Records, phases and
messages are kept as encoded JSON text, exactly as the durable stores keep
them, so what round-trips here round-trips there. Lease expiry uses this
process's clock.

It is the reference document store: every operation reads the record, applies
:mod:`outlast.transitions` and writes the result, under one lock.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from outlast import codec, transitions
from outlast.delta import SaveCursor
from outlast.errors import CorruptCheckpoint, UnknownFormat
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
)

log = logging.getLogger("outlast.stores.memory")

_Key = tuple[str, str]


@dataclass
class Run:
    """What is stored for one run: its record's JSON text, its phases' and
    messages' JSON texts (messages by segment), and, after a quarantine of a
    record that did not parse, the damaged text."""

    record: str
    phases: list[str] = field(default_factory=list)
    segments: dict[int, list[str]] = field(default_factory=dict)
    damaged: str | None = None


def encode_record(record: RunRecord) -> str:
    return codec.dumps({"v": codec.FORMAT_VERSION, **record.to_json()})


def decode_record(text: str, run_id: str) -> RunRecord:
    """The record in ``text``; CorruptCheckpoint (UnknownFormat) when it does not parse."""
    data = codec.loads(text, run_id)
    if not isinstance(data, dict):
        raise CorruptCheckpoint(run_id, "the record is not a JSON object")
    codec.check_version(data.get("v"), run_id)
    try:
        return RunRecord.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptCheckpoint(run_id, f"the record does not parse ({exc!r})") from exc


@dataclass
class Space:
    """The runs of one store (shared by every factory of one ``memory://NAME``)."""

    runs: dict[_Key, Run] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, key: _Key) -> RunRecord | None:
        run = self.runs.get(key)
        return None if run is None else decode_record(run.record, key[1])

    def state(self, key: _Key, record: RunRecord) -> CheckpointState:
        run = self.runs[key]
        phases = codec.decode_all(run.phases, record.run_id, codec.decode_phase)
        history = codec.decode_all(
            run.segments.get(len(phases), ()), record.run_id, codec.decode_message
        )
        return CheckpointState(history, phases)


_named: dict[str, Space] = {}
_named_lock = threading.Lock()


def space_named(name: str) -> Space:
    """The process-wide space of ``name``; a new private one for ""."""
    if not name:
        return Space()
    with _named_lock:
        return _named.setdefault(name, Space())


class MemoryCheckpointer:
    def __init__(self, space: Space, key: _Key, record: RunRecord, cursor: SaveCursor) -> None:
        self._space = space
        self._key = key
        self._epoch = record.epoch
        self._incarnation = record.incarnation
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

    def _write(self, record: RunRecord) -> Run:
        run = self._space.runs[self._key]
        run.record = encode_record(record)
        return run

    async def save(self, state: CheckpointState) -> bool:
        delta = self._cursor.delta(state)
        encoded_phases = [codec.encode_phase(p) for p in delta.phases]
        encoded_messages = [codec.encode_message(m) for m in delta.messages]
        with self._space.lock:
            record = self._space.record(self._key)
            saved = transitions.save(
                record, self._epoch, self._incarnation, time.time(), self.run_id
            )
            run = self._write(saved)
            run.phases[delta.first_phase :] = encoded_phases
            segment = run.segments.setdefault(delta.segment, [])
            segment[delta.first_message :] = encoded_messages
        self._cursor = delta.after
        return saved.cancel_requested

    async def complete(self, result: JSON, usage: JSON = None) -> None:
        stored = codec.loads(codec.dumps(result), self.run_id)
        stored_usage = codec.loads(codec.dumps(usage), self.run_id)
        with self._space.lock:
            record = self._space.record(self._key)
            done = transitions.complete(
                record,
                self._epoch,
                self._incarnation,
                stored,
                time.time(),
                self.run_id,
                usage=stored_usage,
            )
            run = self._write(done)
            run.phases.clear()
            run.segments.clear()

    async def fail(self, error: str) -> None:
        with self._space.lock:
            record = self._space.record(self._key)
            self._write(
                transitions.fail(
                    record, self._epoch, self._incarnation, error, time.time(), self.run_id
                )
            )

    async def release(self) -> None:
        with self._space.lock:
            record = self._space.record(self._key)
            self._write(
                transitions.release(
                    record, self._epoch, self._incarnation, time.time(), self.run_id
                )
            )

    async def renew(self) -> bool:
        with self._space.lock:
            record = self._space.record(self._key)
            renewed = transitions.renew(
                record, self._epoch, self._incarnation, time.time(), self.run_id
            )
            self._write(renewed)
        return renewed.cancel_requested

    async def wait(self, request: JSON, timeout: float | None) -> None:
        stored = codec.loads(codec.dumps(request), self.run_id)
        with self._space.lock:
            record = self._space.record(self._key)
            self._write(
                transitions.wait(
                    record,
                    self._epoch,
                    self._incarnation,
                    stored,
                    timeout,
                    time.time(),
                    self.run_id,
                )
            )


class MemoryStore:
    """A CheckpointerFactory kept in this process's memory."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._space = space_named(name)

    def __repr__(self) -> str:
        return f"MemoryStore(name={self.name!r})"

    @property
    def space(self) -> Space:
        """The stored runs (tests damage them through this)."""
        return self._space

    async def begin(self, start: RunStart) -> MemoryCheckpointer:
        key = (start.namespace, start.run_id)
        stored_input = codec.loads(codec.dumps(start.input), start.run_id)
        with self._space.lock:
            record = transitions.begin(
                start, stored_input, time.time(), exists=key in self._space.runs
            )
            self._space.runs[key] = Run(encode_record(record))
        return MemoryCheckpointer(self._space, key, record, SaveCursor())

    async def submit(self, start: RunStart) -> None:
        key = (start.namespace, start.run_id)
        stored_input = codec.loads(codec.dumps(start.input), start.run_id)
        with self._space.lock:
            record = transitions.submit(
                start, stored_input, time.time(), exists=key in self._space.runs
            )
            self._space.runs[key] = Run(encode_record(record))

    async def claim_next(
        self,
        kinds: Sequence[str],
        *,
        owner: str,
        lease: float,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> Claim | None:
        wanted = set(kinds)
        # Every candidate is judged and claimed under the one lock: no two
        # callers can take the same run. Damaged ones are quarantined first.
        for record in await self.interrupted(namespace, limit=len(self._space.runs) or 1):
            if record.kind not in wanted:
                continue
            try:
                claim = await self.claim(
                    record.run_id, owner=owner, lease=lease, namespace=namespace
                )
            except UnknownFormat:
                continue
            except CorruptCheckpoint as exc:  # its transcript does not parse
                if await self.quarantine(record.run_id, _reason(exc), namespace):
                    log.error(
                        "quarantined run %r in namespace %r: %s", record.run_id, namespace, exc
                    )
                continue
            if claim is not None:
                return claim
        return None

    async def send(
        self, run_id: str, delivery: JSON, namespace: str = DEFAULT_NAMESPACE
    ) -> RunRecord:
        key = (namespace, run_id)
        stored = codec.loads(codec.dumps(delivery), run_id)
        with self._space.lock:
            sent = transitions.send(self._space.record(key), stored, time.time(), run_id, namespace)
            self._space.runs[key].record = encode_record(sent)
        return sent

    async def cancel(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> RunRecord:
        key = (namespace, run_id)
        with self._space.lock:
            cancelled = transitions.cancel(self._space.record(key), time.time(), run_id, namespace)
            self._space.runs[key].record = encode_record(cancelled)
        return cancelled

    async def interrupted(
        self, namespace: str = DEFAULT_NAMESPACE, limit: int = 100
    ) -> list[RunRecord]:
        now = time.time()
        found: list[RunRecord] = []
        damaged: list[tuple[str, CorruptCheckpoint]] = []
        with self._space.lock:
            for (ns, run_id), run in self._space.runs.items():
                if ns != namespace:
                    continue
                try:
                    record = decode_record(run.record, run_id)
                except UnknownFormat:
                    continue  # a newer outlast's: not ours to judge
                except CorruptCheckpoint as exc:
                    damaged.append((run_id, exc))
                    continue
                if transitions.is_interrupted(record, now):
                    found.append(record)
        for run_id, error in damaged:
            if await self.quarantine(run_id, _reason(error), namespace):
                log.error("quarantined run %r in namespace %r: %s", run_id, namespace, error)
        found.sort(key=transitions.interrupted_order)
        return found[:limit]

    async def claim(
        self, run_id: str, *, owner: str, lease: float, namespace: str = DEFAULT_NAMESPACE
    ) -> Claim | None:
        key = (namespace, run_id)
        with self._space.lock:
            claimed = transitions.claim(
                self._space.record(key), owner=owner, lease=lease, now=time.time()
            )
            if claimed is None:
                return None
            # Decoded before writing: a corrupt transcript leaves the run untouched.
            state = self._space.state(key, claimed)
            self._space.runs[key].record = encode_record(claimed)
        cursor = SaveCursor(phases=len(state.phases), messages=len(state.history))
        checkpointer = MemoryCheckpointer(self._space, key, claimed, cursor)
        return Claim(checkpointer, ResumeState(state.history, state.phases), claimed)

    async def quarantine(
        self, run_id: str, reason: str, namespace: str = DEFAULT_NAMESPACE
    ) -> bool:
        key = (namespace, run_id)
        now = time.time()
        with self._space.lock:
            run = self._space.runs.get(key)
            if run is None:
                return False
            try:
                record = decode_record(run.record, run_id)
            except UnknownFormat:
                return False
            except CorruptCheckpoint:
                stub = transitions.quarantined_stub(run_id, namespace, reason, now)
                run.damaged, run.record = run.record, encode_record(stub)
                return True
            failed = transitions.quarantine(record, reason, now)
            if failed is None:
                return False
            run.record = encode_record(failed)
            return True

    async def load(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> StoredRun | None:
        key = (namespace, run_id)
        with self._space.lock:
            record = self._space.record(key)
            if record is None:
                return None
            return StoredRun(record, self._space.state(key, record))

    async def list(
        self,
        namespace: str = DEFAULT_NAMESPACE,
        status: RunStatus | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> RunPage:
        with self._space.lock:
            records = []
            for (ns, run_id), run in self._space.runs.items():
                if ns != namespace or (cursor is not None and run_id <= cursor):
                    continue
                try:
                    record = decode_record(run.record, run_id)
                except CorruptCheckpoint:
                    continue  # load() reports it by name
                if status is None or record.status is status:
                    records.append(record)
        records.sort(key=lambda r: r.run_id)
        page = tuple(itertools.islice(records, limit))
        more = len(records) > limit
        return RunPage(page, page[-1].run_id if more and page else None)

    async def delete(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> bool:
        with self._space.lock:
            return self._space.runs.pop((namespace, run_id), None) is not None

    async def purge(self, older_than: float, namespace: str = DEFAULT_NAMESPACE) -> int:
        now = time.time()
        with self._space.lock:
            doomed = []
            for key, run in self._space.runs.items():
                if key[0] != namespace:
                    continue
                try:
                    record = decode_record(run.record, key[1])
                except CorruptCheckpoint:
                    continue
                if transitions.purgeable(record, older_than, now):
                    doomed.append(key)
            for key in doomed:
                del self._space.runs[key]
        return len(doomed)

    async def close(self) -> None:
        """Nothing to release: named stores live as long as the process."""


def _reason(exc: CorruptCheckpoint) -> str:
    return f"{type(exc).__name__}: {exc}"
