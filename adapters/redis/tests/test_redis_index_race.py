"""Issue 9 item 7: ``begin`` racing ``interrupted`` never drops a run from the indexes.

Real OS processes against the shared Redis: pollers call ``interrupted()`` in
a loop (idle workers of a fleet) while beginners begin runs and die without
finishing (no release, no close). Once the leases expired, every begun run
must be in ``interrupted()`` (so a worker recovers it) and in ``list()`` (so
retention and ``outlast runs`` see it). Before the namespace's keys shared
one hash tag, the index update was a separate step that a poller could undo
with a stale read, and some begun runs were in neither, for good.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest

import outlast

WORKER = Path(__file__).with_name("index_race_worker.py")
POLLERS = 4
BEGINNERS = 4
RUNS_PER_BEGINNER = 100
LEASE = 0.5
TIMEOUT = 60.0
"""Bounds every wait: processes starting, beginning their runs, leases expiring."""


@asynccontextmanager
async def worker(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """One worker process; killed (by its own id) if it outlives the block."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def lines_of(process: asyncio.subprocess.Process) -> list[str]:
    """Close its stdin, and return everything ``process`` prints until it exits;
    fails if it exits with an error."""
    assert process.stdin is not None
    process.stdin.close()
    out, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert process.returncode == 0, f"worker {process.pid} failed:\n{err.decode()[-3000:]}"
    return out.decode().split()


async def ready(process: asyncio.subprocess.Process) -> None:
    assert process.stdout is not None and process.stderr is not None
    line = await asyncio.wait_for(process.stdout.readline(), TIMEOUT)
    if line.strip() != b"ready":
        error = await process.stderr.read()
        raise AssertionError(f"poller {process.pid} did not start:\n{error.decode()[-3000:]}")


def store_url(redis_url: str, prefix: str) -> str:
    return f"{redis_url}{'&' if '?' in redis_url else '?'}prefix={prefix}"


@pytest.mark.asyncio
async def test_runs_begun_while_others_poll_interrupted_are_never_lost(
    redis_url: str, prefix: str
) -> None:
    url = store_url(redis_url, prefix)
    namespace = "race"
    begun: set[str] = set()
    async with AsyncExitStack() as processes:
        pollers = [
            await processes.enter_async_context(worker("poll", url, namespace))
            for _ in range(POLLERS)
        ]
        await asyncio.gather(*(ready(poller) for poller in pollers))
        beginners = [
            await processes.enter_async_context(
                worker("begin", url, namespace, f"b{i}", str(RUNS_PER_BEGINNER), str(LEASE))
            )
            for i in range(BEGINNERS)
        ]
        for lines in await asyncio.gather(*(lines_of(b) for b in beginners)):
            begun.update(lines)
        # Closing their stdin stops the pollers; each must have polled without an error.
        await asyncio.gather(*(lines_of(poller) for poller in pollers))
    assert len(begun) == BEGINNERS * RUNS_PER_BEGINNER

    store = outlast.open(url)
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            interrupted = {r.run_id for r in await store.interrupted(namespace, limit=1000)}
            listed = {r.run_id for r in (await store.list(namespace, limit=1000)).records}
            lost = begun - interrupted
            unlisted = begun - listed
            if not lost and not unlisted:
                break
            assert time.monotonic() < deadline, (
                f"{len(lost)} of {len(begun)} begun runs whose owner died never appeared in "
                f"interrupted() (nothing would recover them), and {len(unlisted)} are missing "
                f"from list(): e.g. {sorted(lost | unlisted)[:5]}"
            )
            await asyncio.sleep(0.05)  # a lease of LEASE seconds is running out
    finally:
        await store.close()
