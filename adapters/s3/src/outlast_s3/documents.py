"""The JSON documents the S3 store writes. Every one carries ``"v"``, the
format version (outlast.codec.FORMAT_VERSION), and ``"type"``.

* ``state``: the small per-run object, replaced by compare-and-swap.
* ``segment``: one save's delta (new phases, new messages), written once.
* ``fence``: written at the next sequence number of an epoch whose writer
  must stop (a claim superseded it, a quarantine, a cancel or a delete ended
  the run), so that writer's next segment write fails its If-None-Match.
* ``cancel-request``: written at the next sequence number of the epoch that
  owns a run someone asked to cancel, so the owner's next save finds it (and
  writes its segment one further); readers count it as a save of nothing.
* ``compacted``: a run's whole resumable state up to one segment.

Decoding anything unexpected raises CorruptCheckpoint naming the run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from outlast.adapter import JSON, CorruptCheckpoint, Message, PhaseOutput, RunRecord, codec
from outlast_s3.layout import SegmentName

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Compaction:
    """Where a run's compacted state lives and which segment it covers."""

    key: str
    through: SegmentName


@dataclass(frozen=True, slots=True)
class RunState:
    """The per-run state object: the record plus storage bookkeeping.

    ``record.incarnation`` names the folder of this run's segments (the
    record is the only place it is kept). ``compaction`` is the current
    compacted object; ``damaged`` the key where a quarantine kept the bytes
    of a state object that did not parse. ``rev`` grows on every write and
    ``writer`` names the writer, so a retried request that reports a failed
    precondition can recognise its own earlier write.
    """

    record: RunRecord
    compaction: Compaction | None = None
    damaged: str | None = None
    rev: int = 1
    writer: str = ""


@dataclass(frozen=True, slots=True)
class Segment:
    """One save: phases from ``first_phase``; messages of transcript segment
    ``segment`` from position ``first_message``."""

    name: SegmentName
    at: float
    first_phase: int
    phases: tuple[PhaseOutput, ...]
    segment: int
    first_message: int
    messages: tuple[Message, ...]


FENCE_CAUSES = ("claim", "quarantine", "cancel", "delete")


@dataclass(frozen=True, slots=True)
class Fence:
    """Marks that epoch ``name.epoch`` ends before sequence ``name.seq``:
    ``cause`` (one of FENCE_CAUSES) ended it; ``by_epoch`` is the run's epoch
    then."""

    name: SegmentName
    by_epoch: int
    cause: str = "claim"

    def explain(self) -> str:
        """Why the fenced writer lost the run (LeaseLost's detail)."""
        if self.cause == "delete":
            return "the run was deleted"
        if self.cause == "quarantine":
            return "the run was quarantined"
        if self.cause == "cancel":
            return "the run was cancelled"
        return f"epoch {self.by_epoch} claimed the run"


@dataclass(frozen=True, slots=True)
class CancelNote:
    """A cancel request, left at sequence ``name.seq`` of the epoch that owned
    the run when it was asked (``at``): the owner's save that needs this key
    reads it, reports the request and writes its segment at the next one."""

    name: SegmentName
    at: float


SequenceObject = Segment | Fence | CancelNote
"""What a key of a run's ``seg/`` folder holds."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A run's resumable state up to and including segment ``through``."""

    through: SegmentName
    at: float
    phases: tuple[PhaseOutput, ...] = ()
    segment: int = 0
    messages: tuple[Message, ...] = field(default=())


def encode_state(state: RunState) -> bytes:
    doc: dict[str, JSON] = {
        "v": codec.FORMAT_VERSION,
        "type": "state",
        **state.record.to_json(),
        "compaction": None
        if state.compaction is None
        else {
            "key": state.compaction.key,
            "epoch": state.compaction.through.epoch,
            "seq": state.compaction.through.seq,
        },
        "damaged": state.damaged,
        "rev": state.rev,
        "writer": state.writer,
    }
    return codec.dumps(doc).encode()


def decode_state(body: bytes, run_id: str) -> RunState:
    """The state object in ``body``. Raises CorruptCheckpoint when it does not
    parse, UnknownFormat (a CorruptCheckpoint) when it is another format version.

    Documents of outlast-s3 0.1 kept ``lease`` and ``incarnation`` beside the
    record's fields under the same names, so the record reads them as its own.
    """
    doc = _document(body, run_id, "state")

    def build() -> RunState:
        compaction = doc["compaction"]
        damaged = doc.get("damaged")
        return RunState(
            record=RunRecord.from_json(doc),
            compaction=None
            if compaction is None
            else Compaction(
                str(compaction["key"]),
                SegmentName(_int(compaction["epoch"]), _int(compaction["seq"])),
            ),
            damaged=None if damaged is None else str(damaged),
            rev=_int(doc["rev"]),
            writer=str(doc["writer"]),
        )

    return _parse(build, run_id, "run state")


def encode_message(message: Message) -> str:
    """One message as the JSON text segments and compacted objects hold it."""
    return codec.dumps(message.to_json())


