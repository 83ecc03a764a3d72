"""The base every suite class builds on: what an adapter must provide.

An adapter's test class overrides five things (see :class:`StoreFixtures`);
the suite's tests only ever reach the store through them, plus the fixtures
defined here (a unique namespace per test, and reopened factories that are
closed after the test).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar

import pytest
import pytest_asyncio

from outlast.adapter import CheckpointerFactory
from outlast_conformance.capabilities import Capabilities
from outlast_conformance.support import unique

Reopen = Callable[[], Awaitable[CheckpointerFactory]]
"""Opens a brand-new factory on the test's storage; the suite closes it."""


class StoreFixtures:
    """What an adapter provides: ``factory``, ``reopen``, ``url``,
    ``corrupt_record`` and ``corrupt_message``.

    * ``factory`` (a pytest-asyncio fixture): yield a fresh factory on storage
      whose test namespaces are empty, and clean up afterwards. The suite
      uses unique namespaces and run ids in every test, so one database or
      Redis shared by all tests is fine.
    * ``reopen(factory)``: a brand-new factory on the same storage, as a new
      process would open it (durability and cross-factory races).
    * ``url(factory)``: the URL another OS process passes to
      ``outlast.open`` to reach the same storage (multi-process races; the
      adapter must be installed, so its entry point is found there).
    * ``corrupt_record(factory, run_id, namespace)``: damage the run's
      record (not its transcript) in the store's own storage so it no longer
      parses: ``load`` raises CorruptCheckpoint, listings skip it, and
      ``interrupted`` quarantines it.
    * ``corrupt_message(factory, run_id, namespace)``: damage the stored
      text of the FIRST message of the run's current transcript in place, so
      ``load`` and ``claim`` raise CorruptCheckpoint; a later save must not
      repair it (a save writes only the delta).

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

    def url(self, factory: CheckpointerFactory) -> str:
        """The URL another OS process opens (``outlast.open``) to reach ``factory``'s storage."""
        raise NotImplementedError(
            f"{type(self).__name__} must define `def url(self, factory)` returning the URL "
            "(with every option) that another process passes to outlast.open to reach the "
            "same storage, or declare Capabilities(multi_process=False)"
        )

    async def corrupt_record(
        self, factory: CheckpointerFactory, run_id: str, namespace: str
    ) -> None:
        """Damage the run's record so it no longer parses (its transcript stays intact)."""
        raise NotImplementedError(
            f"{type(self).__name__} must define `async def corrupt_record(self, factory, "
            "run_id, namespace)` that damages the run's RECORD in your storage (for example "
            "writes invalid JSON into its input) so load() raises CorruptCheckpoint"
        )

    async def corrupt_message(
        self, factory: CheckpointerFactory, run_id: str, namespace: str
    ) -> None:
        """Damage, in place, the stored first message of the run's current transcript."""
        raise NotImplementedError(
            f"{type(self).__name__} must define `async def corrupt_message(self, factory, "
            "run_id, namespace)` that overwrites the stored text of the FIRST message of the "
            "run's current transcript with something that does not parse"
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
