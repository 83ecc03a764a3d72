"""The store outlast.open returns: the backend behind it, and use after close."""

from __future__ import annotations

import pytest

import outlast
from outlast import StoreError
from outlast.adapter import RunStart
from outlast.stores.memory import MemoryStore

pytestmark = pytest.mark.asyncio


async def test_open_returns_a_store_in_front_of_the_backend() -> None:
    store = outlast.open("memory://front")
    assert isinstance(store, outlast.Store)
    assert isinstance(store.backend, MemoryStore)
    assert "MemoryStore(name='front')" in repr(store)
    assert outlast.Store(store).backend is store.backend  # never two fronts


async def test_every_call_after_close_is_a_store_error_saying_what_to_do() -> None:
    store = outlast.open("memory://")
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreError, match=r"closed.*outlast\.open"):
        await store.begin(RunStart("r", "k"))
    with pytest.raises(StoreError, match="closed"):
        await store.list()
    with pytest.raises(StoreError, match="closed"):
        await store.interrupted()


async def test_quarantine_reasons_are_made_storable() -> None:
    store = outlast.open("memory://")
    cp = await store.begin(RunStart("r", "k", lease=30))
    await cp.release()
    assert await store.quarantine("r", "CorruptCheckpoint: \udc80 bytes")
    stored = await store.load("r")
    assert stored is not None and stored.record.error == "CorruptCheckpoint: \\udc80 bytes"


async def test_a_store_is_an_async_context_manager() -> None:
    async with outlast.open("memory://") as store:
        await store.begin(RunStart("r", "k"))
    with pytest.raises(StoreError):
        await store.load("r")
