"""The PostgreSQL CheckpointerFactory: a connection pool, the schema, the runs.

Opening a store never connects. The first operation connects once directly
(so a wrong password, a missing database or an unreachable host surfaces as a
clear :class:`~outlast.errors.StoreUnavailable` within ``connect_timeout``),
brings the schema up to date, then opens the pool.

Round trips per operation (counted in the tests): begin, save, complete,
fail, release, renew, load, interrupted, list, delete and purge take one;
claim and claim_next take two (the claim and the read of the claimed
progress, pipelined; then the commit), whatever the transcript's length.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from outlast import codec
from outlast.delta import SaveCursor
from outlast.errors import CorruptCheckpoint, RunExists, StoreError
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
from outlast_postgres import records, schema
from outlast_postgres.checkpointer import PostgresCheckpointer
from outlast_postgres.config import PostgresConfig, parse
from outlast_postgres.errors import translate
from outlast_postgres.statements import Statements

log = logging.getLogger("outlast_postgres")

Pool = AsyncConnectionPool[AsyncConnection[TupleRow]]


class PostgresStore:
    """A CheckpointerFactory on PostgreSQL (psycopg 3, async, pooled).

    ``PostgresStore("postgresql://user:pw@host/db", schema="outlast")`` or
    ``outlast.open(url)``. Options: see :data:`outlast_postgres.config.OPTIONS`.
    ``PostgresStore(other.config)`` opens another store on the same database
    and schema (as another process would).
    """

    def __init__(self, url: str | PostgresConfig, **options: Any) -> None:
        if isinstance(url, PostgresConfig):
            if options:
                raise TypeError("options go into the PostgresConfig, not next to it")
            self._config = url
        else:
            self._config = parse(url, options)
        self.statements = Statements.for_schema(self._config.schema)
        self._pool: Pool | None = None
        self._opening = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"PostgresStore({self._config.redacted_url!r}, schema={self._config.schema!r})"

    @property
    def config(self) -> PostgresConfig:
        return self._config

    @property
    def schema(self) -> str:
        return self._config.schema

    # -- connections -------------------------------------------------------

    @asynccontextmanager
    async def connection(self, action: str) -> AsyncIterator[AsyncConnection[TupleRow]]:
        """A pooled autocommit connection; psycopg errors leave as outlast errors.

        ``action`` ("saving run 'x'") starts the message of any error.
        """
        try:
            pool = await self._ready()
            async with pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            raise translate(exc, action, self._config) from exc

    async def _ready(self) -> Pool:
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._closed:
                raise StoreError(f"{self!r} was closed; open a new store")
            if self._pool is None:
                await self._migrate_directly()
                pool: Pool = AsyncConnectionPool(
                    self._config.conninfo,
                    kwargs=self._config.connect_kwargs(),
                    min_size=self._config.pool_min_size,
                    max_size=self._config.pool_max_size,
                    timeout=self._config.pool_timeout,
                    name=f"outlast:{self._config.schema}",
                    open=False,
                )
                try:
                    await pool.open(wait=True, timeout=self._config.connect_timeout)
                except BaseException:
                    await pool.close()
                    raise
                self._pool = pool
        return self._pool

    async def _migrate_directly(self) -> int:
        # A direct connection, not the pool: it raises libpq's own error (bad
        # password, no such database) instead of retrying until a pool timeout.
        conn = await AsyncConnection.connect(self._config.conninfo, **self._config.connect_kwargs())
        async with conn:
            return await schema.migrate(conn, self._config.schema)

    async def migrate(self) -> None:
        """Create or upgrade the schema (idempotent; safe from many processes at once).

        Also runs on first use; ``outlast migrate URL`` calls this.
        """
        async with self.connection("migrating the schema") as conn:
            await schema.migrate(conn, self._config.schema)

    async def close(self) -> None:
        """Close the pool; the store is unusable afterwards. Idempotent."""
        async with self._opening:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    # -- CheckpointerFactory -----------------------------------------------

    async def begin(self, start: RunStart) -> PostgresCheckpointer:
        validate_start(start)
        params = {
            "namespace": start.namespace,
            "run_id": start.run_id,
            "kind": start.kind,
            "input": records.encode_json(start.input),
            "owner": start.owner,
            "lease": float(start.lease),
            "version": codec.FORMAT_VERSION,
        }
        async with self.connection(f"beginning run {start.run_id!r}") as conn:
            cursor = await conn.execute(self.statements.begin, params)
            created = await cursor.fetchone()
        if created is None:
            raise RunExists(start.run_id, start.namespace)
        return PostgresCheckpointer(self, start.namespace, start.run_id, 1, SaveCursor())

    async def interrupted(
        self, namespace: str = DEFAULT_NAMESPACE, limit: int = 100
    ) -> list[RunRecord]:
        params = {"namespace": namespace, "limit": max(0, limit), "version": codec.FORMAT_VERSION}
        async with self.connection(f"listing interrupted runs of {namespace!r}") as conn:
            cursor = await conn.execute(self.statements.interrupted, params)
            rows = await cursor.fetchall()
        return _readable(rows)

    async def claim(
        self,
        run_id: str,
        *,
        owner: str,
        lease: float,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> Claim | None:
        validate_lease(lease)
        params = {"namespace": namespace, "run_id": run_id, "owner": owner, "lease": float(lease)}
        async with self.connection(f"claiming run {run_id!r}") as conn, conn.pipeline():
            # One flush: BEGIN, the conditional UPDATE and the read of the claimed
            # progress go out together and come back together.
            await conn.execute("BEGIN")
            claimed = await conn.execute(self.statements.claim, params)
            progress = await conn.execute(self.statements.claimed_one, params)
            bodies = await progress.fetchone()
            row = await claimed.fetchone()
            # Decode before COMMIT: a corrupt run raises, the connection rolls
            # the claim back and the run stays as it was.
            found = None if row is None else records.record_from_row(row)
            if found is not None and bodies is None:
                raise StoreError(f"run {run_id!r}: claimed but its progress could not be read")
            state = CheckpointState() if bodies is None else _state(run_id, bodies)
            await conn.execute("COMMIT")
        if found is None:
            return None
        return self._claim(found, state)

    async def claim_next(
        self,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        owner: str,
        lease: float,
        limit: int = 1,
    ) -> list[Claim]:
        """Claim up to ``limit`` interrupted runs at once, oldest lease first.

        Batch recovery for worker loops: rows another worker is claiming at
        the same moment are skipped (``FOR UPDATE SKIP LOCKED``), so concurrent
        workers get disjoint batches and never wait on each other. Runs whose
        progress does not parse are logged and left unclaimed.
        """
        validate_lease(lease)
        skip: list[str] = []
        # Terminates: a retry happens only when the batch held a corrupt run,
        # and every retry skips at least one more of the finitely many.
        while True:
            claims, corrupt = await self._claim_batch(namespace, owner, lease, limit, skip)
            if not corrupt:
                return claims
            skip.extend(corrupt)

    async def _claim_batch(
        self, namespace: str, owner: str, lease: float, limit: int, skip: list[str]
    ) -> tuple[list[Claim], list[str]]:
        params = {
            "namespace": namespace,
            "owner": owner,
            "lease": float(lease),
            "limit": max(0, limit),
            "skip": skip,
            "version": codec.FORMAT_VERSION,
        }
        claims: list[Claim] = []
        corrupt: list[str] = []
        async with (
            self.connection(f"claiming interrupted runs of {namespace!r}") as conn,
            conn.pipeline(),
        ):
            await conn.execute("BEGIN")
            claimed = await conn.execute(self.statements.claim_next, params)
            progress = await conn.execute(self.statements.claimed, params)
            bodies = {row[0]: row for row in await progress.fetchall()}
            for row in await claimed.fetchall():
                try:
                    record = records.record_from_row(row)
                    state = _state(record.run_id, bodies.get(record.run_id))
                except CorruptCheckpoint as exc:
                    log.warning("skipping run %r in claim_next: %s", row[0], exc)
                    corrupt.append(row[0])
                else:
                    claims.append(self._claim(record, state))
            # A corrupt run undoes the whole batch; the caller retries without it.
            await conn.execute("ROLLBACK" if corrupt else "COMMIT")
        return ([] if corrupt else claims), corrupt

    async def load(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> StoredRun | None:
        params = {"namespace": namespace, "run_id": run_id}
        async with self.connection(f"loading run {run_id!r}") as conn:
            cursor = await conn.execute(self.statements.load, params)
            row = await cursor.fetchone()
        if row is None:
            return None
        record = records.record_from_row(row)
        n = records.RUN_COLUMN_COUNT
        return StoredRun(record, records.state_from_bodies(run_id, row[n], row[n + 1]))

    async def list(
        self,
        namespace: str = DEFAULT_NAMESPACE,
        status: RunStatus | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> RunPage:
        limit = max(0, limit)
        statement = self.statements.listing(status=status is not None, cursor=cursor is not None)
        params = {
            "namespace": namespace,
            "version": codec.FORMAT_VERSION,
            "status": None if status is None else str(status),
            "cursor": cursor,
            # One more than asked: whether it exists says if there is a next page.
            "limit": limit + 1,
        }
        async with self.connection(f"listing runs of {namespace!r}") as conn:
            result = await conn.execute(statement, params)
            rows = await result.fetchall()
        more = len(rows) > limit
        page = tuple(_readable(rows[:limit]))
        return RunPage(page, rows[limit - 1][0] if more and limit else None)

    async def delete(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> bool:
        params = {"namespace": namespace, "run_id": run_id}
        async with self.connection(f"deleting run {run_id!r}") as conn:
            # Two statements (see statements._DELETE_PROGRESS), one transaction,
            # one flush: the results are read once the pipeline is synced.
            async with conn.pipeline():
                await conn.execute("BEGIN")
                deleted = await conn.execute(self.statements.delete_run, params)
                await conn.execute(self.statements.delete_progress, params)
                await conn.execute("COMMIT")
            found = await deleted.fetchone()
        return found is not None

    async def purge(self, older_than: float, namespace: str = DEFAULT_NAMESPACE) -> int:
        params = {"namespace": namespace, "older_than": float(older_than)}
        async with self.connection(f"purging old runs of {namespace!r}") as conn:
            cursor = await conn.execute(self.statements.purge, params)
            row = await cursor.fetchone()
        return int(row[0]) if row is not None else 0

    def _claim(self, record: RunRecord, state: CheckpointState) -> Claim:
        cursor = SaveCursor(phases=len(state.phases), messages=len(state.history))
        checkpointer = PostgresCheckpointer(
            self, record.namespace, record.run_id, record.epoch, cursor
        )
        return Claim(checkpointer, ResumeState(state.history, state.phases), record)


def _state(run_id: str, bodies: TupleRow | None) -> CheckpointState:
    """The progress in a row of ``statements._CLAIMED`` (run_id, phases, messages)."""
    if bodies is None:
        return CheckpointState()
    return records.state_from_bodies(run_id, bodies[1], bodies[2])


def _readable(rows: Sequence[TupleRow]) -> list[RunRecord]:
    """The records of ``rows`` that parse; the others are logged and skipped."""
    found: list[RunRecord] = []
    for row in rows:
        try:
            found.append(records.record_from_row(row))
        except CorruptCheckpoint as exc:
            log.warning("skipping unreadable run %r: %s", row[0], exc)
    return found
