"""The whole conformance suite against the S3 store on moto (real HTTP).

The racer processes of the multi-process tests open ``url()`` and take their
credentials from the environment the session fixture set, which they inherit.
The damage the suite asks for is done by s3_testing, on the bucket's objects.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from s3_testing import corrupt_message, corrupt_record, s3_store, url_of

import outlast
from outlast.adapter import CheckpointerFactory
from outlast_conformance import Capabilities, ConformanceSuite


class TestS3Conformance(ConformanceSuite):
    # Lease expiry is judged by this process's clock, so short leases are fine.
    # The waits get 30 s instead of 10: moto answers one request at a time,
    # from this test process, and eight processes draining a queue each read
    # every queued run's state per claim_next (adapters/s3/README.md), some
    # thousands of requests that took 12-18 s here (moto 5.2.5).
    capabilities = Capabilities(wait_timeout=30.0)

    @pytest_asyncio.fixture
    async def factory(self, s3_url: str) -> AsyncIterator[CheckpointerFactory]:
        store = outlast.open(s3_url)
        yield store
        await store.close()

    async def reopen(self, factory: CheckpointerFactory) -> CheckpointerFactory:
        return outlast.open(self.url(factory))

    def url(self, factory: CheckpointerFactory) -> str:
        return url_of(s3_store(factory))

    async def corrupt_record(
        self, factory: CheckpointerFactory, run_id: str, namespace: str
    ) -> None:
        await corrupt_record(s3_store(factory), run_id, namespace)

    async def corrupt_message(
        self, factory: CheckpointerFactory, run_id: str, namespace: str
    ) -> None:
        await corrupt_message(s3_store(factory), run_id, namespace)
