"""The whole conformance suite against Redis, and against a Redis Cluster."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest_asyncio
from redis_testing import corrupt_message, corrupt_record, redis_store, url_of

import outlast
from outlast.adapter import CheckpointerFactory
from outlast_conformance import Capabilities, ConformanceSuite


class _RedisSuite(ConformanceSuite):
    # Leases are judged by the server's clock in milliseconds: short leases are fine.
    capabilities = Capabilities()

    async def reopen(self, factory: CheckpointerFactory) -> CheckpointerFactory:
        return outlast.open(self.url(factory))

    def url(self, factory: CheckpointerFactory) -> str:
        return url_of(redis_store(factory))

    async def corrupt_record(
        self, factory: CheckpointerFactory, run_id: str, namespace: str
    ) -> None:
        await corrupt_record(redis_store(factory), run_id, namespace)

    async def corrupt_message(
        self, factory: CheckpointerFactory, run_id: str, namespace: str
    ) -> None:
        await corrupt_message(redis_store(factory), run_id, namespace)


class TestRedisConformance(_RedisSuite):
    @pytest_asyncio.fixture
    async def factory(
        self, redis_url: str, session_prefix: str
    ) -> AsyncIterator[CheckpointerFactory]:
        store = outlast.open(redis_url, prefix=session_prefix)
        yield store
        await store.close()


class TestRedisClusterConformance(_RedisSuite):
    @pytest_asyncio.fixture
    async def factory(self, cluster_url: str) -> AsyncIterator[CheckpointerFactory]:
        store = outlast.open(cluster_url, cluster=True, prefix=f"c{uuid.uuid4().hex[:8]}")
        yield store
        await store.close()
