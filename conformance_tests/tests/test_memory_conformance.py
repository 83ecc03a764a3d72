"""The conformance suite against the in-process ``memory://`` store.

Each test gets its own named store (``memory://<uuid>``), so ``reopen()`` is a
brand-new factory on the same data, as a durable store's would be. It lives in
one process, so it declares ``multi_process=False``: the suite's tests that
race OS processes run as strict xfails.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest_asyncio

import outlast
from outlast.adapter import CheckpointerFactory
from outlast.stores.memory import MemoryStore
from outlast_conformance import Capabilities, ConformanceSuite


def memory_of(factory: CheckpointerFactory) -> MemoryStore:
    backend = factory.backend if isinstance(factory, outlast.Store) else factory
    assert isinstance(backend, MemoryStore)
    return backend


class TestMemoryConformance(ConformanceSuite):
    capabilities = Capabilities(multi_process=False)

    @pytest_asyncio.fixture
    async def factory(self) -> AsyncIterator[CheckpointerFactory]:
        store = outlast.open(f"memory://conformance-{uuid.uuid4().hex}")
        yield store
        await store.close()

    async def reopen(self, factory: CheckpointerFactory) -> CheckpointerFactory:
        return outlast.open(f"memory://{memory_of(factory).name}")

    async def corrupt_record(
        self, factory: CheckpointerFactory, run_id: str, namespace: str
    ) -> None:
        memory_of(factory).space.runs[(namespace, run_id)].record = "{not json"

    async def corrupt_message(
        self, factory: CheckpointerFactory, run_id: str, namespace: str
    ) -> None:
        run = memory_of(factory).space.runs[(namespace, run_id)]
        run.segments[len(run.phases)][0] = "{not json"
