"""One run's durable record in PostgreSQL, held at one epoch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from psycopg import sql

from outlast.delta import SaveCursor
from outlast.errors import LeaseLost
from outlast.messages import JSON
from outlast.ports import CheckpointState
from outlast_postgres import records

if TYPE_CHECKING:
    from outlast_postgres.store import PostgresStore


class PostgresCheckpointer:
    """A Checkpointer whose every write is one fenced statement (one round trip).

    Each write updates the run's row only while it still holds this epoch and
    is running; every other row the write touches is joined to that update in
    the same statement, so a fenced writer raises LeaseLost having written
    nothing. ``save`` writes only the delta since the last successful save.
    """

    def __init__(
        self, store: PostgresStore, namespace: str, run_id: str, epoch: int, cursor: SaveCursor
    ) -> None:
        self._store = store
        self._namespace = namespace
        self._run_id = run_id
        self._epoch = epoch
        self._cursor = cursor

    def __repr__(self) -> str:
        return (
            f"PostgresCheckpointer(run_id={self._run_id!r}, namespace={self._namespace!r}, "
            f"epoch={self._epoch})"
        )

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
        await self._fenced(
            self._store.statements.save,
            "saving",
            first_phase=delta.first_phase,
            phases=records.encode_phases(delta.phases),
            segment=delta.segment,
            first_message=delta.first_message,
            messages=records.encode_messages(delta.messages),
        )
        # Only now is the delta durable; a failed save is retried, with more, by the next.
        self._cursor = delta.after

    async def complete(self, result: JSON) -> None:
        encoded = records.encode_json(result)
        await self._fenced(self._store.statements.complete, "completing", result=encoded)

    async def fail(self, error: str) -> None:
        # A JSON string, so any text (NUL, lone surrogates) round-trips exactly.
        encoded = records.encode_json(error)
        await self._fenced(self._store.statements.fail, "failing", error=encoded)

    async def release(self) -> None:
        await self._fenced(self._store.statements.release, "releasing")

    async def renew(self) -> None:
        await self._fenced(self._store.statements.renew, "renewing the lease of")

    async def _fenced(self, statement: sql.Composed, verb: str, **params: Any) -> None:
        params.update(namespace=self._namespace, run_id=self._run_id, epoch=self._epoch)
        async with self._store.connection(f"{verb} run {self._run_id!r}") as conn:
            cursor = await conn.execute(statement, params)
            row = await cursor.fetchone()
        owned, status = row if row is not None else (0, None)
        if owned:
            return
        if status is None:
            raise LeaseLost(self._run_id, self._epoch, "the run was deleted")
        if status != "running":
            raise LeaseLost(self._run_id, self._epoch, f"the run is {status}")
        raise LeaseLost(self._run_id, self._epoch)
