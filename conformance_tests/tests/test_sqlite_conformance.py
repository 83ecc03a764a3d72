"""The conformance suite against the core ``sqlite:///`` store (a file per test)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

import outlast
from outlast import CheckpointerFactory
from outlast.stores.sqlite import SqliteStore
from outlast_conformance import Capabilities, ConformanceSuite


class TestSqliteConformance(ConformanceSuite):
    capabilities = Capabilities()

    @pytest.fixture
    def database(self, tmp_path: Path) -> Path:
        return tmp_path / "runs.db"

    @pytest_asyncio.fixture
    async def factory(self, database: Path) -> AsyncIterator[CheckpointerFactory]:
        store = outlast.open(f"sqlite:///{database}")
        yield store
        await store.close()

    async def reopen(self, factory: CheckpointerFactory) -> CheckpointerFactory:
        assert isinstance(factory, SqliteStore)
        return outlast.open(f"sqlite:///{factory.path}")

    async def corrupt(self, factory: CheckpointerFactory, run_id: str, namespace: str) -> None:
        assert isinstance(factory, SqliteStore)
        await factory.corrupt(run_id, namespace)