def encode_segment(segment: Segment, messages: Sequence[str] | None = None) -> bytes:
    """The segment object; ``messages``, when given, are its messages already
    encoded (:func:`encode_message`), which the checkpointer keeps for
    compaction."""
    head: dict[str, JSON] = {
        "v": codec.FORMAT_VERSION,
        "type": "segment",
        "epoch": segment.name.epoch,
        "seq": segment.name.seq,
        "at": segment.at,
        "first_phase": segment.first_phase,
        "phases": [p.to_json() for p in segment.phases],
        "segment": segment.segment,
        "first_message": segment.first_message,
    }
    if messages is None:
        messages = [encode_message(m) for m in segment.messages]
    return _with_messages(head, messages)


def encode_fence(fence: Fence) -> bytes:
    return codec.dumps(
        {
            "v": codec.FORMAT_VERSION,
            "type": "fence",
            "epoch": fence.name.epoch,
            "seq": fence.name.seq,
            "by_epoch": fence.by_epoch,
            "cause": fence.cause,
        }
    ).encode()


def encode_cancel_note(note: CancelNote) -> bytes:
    return codec.dumps(
        {
            "v": codec.FORMAT_VERSION,
            "type": "cancel-request",
            "epoch": note.name.epoch,
            "seq": note.name.seq,
            "at": note.at,
        }
    ).encode()


def decode_sequence_object(body: bytes, run_id: str, name: SegmentName) -> SequenceObject:
    """The object at sequence ``name``: a data segment, a fence or a cancel note."""
    doc = _document(body, run_id, "segment", "fence", "cancel-request")

    def build() -> SequenceObject:
        if SegmentName(_int(doc["epoch"]), _int(doc["seq"])) != name:
            raise ValueError(f"object {name} holds segment {doc['epoch']}-{doc['seq']}")
        if doc["type"] == "cancel-request":
            return CancelNote(name, float(doc["at"]))
        if doc["type"] == "fence":
            cause = doc.get("cause", "claim")  # fences of outlast-s3 0.1 were all claims'
            if cause not in FENCE_CAUSES:
                raise ValueError(f"unknown fence cause {cause!r}")
            return Fence(name, _int(doc["by_epoch"]), cause)
        return Segment(
            name=name,
            at=float(doc["at"]),
            first_phase=_int(doc["first_phase"]),
            phases=tuple(PhaseOutput.from_json(p) for p in doc["phases"]),
            segment=_int(doc["segment"]),
            first_message=_int(doc["first_message"]),
            messages=tuple(Message.from_json(m) for m in doc["messages"]),
        )

    return _parse(build, run_id, f"segment {name}")


def encode_snapshot(snapshot: Snapshot, messages: Sequence[str] | None = None) -> bytes:
    """The compacted object; ``messages``, when given, are its messages
    already encoded (:func:`encode_message`): the whole transcript is then
    joined, not encoded again."""
    head: dict[str, JSON] = {
        "v": codec.FORMAT_VERSION,
        "type": "compacted",
        "epoch": snapshot.through.epoch,
        "seq": snapshot.through.seq,
        "at": snapshot.at,
        "phases": [p.to_json() for p in snapshot.phases],
        "segment": snapshot.segment,
    }
    if messages is None:
        messages = [encode_message(m) for m in snapshot.messages]
    return _with_messages(head, messages)


def _with_messages(head: dict[str, JSON], messages: Sequence[str]) -> bytes:
    """``head`` with a last member ``"messages"``, the JSON array of the
    encoded ``messages``: the bytes ``codec.dumps`` gives for the whole
    document (compact separators), built by joining instead of encoding."""
    text = codec.dumps(head)
    return f'{text[:-1]},"messages":[{",".join(messages)}]}}'.encode()


def decode_snapshot(body: bytes, run_id: str) -> Snapshot:
    doc = _document(body, run_id, "compacted")

    def build() -> Snapshot:
        return Snapshot(
            through=SegmentName(_int(doc["epoch"]), _int(doc["seq"])),
            at=float(doc["at"]),
            phases=tuple(PhaseOutput.from_json(p) for p in doc["phases"]),
            segment=_int(doc["segment"]),
            messages=tuple(Message.from_json(m) for m in doc["messages"]),
        )

    return _parse(build, run_id, "compacted state")


def _document(body: bytes, run_id: str, *types: str) -> dict[str, Any]:
    try:
        text = body.decode()
    except UnicodeDecodeError as exc:
        raise CorruptCheckpoint(run_id, f"object is not UTF-8 text ({exc})") from exc
    doc = codec.loads(text, run_id)
    if not isinstance(doc, dict):
        raise CorruptCheckpoint(run_id, "object is not a JSON object")
    codec.check_version(doc.get("v"), run_id)
    if doc.get("type") not in types:
        raise CorruptCheckpoint(
            run_id, f"expected a {' or '.join(types)} object, found type {doc.get('type')!r}"
        )
    return doc


def _parse(build: Callable[[], T], run_id: str, what: str) -> T:
    try:
        return build()
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CorruptCheckpoint(run_id, f"{what} does not parse ({exc!r})") from exc


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value
