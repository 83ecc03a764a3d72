"""Rows to records and back: the stored text of runs, messages and phases.

All JSON is the text :mod:`outlast.codec` produced. One adjustment makes it
storable: PostgreSQL text is UTF-8, which cannot hold a lone surrogate (a
Python string may), so any such character is written as its JSON escape
(``\\udc80``); ``json.loads`` turns the escape back into the same character,
so the round-trip stays exact. (``\\u0000`` is already escaped by the codec.)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import TupleRow
from psycopg.types.string import ByteaBinaryLoader

from outlast.adapter import (
    JSON,
    CheckpointState,
    CorruptCheckpoint,
    Message,
    PhaseOutput,
    RunRecord,
    RunStatus,
    codec,
)

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")

RUN_COLUMNS = (
    "{r}.run_id, {r}.namespace, {r}.kind, {r}.input, {r}.status, {r}.epoch, {r}.attempts, "
    "{r}.crashes, {r}.owner, {r}.lease_seconds, extract(epoch FROM {r}.lease_expires_at)::float8, "
    "extract(epoch FROM {r}.created_at)::float8, "
    "extract(epoch FROM greatest({r}.updated_at, {r}.saved_at, "
    "(SELECT m.saved_at FROM {messages} m WHERE m.namespace = {r}.namespace "
    "AND m.run_id = {r}.run_id ORDER BY m.segment DESC, m.seq DESC LIMIT 1)))::float8, "
    "{r}.result, {r}.error, {r}.incarnation, {r}.cancel_requested, {r}.wait, {r}.delivery, "
    "{r}.usage, {r}.format_version"
)
"""The columns :func:`record_from_row` reads, for a runs table aliased ``{r}``
and the messages table ``{messages}``.

A record's ``updated_at`` is the latest of the row's ``updated_at`` (every
write but a save), its ``saved_at`` (a save by the general statement, which
updates the row; NULL before the first one since schema version 5) and the
``saved_at`` of the run's last message (a save that appends messages without
updating the row, since schema version 6; the primary key finds it): see
``statements._SAVED`` and ``statements._APPEND``. NULLs are passed over."""

RUN_COLUMN_COUNT = 21


def storable(text: str) -> str:
    """JSON text safe for a UTF-8 column (lone surrogates escaped)."""
    if _LONE_SURROGATE.search(text) is None:
        return text
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def encode_json(value: JSON) -> str:
    return storable(codec.dumps(value))


def encode_messages(messages: Sequence[Message]) -> list[str]:
    return [storable(codec.encode_message(m)) for m in messages]


def encode_phases(phases: Sequence[PhaseOutput]) -> list[str]:
    return [storable(codec.encode_phase(p)) for p in phases]


def record_from_row(row: Sequence[Any]) -> RunRecord:
    """The RunRecord in ``row``'s :data:`RUN_COLUMNS`; CorruptCheckpoint if unparsable."""
    (
        run_id,
        namespace,
        kind,
        input_text,
        status,
        epoch,
        attempts,
        crashes,
        owner,
        lease,
        lease_expires_at,
        created_at,
        updated_at,
        result_text,
        error_text,
        incarnation,
        cancel_requested,
        wait_text,
        delivery_text,
        usage_text,
        version,
    ) = row[:RUN_COLUMN_COUNT]
    codec.check_version(version, run_id)
    try:
        run_status = RunStatus(status)
    except ValueError as exc:
        raise CorruptCheckpoint(run_id, f"unknown status {status!r}") from exc
    return RunRecord(
        run_id=run_id,
        namespace=namespace,
        kind=kind,
        input=codec.loads(input_text, run_id),
        status=run_status,
        epoch=epoch,
        attempts=attempts,
        crashes=crashes,
        owner=owner,
        lease=lease,
        lease_expires_at=lease_expires_at,
        created_at=created_at,
        updated_at=updated_at,
        result=_json(result_text, run_id),
        error=None if error_text is None else _error(error_text, run_id),
        incarnation=incarnation,
        cancel_requested=cancel_requested,
        wait=_json(wait_text, run_id),
        delivery=_json(delivery_text, run_id),
        usage=_json(usage_text, run_id),
    )


def bodies_cursor(conn: AsyncConnection[TupleRow]) -> AsyncCursor[TupleRow]:
    """A cursor reading message bodies in the binary format, as the bytes
    stored: the JSON decoder reads UTF-8 bytes as they are, so a resume skips
    making a str of every message first."""
    cursor = conn.cursor(binary=True)
    cursor.adapters.register_loader("text", ByteaBinaryLoader)
    return cursor


def state_from_bodies(
    run_id: str, phases: Sequence[str] | None, messages: Sequence[str | bytes] | None
) -> CheckpointState:
    """The saved progress from the stored phase and current-segment message texts."""
    return CheckpointState(
        history=codec.decode_all(messages or (), run_id, codec.decode_message),
        phases=codec.decode_all(phases or (), run_id, codec.decode_phase),
    )


def encode_optional_json(value: JSON) -> str | None:
    """``value`` as stored in a nullable JSON column: None (never set) is NULL."""
    return None if value is None else encode_json(value)


def _json(text: str | None, run_id: str) -> JSON:
    # NULL: a column never set (a run written before it existed, too).
    return None if text is None else codec.loads(text, run_id)


def _error(text: str, run_id: str) -> str:
    # Stored as a JSON string so any text (NUL, lone surrogates) round-trips exactly.
    value = codec.loads(text, run_id)
    if not isinstance(value, str):
        raise CorruptCheckpoint(run_id, "the stored error is not a JSON string")
    return value


def sort_out(
    rows: Sequence[Sequence[Any]],
) -> tuple[list[RunRecord], list[tuple[str, CorruptCheckpoint]]]:
    """The records of ``rows`` that parse, and the (run id, error) of those that do not."""
    found: list[RunRecord] = []
    damaged: list[tuple[str, CorruptCheckpoint]] = []
    for row in rows:
        try:
            found.append(record_from_row(row))
        except CorruptCheckpoint as exc:
            damaged.append((row[0], exc))
    return found, damaged
