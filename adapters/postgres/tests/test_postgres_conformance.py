"""The whole conformance suite against the real PostgreSQL server.

Every test shares the session's schema (the suite uses unique namespaces and
run ids); racer processes reach it through :func:`postgres_support.url_of`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from postgres_support import corrupt_message, corrupt_record, postgres_store, url_of, with_options

import outlast
from outlast.adapter import CheckpointerFactory
from outlast_conformance import Capabilities, ConformanceSuite


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
        return outlast.open(self.url(factory))

    def url(self, factory: CheckpointerFactory) -> str:
        return url_of(postgres_store(factory))

    async def corrupt_record(
        self, factory: CheckpointerFactory, run_id: str, namespace: str
    ) -> None:
        await corrupt_record(postgres_store(factory), run_id, namespace)

    async def corrupt_message(
        self, factory: CheckpointerFactory, run_id: str, namespace: str
    ) -> None:
        await corrupt_message(postgres_store(factory), run_id, namespace)
