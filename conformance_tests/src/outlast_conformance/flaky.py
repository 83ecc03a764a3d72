"""A store whose begin, saves or claims can be made to fail as if unreachable.

The executor-level tests wrap the store under test in :class:`FlakyStore` to
see what the executor does when the store cannot be reached: everything is
the real store's, except that ``begin`` or a checkpointer's ``save`` raises
StoreUnavailable while the test says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from outlast.adapter import (
    DEFAULT_NAMESPACE,
    JSON,
    Checkpointer,
    CheckpointerFactory,
    CheckpointState,
    Claim,
    RunPage,
    RunRecord,
    RunStart,
    RunStatus,
    StoredRun,
    StoreUnavailable,
)


class FlakyStore:
    """Delegates to ``inner``; ``begin_down``, ``saves_down`` and
    ``claims_down`` (claim_next) make those fail."""

    def __init__(self, inner: CheckpointerFactory) -> None:
        self.inner = inner
        self.begin_down = False
        self.saves_down = False
        self.claims_down = False
        self.failed_saves = 0
        self.failed_claims = 0
        self.save_failed = asyncio.Event()
        self.claim_failed = asyncio.Event()

    async def begin(self, start: RunStart) -> Checkpointer:
        if self.begin_down:
            raise StoreUnavailable("the test made the store unreachable for begin")
        return FlakyCheckpointer(await self.inner.begin(start), self)

    async def submit(self, start: RunStart) -> None:
        await self.inner.submit(start)

    async def claim_next(
        self,
        kinds: Sequence[str],
        *,
        owner: str,
        lease: float,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> Claim | None:
        if self.claims_down:
            self.failed_claims += 1
            self.claim_failed.set()
            raise StoreUnavailable("the test made the store unreachable for claims")
        claim = await self.inner.claim_next(kinds, owner=owner, lease=lease, namespace=namespace)
        if claim is None:
            return None
        return Claim(FlakyCheckpointer(claim.checkpointer, self), claim.resume, claim.record)

    async def cancel(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> RunRecord:
        return await self.inner.cancel(run_id, namespace)

    async def interrupted(
        self, namespace: str = DEFAULT_NAMESPACE, limit: int = 100
    ) -> list[RunRecord]:
        return await self.inner.interrupted(namespace, limit)

    async def claim(
        self, run_id: str, *, owner: str, lease: float, namespace: str = DEFAULT_NAMESPACE
    ) -> Claim | None:
        claim = await self.inner.claim(run_id, owner=owner, lease=lease, namespace=namespace)
        if claim is None:
            return None
        return Claim(FlakyCheckpointer(claim.checkpointer, self), claim.resume, claim.record)

    async def quarantine(
        self, run_id: str, reason: str, namespace: str = DEFAULT_NAMESPACE
    ) -> bool:
        return await self.inner.quarantine(run_id, reason, namespace)

    async def load(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> StoredRun | None:
        return await self.inner.load(run_id, namespace)

    async def list(
        self,
        namespace: str = DEFAULT_NAMESPACE,
        status: RunStatus | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> RunPage:
        return await self.inner.list(namespace, status, limit, cursor)

    async def delete(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> bool:
        return await self.inner.delete(run_id, namespace)

    async def send(
        self, run_id: str, delivery: JSON, namespace: str = DEFAULT_NAMESPACE
    ) -> RunRecord:
        return await self.inner.send(run_id, delivery, namespace)

    async def purge(self, older_than: float, namespace: str = DEFAULT_NAMESPACE) -> int:
        return await self.inner.purge(older_than, namespace)

    async def close(self) -> None:
        """The test's store is closed by its fixture."""


class FlakyCheckpointer:
    """The real checkpointer, except that ``save`` fails while its store says so."""

    def __init__(self, inner: Checkpointer, store: FlakyStore) -> None:
        self.inner = inner
        self.store = store

    @property
    def run_id(self) -> str:
        return self.inner.run_id

    @property
    def namespace(self) -> str:
        return self.inner.namespace

    @property
    def epoch(self) -> int:
        return self.inner.epoch

    async def save(self, state: CheckpointState) -> bool:
        if self.store.saves_down:
            self.store.failed_saves += 1
            self.store.save_failed.set()
            raise StoreUnavailable("the test made the store unreachable for saves")
        return await self.inner.save(state)

    async def complete(self, result: JSON, usage: JSON = None) -> None:
        await self.inner.complete(result, usage)

    async def fail(self, error: str) -> None:
        await self.inner.fail(error)

    async def release(self) -> None:
        await self.inner.release()

    async def renew(self) -> bool:
        return await self.inner.renew()

    async def wait(self, request: JSON, timeout: float | None) -> None:
        await self.inner.wait(request, timeout)
