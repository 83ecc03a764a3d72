"""Decoding what the scripts answer into outlast's records.

Every failure to decode raises CorruptCheckpoint naming the run: a record
that does not parse, a transcript entry that is not a message; a format
version this code does not read raises its subclass UnknownFormat.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from outlast.adapter import (
    JSON,
    CheckpointState,
    CorruptCheckpoint,
    RunRecord,
    RunStatus,
    codec,
)

Fields = Mapping[str, bytes]


def fields_of(reply: Any) -> dict[str, bytes]:
    """A hash as the script's flat ``HGETALL`` list, or redis-py's dict, keyed by text."""
    if isinstance(reply, Mapping):
        items = list(reply.items())
    else:
        flat = list(reply or ())
        items = list(zip(flat[0::2], flat[1::2], strict=True))
    return {text(key): bytes(value) for key, value in items}


def text(value: bytes | str) -> str:
    """Bytes from Redis as text (a run id, a field name)."""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def check_version(stored: bytes | None, run_id: str) -> None:
    """Raise UnknownFormat for a record of another format version, and
    CorruptCheckpoint when the version does not parse."""
    if stored is None:
        raise CorruptCheckpoint(run_id, "the run's record lacks its format version")
    try:
        version = int(stored)
    except ValueError as exc:
        raise CorruptCheckpoint(run_id, f"the run's format version does not parse ({exc})") from exc
    codec.check_version(version, run_id)


def flag(value: bytes | str, run_id: str) -> bool:
    """A flag the scripts store as ``1`` or ``0`` (absent: written before it existed)."""
    if value in (b"1", "1"):
        return True
    if value in (b"0", "0"):
        return False
    raise CorruptCheckpoint(run_id, f"the run's record holds {value!r} where 0 or 1 belongs")


def _ms(value: bytes) -> float:
    """Server milliseconds as POSIX seconds."""
    return float(value) / 1000


def _json(fields: Fields, name: str, run_id: str) -> JSON:
    """A field holding JSON text; None when absent (a result before the run
    completed, or a field the record was written before)."""
    value = fields.get(name)
    return None if value is None else codec.loads(value, run_id)


def decode_record(fields: Fields, run_id: str) -> RunRecord:
    """The RunRecord stored in a run's meta hash; CorruptCheckpoint when it does not parse."""
    check_version(fields.get("v"), run_id)
    try:
        expires = fields["expires_ms"]
        return RunRecord(
            run_id=fields["run_id"].decode(),
            namespace=fields["namespace"].decode(),
            kind=fields["kind"].decode(),
            input=codec.loads(fields["input"], run_id),
            status=RunStatus(fields["status"].decode()),
            epoch=int(fields["epoch"]),
            attempts=int(fields["attempts"]),
            crashes=int(fields.get("crashes", b"0")),
            owner=fields["owner"].decode(),
            lease=float(fields["lease"]),
            lease_expires_at=_ms(expires) if expires else None,
            created_at=_ms(fields["created_ms"]),
            updated_at=_ms(fields["updated_ms"]),
            result=_json(fields, "result", run_id),
            error=fields["error"].decode() if "error" in fields else None,
            incarnation=fields.get("incarnation", b"").decode(),
            cancel_requested=flag(fields.get("cancel_requested", b"0"), run_id),
            wait=_json(fields, "wait", run_id),
            delivery=_json(fields, "delivery", run_id),
            usage=_json(fields, "usage", run_id),
        )
    except KeyError as exc:
        raise CorruptCheckpoint(run_id, f"the run's record lacks the field {exc}") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptCheckpoint(run_id, f"the run's record does not parse ({exc})") from exc


def decode_state(
    fields: Fields, phases: Sequence[bytes], messages: Sequence[bytes], run_id: str
) -> CheckpointState:
    """The saved progress: phases, and the transcript of the segment after them."""
    decoded_phases = codec.decode_all(phases, run_id, codec.decode_phase)
    try:
        segment = int(fields.get("seg", b"0"))
    except ValueError as exc:
        raise CorruptCheckpoint(run_id, f"the segment number does not parse ({exc})") from exc
    # The messages list holds segment `seg`; it is the current one unless
    # phases were saved after it (then the current segment is still empty).
    current = messages if segment == len(decoded_phases) else ()
    history = codec.decode_all(current, run_id, codec.decode_message)
    return CheckpointState(history, decoded_phases)
