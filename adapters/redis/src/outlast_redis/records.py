"""Decoding what the scripts answer into outlast's records.

Every failure to decode raises CorruptCheckpoint naming the run: a record
that does not parse, a format version this code does not read, a transcript
entry that is not a message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from outlast import codec
from outlast.errors import CorruptCheckpoint
from outlast.ports import CheckpointState, RunRecord, RunStatus

Fields = Mapping[str, bytes]


def fields_of(reply: Any) -> dict[str, bytes]:
    """A hash as the script's flat ``HGETALL`` list, or redis-py's dict, keyed by text."""
    if isinstance(reply, Mapping):
        items = list(reply.items())
    else:
        flat = list(reply or ())
        items = list(zip(flat[0::2], flat[1::2], strict=True))
    return {_text(key): bytes(value) for key, value in items}


def _text(value: bytes | str) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def decode_record(fields: Fields, run_id: str) -> RunRecord:
    """The RunRecord stored in a run's meta hash; CorruptCheckpoint when it does not parse."""
    try:
        codec.check_version(int(fields["v"]), run_id)
        expires = fields["expires_ms"]
        status = RunStatus(fields["status"].decode())
        return RunRecord(
            run_id=fields["run_id"].decode(),
            namespace=fields["namespace"].decode(),
            kind=fields["kind"].decode(),
            input=codec.loads(fields["input"], run_id),
            status=status,
            epoch=int(fields["epoch"]),
            attempts=int(fields["attempts"]),
            owner=fields["owner"].decode(),
            lease_expires_at=int(expires) / 1000 if expires else None,
            created_at=int(fields["created_ms"]) / 1000,
            updated_at=int(fields["updated_ms"]) / 1000,
            result=codec.loads(fields["result"], run_id) if "result" in fields else None,
            error=fields["error"].decode() if "error" in fields else None,
        )
    except CorruptCheckpoint:
        raise
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


def decode_lease(fields: Fields, run_id: str) -> int | None:
    """The lease expiry in server ms, None when released or finished."""
    try:
        text = fields["expires_ms"]
        return int(text) if text else None
    except (KeyError, ValueError) as exc:
        raise CorruptCheckpoint(run_id, "the run's lease expiry does not parse") from exc
