"""The conformance suite against the in-process ``memory://`` store.

Each test gets its own named store (``memory://<uuid>``), so ``reopen()`` is a
brand-new factory on the same data, as a durable store's would be.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest_asyncio

import outlast
from outlast import CheckpointerFactory
from outlast.stores.memory import MemoryStore
from outlast_conformance import Capabilities, ConformanceSuite


class TestMemoryConformance(ConformanceSuite):
    capabilities = Capabilities()

    @pytest_asyncio.fixture
    async def factory(self) -> AsyncIterator[CheckpointerFactory]:
        store = outlast.open(f"memory://conformance-{uuid.uuid4().hex}")
        yield store
        await store.close()

    async def reopen(self, factory: CheckpointerFactory) -> CheckpointerFactory:
        assert isinstance(factory, MemoryStore)
        return outlast.open(f"memory://{factory.name}")

    async def corrupt(self, factory: CheckpointerFactory, run_id: str, namespace: str) -> None:
        assert isinstance(factory, MemoryStore)
        factory.corrupt(run_id, namespace)
