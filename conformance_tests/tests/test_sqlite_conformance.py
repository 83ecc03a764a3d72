"""The conformance suite against the core ``sqlite:///`` store (a file per test).

The damage the suite asks for is done the way a third party would: with the
stdlib's sqlite3 on the file, outside the store.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest
import pytest_asyncio

import outlast
from outlast.adapter import CheckpointerFactory
from outlast.stores.sqlite import SqliteStore
from outlast_conformance import Capabilities, ConformanceSuite


def path_of(factory: CheckpointerFactory) -> Path:
    backend = factory.backend if isinstance(factory, outlast.Store) else factory
    assert isinstance(backend, SqliteStore)
    return backend.path


def damage(path: Path, statement: str, params: tuple[str, ...]) -> None:
    with closing(sqlite3.connect(path, timeout=10, isolation_level=None)) as conn:
        changed = conn.execute(statement, params).rowcount
    assert changed == 1, f"{statement!r} changed {changed} rows"


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
        return outlast.open(self.url(factory))

    def url(self, factory: CheckpointerFactory) -> str:
        return f"sqlite:///{path_of(factory)}"

    async def corrupt_record(
        self, factory: CheckpointerFactory, run_id: str, namespace: str
    ) -> None:
        damage(
            path_of(factory),
            "UPDATE runs SET input = '{not json' WHERE namespace = ? AND run_id = ?",
            (namespace, run_id),
        )

    async def corrupt_message(
        self, factory: CheckpointerFactory, run_id: str, namespace: str
    ) -> None:
        damage(
            path_of(factory),
            "UPDATE messages SET body = '{not json' WHERE namespace = ? AND run_id = ? AND seq = 0 "
            "AND segment = (SELECT COUNT(*) FROM phases WHERE namespace = ? AND run_id = ?)",
            (namespace, run_id, namespace, run_id),
        )
