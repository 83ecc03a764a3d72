"""The whole conformance suite against the real PostgreSQL server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from postgres_support import with_options
from psycopg import sql

import outlast
from outlast import CheckpointerFactory
from outlast_conformance import Capabilities, ConformanceSuite
from outlast_postgres import PostgresStore


class TestPostgresConformance(ConformanceSuite):
    # Leases are judged by the server's clock (now()), in microseconds.
    capabilities = Capabilities()

    @pytest_asyncio.fixture
    async def factory(
        self, postgres_url: str, session_schema: str
    ) -> AsyncIterator[CheckpointerFactory]:
        store = outlast.open(with_options(postgres_url, schema=session_schema))
        yield store
        await store.close()

    async def reopen(self, factory: CheckpointerFactory) -> CheckpointerFactory:
        assert isinstance(factory, PostgresStore)
        return PostgresStore(factory.config)

    async def corrupt(self, factory: CheckpointerFactory, run_id: str, namespace: str) -> None:
        """Append a message that is not JSON to the run's current transcript segment."""
        assert isinstance(factory, PostgresStore)
        tables = {name: sql.Identifier(factory.schema, name) for name in ("messages", "phases")}
        statement = sql.SQL(
            """
            WITH seg AS (SELECT count(*)::int AS n FROM {phases}
                         WHERE namespace = %(ns)s AND run_id = %(id)s)
            INSERT INTO {messages} (namespace, run_id, segment, seq, body)
            SELECT %(ns)s, %(id)s, seg.n,
                   coalesce((SELECT max(seq) + 1 FROM {messages}
                             WHERE namespace = %(ns)s AND run_id = %(id)s AND segment = seg.n), 0),
                   '{{not json'
            FROM seg
            """
        ).format(**tables)
        async with factory.connection("corrupting a run for a test") as conn:
            await conn.execute(statement, {"ns": namespace, "id": run_id})
