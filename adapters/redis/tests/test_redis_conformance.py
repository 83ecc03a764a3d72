"""The whole conformance suite against Redis, and against a Redis Cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

import outlast
from outlast import CheckpointerFactory
from outlast_conformance import Capabilities, ConformanceSuite
from outlast_redis import RedisStore


class _RedisSuite(ConformanceSuite):
    # Leases are judged by the server's clock in milliseconds: short leases are fine.
    capabilities = Capabilities()

    async def reopen(self, factory: CheckpointerFactory) -> CheckpointerFactory:
        assert isinstance(factory, RedisStore)
        return RedisStore(factory.config)

    async def corrupt(self, factory: CheckpointerFactory, run_id: str, namespace: str) -> None:
        assert isinstance(factory, RedisStore)
        await factory.corrupt(run_id, namespace)


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
        store = outlast.open(cluster_url, cluster=True)
        yield store
        await store.close()
