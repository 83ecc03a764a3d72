"""One run's record in a SQLite file, held at one epoch of one incarnation.

Every write is one ``BEGIN IMMEDIATE`` transaction whose UPDATE carries
:func:`outlast.transitions.owned` in its WHERE clause (``_OWNED``): a
superseded epoch, another incarnation, an ended or deleted run writes
nothing and raises LeaseLost saying which. ``save`` inserts only the delta.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

from outlast import codec
from outlast.delta import Delta, SaveCursor
from outlast.errors import LeaseLost
from outlast.messages import JSON
from outlast.ports import CheckpointState, RunRecord, RunStatus
from outlast.stores.sqlite_file import SqliteFile
from outlast.stores.sqlite_schema import write_transaction

_RUNNING = RunStatus.RUNNING.value
# Appended to every checkpointer UPDATE: transitions.owned, in SQL.
_OWNED = " WHERE namespace = ? AND run_id = ? AND incarnation = ? AND epoch = ? AND status = ?"


class SqliteCheckpointer:
    """One run's record in a SQLite file, held at one epoch of one incarnation."""

    def __init__(self, file: SqliteFile, record: RunRecord, cursor: SaveCursor) -> None:
        self._file = file
        self._namespace = record.namespace
        self._run_id = record.run_id
        self._epoch = record.epoch
        self._incarnation = record.incarnation
        self._cursor = cursor

    def __repr__(self) -> str:
        return f"SqliteCheckpointer(run_id={self._run_id!r}, epoch={self._epoch})"

    @property
    def run_id(self) -> str:
        return self._run_id

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def epoch(self) -> int:
        return self._epoch

    async def save(self, state: CheckpointState) -> bool:
        delta = self._cursor.delta(state)
        rows = self._rows(delta)  # encoded before BEGIN: the lock is held only for the I/O
        cancel_requested = await self._file.call(lambda conn: self._write_delta(conn, delta, *rows))
        # Only now is the delta durable; a failed save is retried by the next.
        self._cursor = delta.after
        return cancel_requested

    async def complete(self, result: JSON, usage: JSON = None) -> None:
        result_text = codec.dumps(result)
        usage_text = None if usage is None else codec.dumps(usage)

        def job(conn: sqlite3.Connection) -> None:
            with write_transaction(conn):
                self._owned_update(
                    conn,
                    "UPDATE runs SET status = 'completed', result = ?, usage = ?, "
                    "lease_expires_at = NULL, updated_at = ?",
                    (result_text, usage_text, time.time()),
                )
                key = (self._namespace, self._run_id)
                conn.execute("DELETE FROM messages WHERE namespace = ? AND run_id = ?", key)
                conn.execute("DELETE FROM phases WHERE namespace = ? AND run_id = ?", key)

        await self._file.call(job)

    async def fail(self, error: str) -> None:
        await self._owned_write(
            "UPDATE runs SET status = 'failed', error = ?, lease_expires_at = NULL, updated_at = ?",
            lambda now: (error, now),
        )

    async def release(self) -> None:
        await self._owned_write(
            "UPDATE runs SET lease_expires_at = NULL, updated_at = ?", lambda now: (now,)
        )

    async def renew(self) -> bool:
        return await self._owned_write(
            "UPDATE runs SET lease_expires_at = ? + lease_seconds, updated_at = ?",
            lambda now: (now, now),
        )

    async def wait(self, request: JSON, timeout: float | None) -> None:
        request_text = codec.dumps(request)
        await self._owned_write(
            "UPDATE runs SET status = 'waiting', wait = ?, delivery = NULL, "
            "lease_expires_at = ?, updated_at = ?",
            lambda now: (request_text, None if timeout is None else now + timeout, now),
        )

    def _rows(self, delta: Delta) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        ns, run_id = self._namespace, self._run_id
        phases = [
            (ns, run_id, delta.first_phase + i, codec.encode_phase(phase))
            for i, phase in enumerate(delta.phases)
        ]
        messages = [
            (ns, run_id, delta.segment, delta.first_message + i, codec.encode_message(message))
            for i, message in enumerate(delta.messages)
        ]
        return phases, messages

    def _write_delta(
        self,
        conn: sqlite3.Connection,
        delta: Delta,
        phases: list[tuple[Any, ...]],
        messages: list[tuple[Any, ...]],
    ) -> bool:
        with write_transaction(conn):
            # Also for an empty delta: a fenced writer must learn it is fenced.
            cancel_requested = self._owned_update(
                conn, "UPDATE runs SET updated_at = ?", (time.time(),)
            )
            # OR REPLACE only ever meets rows at or past the durable cursor (a
            # save whose commit succeeded but whose caller never heard back).
            conn.executemany(
                "INSERT OR REPLACE INTO phases (namespace, run_id, idx, body) VALUES (?, ?, ?, ?)",
                phases,
            )
            conn.executemany(
                "INSERT OR REPLACE INTO messages (namespace, run_id, segment, seq, body) "
                "VALUES (?, ?, ?, ?, ?)",
                messages,
            )
        return cancel_requested

    async def _owned_write(self, update: str, values: Callable[[float], tuple[Any, ...]]) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            with write_transaction(conn):
                return self._owned_update(conn, update, values(time.time()))

        return await self._file.call(job)

    def _owned_update(self, conn: sqlite3.Connection, update: str, values: tuple[Any, ...]) -> bool:
        """Run ``update`` only while this checkpointer owns the running run, else
        LeaseLost; return the run's ``cancel_requested``.

        Called inside a write transaction, whose rollback undoes the rest.
        """
        owned = (self._namespace, self._run_id, self._incarnation, self._epoch, _RUNNING)
        if conn.execute(update + _OWNED, (*values, *owned)).rowcount == 1:
            flag = conn.execute(
                "SELECT cancel_requested FROM runs WHERE namespace = ? AND run_id = ?",
                (self._namespace, self._run_id),
            ).fetchone()
            return bool(flag[0])
        row = conn.execute(
            "SELECT epoch, status, incarnation FROM runs WHERE namespace = ? AND run_id = ?",
            (self._namespace, self._run_id),
        ).fetchone()
        if row is None:
            raise LeaseLost(self._run_id, self._epoch, "the run was deleted")
        if row["incarnation"] != self._incarnation:
            raise LeaseLost(self._run_id, self._epoch, "the run was deleted and begun again")
        if row["epoch"] == self._epoch:
            raise LeaseLost(self._run_id, self._epoch, f"the run is {row['status']}")
        raise LeaseLost(self._run_id, self._epoch, f"epoch {row['epoch']} owns it now")
