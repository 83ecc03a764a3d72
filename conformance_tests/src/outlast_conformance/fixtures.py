"""The base every suite class builds on: what an adapter must provide.

An adapter's test class overrides three things (see :class:`StoreFixtures`);
the suite's tests only ever reach the store through them, plus the fixtures
defined here (a unique namespace per test, and reopened factories that are
closed after the test).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar

import pytest
import pytest_asyncio

from outlast import CheckpointerFactory
from outlast_conformance.capabilities import Capabilities
from outlast_conformance.support import unique

Reopen = Callable[[], Awaitable[CheckpointerFactory]]
"""Opens a brand-new factory on the test's storage; the suite closes it."""


class StoreFixtures:
    """What an adapter provides: ``factory``, ``reopen`` and ``corrupt``.

    * ``factory`` (a pytest-asyncio fixture): yield a fresh factory on storage
      whose test namespaces are empty, and clean up afterwards. The suite
      uses unique namespaces and run ids in every test, so one database or
      Redis shared by all tests is fine.
    * ``reopen(factory)``: a brand-new factory on the same storage, as a new
      process would open it (durability and cross-factory races).
    * ``corrupt(factory, run_id, namespace)``: damage the run's stored record
      in the store's own storage so that ``load`` and ``claim`` raise
      CorruptCheckpoint.

    ``capabilities`` declares optional features and known gaps.
    """

    capabilities: ClassVar[Capabilities] = Capabilities()

    @pytest_asyncio.fixture
    async def factory(self, *args: Any, **kwargs: Any) -> AsyncIterator[CheckpointerFactory]:
        """The store under test. Override this fixture in your test class.

        The override may take any fixtures it needs (``tmp_path``, a service
        URL...); this signature only keeps type checkers happy with that.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must define an async `factory` fixture "
            "(@pytest_asyncio.fixture) that yields a fresh CheckpointerFactory of your "
            "store and closes it afterwards; see docs/writing-an-adapter.md"
        )
        yield  # type: ignore[unreachable]  # makes this an async generator, like the overrides

    async def reopen(self, factory: CheckpointerFactory) -> CheckpointerFactory:
        """A brand-new factory on the same storage as ``factory``; the suite closes it."""
        raise NotImplementedError(
            f"{type(self).__name__} must define `async def reopen(self, factory)` returning "
            "a NEW CheckpointerFactory on the same storage (as another process would open it)"
        )

    async def corrupt(self, factory: CheckpointerFactory, run_id: str, namespace: str) -> None:
        """Damage the run's stored record so ``load``/``claim`` raise CorruptCheckpoint."""
        raise NotImplementedError(
            f"{type(self).__name__} must define `async def corrupt(self, factory, run_id, "
            "namespace)` that damages the run's stored record in your storage (for example "
            "writes invalid JSON into its transcript) so load() raises CorruptCheckpoint"
        )

    @pytest.fixture
    def namespace(self) -> str:
        """A namespace no other test uses."""
        return unique("ns")

    @pytest_asyncio.fixture
    async def reopened(self, factory: CheckpointerFactory) -> AsyncIterator[Reopen]:
        """Call to get a brand-new factory on the test's storage; closed after the test."""
        opened: list[CheckpointerFactory] = []

        async def open_again() -> CheckpointerFactory:
            fresh = await self.reopen(factory)
            opened.append(fresh)
            return fresh

        yield open_again
        for fresh in reversed(opened):
            await fresh.close()
