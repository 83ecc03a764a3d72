"""One store's database: its configuration, statements and connection pool.

Shared by the :class:`~outlast_postgres.store.PostgresStore` and every
checkpointer it hands out, so a checkpointer needs nothing private of the
store. Opening never connects. The first use connects once directly (so a
wrong password, a missing database or an unreachable host surfaces as a clear
:class:`~outlast.errors.StoreUnavailable` within ``connect_timeout``), brings
the schema up to date, then opens the pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from outlast.adapter import StoreError
from outlast_postgres import schema
from outlast_postgres.config import PostgresConfig
from outlast_postgres.errors import translate
from outlast_postgres.statements import Statements

log = logging.getLogger("outlast_postgres")

Pool = AsyncConnectionPool[AsyncConnection[TupleRow]]


class Database:
    """The pool, and the statements composed for the configured schema."""

    def __init__(self, config: PostgresConfig) -> None:
        self.config = config
        self.statements = Statements.for_schema(config.schema)
        self._pool: Pool | None = None
        self._opening = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"Database({self.config.redacted_url!r}, schema={self.config.schema!r})"

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
            raise translate(exc, action, self.config) from exc

    async def migrate(self) -> None:
        """Create or upgrade the schema (idempotent; safe from many processes at once)."""
        async with self.connection("migrating the schema") as conn:
            await schema.migrate(conn, self.config.schema)

    async def close(self) -> None:
        """Close the pool; the database is unusable afterwards. Idempotent."""
        async with self._opening:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _ready(self) -> Pool:
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._closed:
                raise StoreError(
                    f"the store at {self.config.redacted_url} was closed; open a new store"
                )
            if self._pool is None:
                await self._migrate_directly()
                pool: Pool = AsyncConnectionPool(
                    self.config.conninfo,
                    kwargs=self.config.connect_kwargs(),
                    min_size=self.config.pool_min_size,
                    max_size=self.config.pool_max_size,
                    timeout=self.config.pool_timeout,
                    name=f"outlast:{self.config.schema}",
                    open=False,
                )
                try:
                    await pool.open(wait=True, timeout=self.config.connect_timeout)
                except BaseException:
                    await pool.close()
                    raise
                self._pool = pool
                if psycopg.pq.__impl__ == "python":
                    log.info(
                        "psycopg runs in pure Python here; outlast-postgres[binary] (or [c]) "
                        "installs its compiled build, which loads and claims long runs faster"
                    )
        return self._pool

    async def _migrate_directly(self) -> int:
        # A direct connection, not the pool: it raises libpq's own error (bad
        # password, no such database) instead of retrying until a pool timeout.
        conn = await AsyncConnection.connect(self.config.conninfo, **self.config.connect_kwargs())
        async with conn:
            return await schema.migrate(conn, self.config.schema)
