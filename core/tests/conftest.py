"""Fixtures for core's tests: every executor rule runs on memory and SQLite."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

import outlast
from outlast.adapter import CheckpointerFactory

Eventually = Callable[[Callable[[], Awaitable[bool]]], Awaitable[None]]


@pytest_asyncio.fixture(params=["memory", "sqlite"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[CheckpointerFactory]:
    """A fresh store of each built-in kind."""
    if request.param == "memory":
        url = f"memory://{uuid.uuid4().hex}"
    else:
        url = f"sqlite:///{tmp_path}/runs.db"
    factory = outlast.open(url)
    yield factory
    await factory.close()


@pytest.fixture
def eventually() -> Eventually:
    """Wait until an async predicate holds, polling, for at most 10 seconds."""

    async def wait(predicate: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
        deadline = time.monotonic() + within
        while not await predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {within}s")
            await asyncio.sleep(0.01)

    return wait
