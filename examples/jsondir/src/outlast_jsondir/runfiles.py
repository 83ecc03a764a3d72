"""Where a run's files are and how they are read and committed.

Layout under the store's root directory::

    .lock                                   the store-wide flock (files.py)
    _<namespace>/_<run id>/run.json         the record, completed phases, commit mark
    _<namespace>/_<run id>/segment-N.jsonl  the transcript of segment N, a message a line
    _<namespace>/_<run id>/run.json.damaged what a quarantined run.json held

``run.json`` is the commit point: a run exists exactly when it does, and it is
replaced atomically on every write. It carries the record
(``RunRecord.to_json()``: the status, epoch and incarnation that fence
writers, the lease and crash count, and the executor's JSON: input, result,
a waiting run's ``wait`` and ``delivery``, the ``usage``) and ``committed``:
how many bytes of the current segment are durable. A save appends the new
messages to the segment file first and then commits them by replacing
``run.json``, so a crash between the two leaves bytes that are never read and
are overwritten by the next save.

:class:`RunFiles` is shared by the store and every checkpointer it hands out,
so a checkpointer never reaches into its store: both call this public object.
Every method but :meth:`RunFiles.locked` runs inside ``locked`` (holding the
store-wide lock).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from outlast.adapter import (
    FORMAT_VERSION,
    JSON,
    CheckpointState,
    CorruptCheckpoint,
    Delta,
    Message,
    PhaseOutput,
    RunRecord,
    RunStatus,
    codec,
)
from outlast_jsondir.files import (
    append_at,
    decode_name,
    encode_name,
    locked,
    make_folders,
    read_prefix,
    write_atomically,
)

T = TypeVar("T")
RUN_FILE = "run.json"
DAMAGED_FILE = "run.json.damaged"


@dataclass(frozen=True, slots=True)
class RunDocument:
    """What ``run.json`` holds: the record, the completed phases, and how
    much of the current segment (number ``len(phases)``) is committed, in
    bytes and in messages (lines)."""

    record: RunRecord
    phases: tuple[PhaseOutput, ...] = ()
    committed: int = 0
    lines: int = 0

    def to_bytes(self) -> bytes:
        data: dict[str, JSON] = {
            "v": FORMAT_VERSION,
            **self.record.to_json(),
            "phases": [p.to_json() for p in self.phases],
            "committed": self.committed,
            "lines": self.lines,
        }
        return codec.dumps(data).encode()

    @classmethod
    def from_bytes(cls, data: bytes, run_id: str) -> RunDocument:
        """Parse ``run.json``; anything unexpected is CorruptCheckpoint naming the
        run (UnknownFormat when a newer outlast wrote it).

        Files of earlier versions read as they are: their ``lease`` key is
        the one ``RunRecord.to_json()`` now writes, and the record's
        ``crashes``, ``incarnation`` and ``cancel_requested`` default to 0,
        "" and False, ``wait``, ``delivery`` and ``usage`` to None.
        """
        parsed = codec.loads(data, run_id)
        if not isinstance(parsed, dict):
            raise CorruptCheckpoint(run_id, "run.json is not a JSON object")
        codec.check_version(parsed.get("v"), run_id)
        obj: dict[str, Any] = parsed  # field types are checked by the conversions below
        try:
            phases = tuple(PhaseOutput.from_json(p) for p in obj["phases"])
            return cls(RunRecord.from_json(obj), phases, int(obj["committed"]), int(obj["lines"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptCheckpoint(run_id, f"run.json does not parse ({exc!r})") from exc


class RunFiles:
    """The run files under one root, as the store and its checkpointers use them."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def locked(self, job: Callable[[], T], *, exclusive: bool) -> T:
        """Run ``job`` off the event loop, holding the store-wide lock."""

        def run() -> T:
            with locked(self.root, exclusive=exclusive):
                return job()

        return await asyncio.to_thread(run)

    def folder(self, namespace: str, run_id: str) -> Path:
        return self.root / encode_name(namespace, "namespace") / encode_name(run_id, "run id")

    def segment(self, namespace: str, run_id: str, number: int) -> Path:
        return self.folder(namespace, run_id) / f"segment-{number}.jsonl"

    def exists(self, namespace: str, run_id: str) -> bool:
        """Whether the run exists, readable or not (begin must refuse it either way)."""
        return (self.folder(namespace, run_id) / RUN_FILE).exists()

    def read(self, namespace: str, run_id: str) -> RunDocument | None:
        """The run's ``run.json``, or None; CorruptCheckpoint when it does not parse."""
        try:
            data = (self.folder(namespace, run_id) / RUN_FILE).read_bytes()
        except FileNotFoundError:
            return None
        return RunDocument.from_bytes(data, run_id)

    def records(self, namespace: str) -> tuple[list[RunRecord], list[CorruptCheckpoint]]:
        """The records of a namespace that parse, by run id, and the errors of
        those that do not."""
        space = self.root / encode_name(namespace, "namespace")
        records: list[RunRecord] = []
        damaged: list[CorruptCheckpoint] = []
        for folder in space.iterdir() if space.is_dir() else ():
            try:
                run = self.read(namespace, decode_name(folder.name))
            except CorruptCheckpoint as exc:
                damaged.append(exc)
                continue
            if run is not None:  # a folder without run.json is a deletion's leftover
                records.append(run.record)
        return sorted(records, key=lambda r: r.run_id), damaged

    def progress(self, run: RunDocument) -> CheckpointState:
        """The run's committed transcript and phases; CorruptCheckpoint when a
        message does not parse or committed messages are missing."""
        record = run.record
        lines = read_prefix(
            self.segment(record.namespace, record.run_id, len(run.phases)), run.committed
        ).splitlines()
        if len(lines) != run.lines:
            raise CorruptCheckpoint(
                record.run_id, f"the transcript holds {len(lines)} of {run.lines} saved messages"
            )
        history: tuple[Message, ...] = codec.decode_all(lines, record.run_id, codec.decode_message)
        return CheckpointState(history, run.phases)

    def append(self, run: RunDocument, delta: Delta) -> RunDocument:
        """Write ``delta``'s messages after the committed part of their segment
        and return the document that commits them (nothing counts until it is
        committed). Encoding happens first: a message that is not JSON raises
        ValueError before anything is written."""
        data = b"".join(codec.encode_message(m).encode() + b"\n" for m in delta.messages)
        record = run.record
        segment = self.segment(record.namespace, record.run_id, delta.segment)
        # A new phase starts its segment empty; the stored one continues.
        same = delta.segment == len(run.phases)
        committed, lines = (run.committed, run.lines) if same else (0, 0)
        if delta.first_message != lines:
            # A save whose commit landed but whose caller never heard of it (it
            # was cancelled) is sent again: write from its first message.
            committed = _offset_of_line(read_prefix(segment, committed), delta.first_message)
        if data:
            committed = append_at(segment, committed, data)
        return replace(
            run,
            phases=run.phases[: delta.first_phase] + delta.phases,
            committed=committed,
            lines=delta.first_message + len(delta.messages),
        )

    def commit(self, run: RunDocument) -> None:
        """Replace the run's ``run.json`` with ``run``: from now on it counts.

        A completed run keeps no transcript: its segments go once the
        completion is durable (a crash before that leaves files no one reads).
        """
        folder = self.folder(run.record.namespace, run.record.run_id)
        make_folders(folder)
        write_atomically(folder / RUN_FILE, run.to_bytes())
        if run.record.status is RunStatus.COMPLETED:
            for segment in folder.glob("segment-*.jsonl"):
                segment.unlink()

    def set_aside(self, namespace: str, run_id: str) -> None:
        """Keep a copy of the run's damaged ``run.json`` beside it, for forensics,
        before a quarantine replaces it (``run.json`` exists at every moment)."""
        folder = self.folder(namespace, run_id)
        write_atomically(folder / DAMAGED_FILE, (folder / RUN_FILE).read_bytes())

    def remove(self, namespace: str, run_id: str) -> bool:
        """Delete the run and all its files; False when it does not exist.

        ``run.json`` goes first: the run is gone the moment it is, and a crash
        halfway leaves only files no one reads (the next begin of the id
        overwrites them from offset 0).
        """
        folder = self.folder(namespace, run_id)
        if not folder.is_dir():
            return False
        existed = (folder / RUN_FILE).exists()
        (folder / RUN_FILE).unlink(missing_ok=True)
        shutil.rmtree(folder)
        return existed


def _offset_of_line(data: bytes, line: int) -> int:
    """Byte offset where line number ``line`` of ``data`` starts."""
    offset = 0
    for _ in range(line):
        offset = data.index(b"\n", offset) + 1
    return offset
