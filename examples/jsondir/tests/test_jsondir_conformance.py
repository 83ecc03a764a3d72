"""outlast-jsondir passes the outlast conformance suite.

The damage the suite asks for is done here, in the tests, on the files
themselves (the store has no method to break itself), under the store's lock
so no operation of the store sees a half-done change.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

import outlast
from outlast.adapter import CheckpointerFactory
from outlast_conformance import Capabilities, ConformanceSuite
from outlast_jsondir import JsonDirStore, RunFiles
from outlast_jsondir.files import write_atomically
from outlast_jsondir.runfiles import RUN_FILE


def files_of(factory: CheckpointerFactory) -> RunFiles:
    """The run files behind ``outlast.open``'s store front."""
    backend = factory.backend if isinstance(factory, outlast.Store) else factory
    assert isinstance(backend, JsonDirStore)
    return backend.files


class TestJsonDirConformance(ConformanceSuite):
    capabilities = Capabilities()  # durable, and shared by processes on one machine

    @pytest_asyncio.fixture
    async def factory(self, tmp_path: Path) -> AsyncIterator[CheckpointerFactory]:
        # Through outlast.open: the entry point and the URL scheme are tested too.
        store = outlast.open(f"jsondir:///{tmp_path / 'runs'}")
        yield store
        await store.close()

    async def reopen(self, factory: CheckpointerFactory) -> CheckpointerFactory:
        return outlast.open(self.url(factory))

    def url(self, factory: CheckpointerFactory) -> str:
        return f"jsondir:///{files_of(factory).root}"  # an absolute root: jsondir:////...

    async def corrupt_record(
        self, factory: CheckpointerFactory, run_id: str, namespace: str
    ) -> None:
        files = files_of(factory)

        def damage() -> None:
            write_atomically(files.folder(namespace, run_id) / RUN_FILE, b"{not json")

        await files.locked(damage, exclusive=True)

    async def corrupt_message(
        self, factory: CheckpointerFactory, run_id: str, namespace: str
    ) -> None:
        files = files_of(factory)

        def damage() -> None:
            run = files.read(namespace, run_id)
            assert run is not None and run.lines > 0, f"run {run_id!r} has no saved message"
            # In place and the same length: the committed byte offsets stay valid,
            # so only this message is damaged (its opening "{" becomes "!").
            with open(files.segment(namespace, run_id, len(run.phases)), "r+b") as segment:
                segment.write(b"!")

        await files.locked(damage, exclusive=True)
