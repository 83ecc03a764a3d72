"""One run's durable record in PostgreSQL, held at one epoch of one incarnation."""

from __future__ import annotations

from typing import Any

from psycopg.errors import UniqueViolation

from outlast.adapter import JSON, CheckpointState, LeaseLost, SaveCursor
from outlast_postgres import records
from outlast_postgres.database import Database


class PostgresCheckpointer:
    """A Checkpointer whose every write is one fenced statement (one round trip).

    Each write updates the run's row only while it is still the incarnation
    this checkpointer began or claimed, holds its epoch and is running
    (``transitions.owned``); every other row the write touches is joined to
    that update in the same statement, so a fenced writer raises LeaseLost
    having written nothing. ``save`` writes only the delta since the last
    successful save; a delta of messages alone locks the row instead of
    updating it (see :mod:`outlast_postgres.statements`). ``save`` and
    ``renew`` return the run's ``cancel_requested`` as their own statement
    left it. After ``wait`` parks the run (``waiting``) every write is
    refused: it is not running.
    """

    def __init__(
        self,
        database: Database,
        *,
        namespace: str,
        run_id: str,
        epoch: int,
        incarnation: str,
        cursor: SaveCursor,
    ) -> None:
        self._database = database
        self._namespace = namespace
        self._run_id = run_id
        self._epoch = epoch
        self._incarnation = incarnation
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

    async def save(self, state: CheckpointState) -> bool:
        delta = self._cursor.delta(state)
        statements = self._database.statements
        messages = records.encode_messages(delta.messages)
        params: dict[str, Any] = {"segment": delta.segment, "first_message": delta.first_message}
        if delta.phases:
            cancel_requested = await self._fenced(
                statements.save,
                "saving",
                messages=messages,
                first_phase=delta.first_phase,
                phases=records.encode_phases(delta.phases),
                **params,
            )
        elif messages:
            cancel_requested = await self._append(messages, params)
        else:  # nothing new: only updated_at moves, which the row's update does
            cancel_requested = await self._fenced(
                statements.save_messages, "saving", messages=messages, **params
            )
        # Only now is the delta durable; a failed save is retried, with more, by the next.
        self._cursor = delta.after
        return cancel_requested

    async def complete(self, result: JSON, usage: JSON = None) -> None:
        encoded = records.encode_json(result)
        encoded_usage = records.encode_optional_json(usage)
        await self._fenced(
            self._database.statements.complete,
            "completing",
            result=encoded,
            usage=encoded_usage,
        )

    async def fail(self, error: str) -> None:
        # A JSON string, so any text (NUL, lone surrogates) round-trips exactly.
        encoded = records.encode_json(error)
        await self._fenced(self._database.statements.fail, "failing", error=encoded)

    async def release(self) -> None:
        await self._fenced(self._database.statements.release, "releasing")

    async def renew(self) -> bool:
        return await self._fenced(self._database.statements.renew, "renewing the lease of")

    async def wait(self, request: JSON, timeout: float | None) -> None:
        encoded = records.encode_json(request)
        await self._fenced(
            self._database.statements.wait,
            "parking",
            wait=encoded,
            timeout=None if timeout is None else float(timeout),
        )

    async def _append(self, messages: list[str], params: dict[str, Any]) -> bool:
        """Append ``messages`` locking the run's row (statements._APPEND). When
        that finds the run not owned or released, or the positions taken (by a
        save that committed unheard), the general save decides."""
        statements = self._database.statements
        appended = self._fence(dict(params))
        if len(messages) == 1:
            statement, appended["body"] = statements.append_one, messages[0]
        else:
            statement, appended["messages"] = statements.append_many, messages
        async with self._database.connection(f"saving run {self._run_id!r}") as conn:
            try:
                cursor = await conn.execute(statement, appended)
                row = await cursor.fetchone()
            except UniqueViolation:
                row = None
        if row is not None and row[0]:
            return bool(row[1])
        return await self._fenced(statements.save_messages, "saving", messages=messages, **params)

    async def _fenced(self, statement: bytes, verb: str, **params: Any) -> bool:
        """Run the fenced write ``statement``; the run's ``cancel_requested``
        after it, or LeaseLost saying why it was refused."""
        self._fence(params)
        action = f"{verb} run {self._run_id!r}"
        async with self._database.connection(action) as conn:
            cursor = await conn.execute(statement, params)
            row = await cursor.fetchone() or (0, None, None, None, None)
            if row[0]:
                return bool(row[1])
            detail = self._refusal(row[2:])
            if detail is None:
                # The row changed between the statement's snapshot and the
                # update's row lock (a claim or delete committed meanwhile):
                # only the committed row can tell how. Never on the owned path.
                cursor = await conn.execute(self._database.statements.ownership, params)
                detail = self._refusal(await cursor.fetchone() or (None, None, None))
        raise LeaseLost(self._run_id, self._epoch, detail or "")

    def _fence(self, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` with the fence every write is conditioned on (whose run,
        which incarnation, which epoch), added in place."""
        params.update(
            namespace=self._namespace,
            run_id=self._run_id,
            epoch=self._epoch,
            incarnation=self._incarnation,
        )
        return params

    def _refusal(self, seen: tuple[Any, ...]) -> str | None:
        """Why the row ``(status, epoch, incarnation)`` (all None: no row) is
        not this checkpointer's, in ``transitions.owned``'s words and order;
        None when it looks owned."""
        status, epoch, incarnation = seen
        if status is None:
            return "the run was deleted"
        if incarnation != self._incarnation:
            return "the run was deleted and begun again"
        if epoch != self._epoch:
            return f"epoch {epoch} owns it now"
        if status != "running":
            return f"the run is {status}"
        return None
