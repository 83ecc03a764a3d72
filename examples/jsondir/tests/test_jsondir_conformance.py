"""outlast-jsondir passes the outlast conformance suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

import outlast
from outlast import CheckpointerFactory
from outlast_conformance import Capabilities, ConformanceSuite
from outlast_jsondir import JsonDirStore


class TestJsonDirConformance(ConformanceSuite):
    capabilities = Capabilities()

    @pytest_asyncio.fixture
    async def factory(self, tmp_path: Path) -> AsyncIterator[CheckpointerFactory]:
        # Through outlast.open: the entry point and the URL scheme are tested too.
        store = outlast.open(f"jsondir:///{tmp_path / 'runs'}")
        assert isinstance(store, JsonDirStore)
        yield store
        await store.close()

    async def reopen(self, factory: CheckpointerFactory) -> CheckpointerFactory:
        assert isinstance(factory, JsonDirStore)
        return outlast.open(f"jsondir:///{factory.root}")

    async def corrupt(self, factory: CheckpointerFactory, run_id: str, namespace: str) -> None:
        assert isinstance(factory, JsonDirStore)
        await factory.corrupt(run_id, namespace)
