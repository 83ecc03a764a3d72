"""The whole conformance suite against the S3 store on moto (real HTTP)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

import outlast
from outlast import CheckpointerFactory
from outlast_conformance import Capabilities, ConformanceSuite
from outlast_s3 import S3Store


class TestS3Conformance(ConformanceSuite):
    # Lease expiry is judged by this process's clock, so short leases are fine.
    capabilities = Capabilities()

    @pytest_asyncio.fixture
    async def factory(self, s3_url: str) -> AsyncIterator[CheckpointerFactory]:
        store = outlast.open(s3_url)
        yield store
        await store.close()

    async def reopen(self, factory: CheckpointerFactory) -> CheckpointerFactory:
        assert isinstance(factory, S3Store)
        return S3Store(factory.options)

    async def corrupt(self, factory: CheckpointerFactory, run_id: str, namespace: str) -> None:
        assert isinstance(factory, S3Store)
        await factory.corrupt(run_id, namespace)
