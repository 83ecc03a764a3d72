"""outlast-conformance: the pytest suite every outlast store passes.

An adapter's whole conformance run is one small subclass::

    class TestMyStoreConformance(ConformanceSuite):
        capabilities = Capabilities()

        @pytest_asyncio.fixture
        async def factory(self): ...      # yield a fresh CheckpointerFactory

        async def reopen(self, factory): ...            # a new factory, same storage
        def url(self, factory): ...                      # what another OS process opens
        async def corrupt_record(self, factory, run_id, namespace): ...
        async def corrupt_message(self, factory, run_id, namespace): ...

See docs/writing-an-adapter.md.
"""

import pytest

# The suite's modules hold the assertions; have pytest rewrite them for useful
# failure messages even when this package is installed editable (pytest only
# rewrites a non-editable plugin distribution's modules on its own).
pytest.register_assert_rewrite("outlast_conformance.suite", "outlast_conformance.support")

from outlast_conformance.capabilities import FEATURES, Capabilities  # noqa: E402
from outlast_conformance.fixtures import Reopen, StoreFixtures  # noqa: E402
from outlast_conformance.suite import ConformanceSuite  # noqa: E402

__all__ = ["FEATURES", "Capabilities", "ConformanceSuite", "Reopen", "StoreFixtures"]
